"""The scripts under examples/ run and do what their docstrings say."""

import pathlib
import re
import runpy

import pytest

import tfdp
from tfdp import privacy

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_tf_privacy_tutorial_trains_beyond_chance_with_grouped_clipping():
  example = runpy.run_path(str(EXAMPLES / "tf_privacy_tutorial.py"), run_name="example")
  result = example["main"](epochs=4)  # 56 steps; 4 runs gave 0.46 to 0.53, 10 epochs 0.71.
  assert result["test_accuracy"] > 0.25  # Chance is 0.1.
  assert result["epsilon"] == pytest.approx(privacy.epsilon(
      num_examples=1400, batch_size=100, epochs=4, noise_multiplier=1.5, delta=1e-5))


def test_keras_fit_example_trains_privately_and_exports_its_guarantee(tmp_path):
  example = runpy.run_path(str(EXAMPLES / "keras_fit.py"), run_name="example")
  result = example["main"](epochs=3, export_dir=str(tmp_path / "served"))  # 42 steps.
  assert result["test_accuracy"] > 0.5  # Chance is 0.1; 5 epochs gave 0.925.
  assert len(result["history"]["epsilon"]) == 3 and result["epsilon"] <= 3.0
  assert result["epsilon"] > 2.5  # Calibrated to spend the budget over the 3 planned epochs.
  card = tfdp.export.read_model_card(result["saved_model"])
  assert card["dp_guarantee"] == "proven" and card["epsilon"] == pytest.approx(result["epsilon"])


def test_keras_audit_example_bounds_epsilon_within_the_proof():
  example = runpy.run_path(str(EXAMPLES / "keras_audit.py"), run_name="example")
  result = example["main"](epochs=2)
  assert result["train_size"] == 1400 + result["included"]  # Canaries count in N.
  assert result["epsilon"] <= 3.0
  assert 0.0 <= result["audit_epsilon_lower_bound"] <= result["epsilon"]
  assert not result["audit"]["above_proven"] and result["audit"]["canaries"] == 100


def test_keras_mnist_convnet_example_trains_privately_as_keras_io_writes_it():
  example = runpy.run_path(str(EXAMPLES / "keras_mnist_convnet.py"), run_name="example")
  result = example["main"](epochs=2)  # Offline: the digits at 28x28, 1,437 of them.
  assert result["test_accuracy"] > 0.3  # Chance is 0.1.
  assert 2.5 < result["epsilon"] <= 3.0  # Calibrated for the 2 planned epochs.
  assert result["model"].privacy_ledger.steps == 2 * 12  # ceil(1437 / 128) per epoch.


def test_the_keras_docs_show_the_examples_code_as_it_is():
  docs = (EXAMPLES.parent / "docs" / "keras.md").read_text()
  block = re.search(r"<!-- from examples/keras_mnist_convnet.py -->\n```python\n(.*?)```", docs,
                    re.S).group(1)
  source = {line.strip() for line in (EXAMPLES / "keras_mnist_convnet.py").read_text().splitlines()}
  lines = block.strip().splitlines()
  assert lines[0] == "model = keras.Sequential([" and "return keras.Sequential([" in source
  missing = [line for line in lines[1:] if line.strip() not in source]  # The rest verbatim.
  assert not missing
  assert sum("tfdp" in line for line in lines) == 2  # make_private and poisson_dataset.
