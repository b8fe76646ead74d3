"""What a run prints at each --progress level, how often it evaluates, and its curves.png."""

import json
import os

import pytest

from tfdp import config as config_lib
from tfdp.training import curves
from tfdp.training import loop as training


def _run(tmp_path, epochs=2, **run):
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=3.0),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(**{"batch_size": 256, "epochs": epochs,
                                  "output_dir": str(tmp_path), "export": False, **run}))
  return training.train_and_evaluate(config)


def test_quiet_prints_only_the_result_and_where_it_is(tmp_path, capsys):
  _run(tmp_path, progress="quiet")
  lines = capsys.readouterr().out.splitlines()
  starts = ["Test accuracy ", "Privacy: ε = ", "Run directory: ", "Metrics: ", "Curves: ",
            "Export: none (--noexport)"]
  assert len(lines) == len(starts) and all(map(str.startswith, lines, starts)), lines


def test_verbose_keeps_the_full_statement_every_epoch(tmp_path, capsys):
  _run(tmp_path, progress="verbose")
  out = capsys.readouterr().out
  assert "CPU: " in out and "Epoch 2/2\n" in out
  epochs = [line for line in out.splitlines() if line.startswith("  epoch ")]
  assert len(epochs) == 2 and all("(RDP accountant; PLD: " in line for line in epochs)


def test_eval_every_and_eval_examples_are_recorded_per_evaluation(tmp_path, capsys):
  metrics = _run(tmp_path, epochs=3, eval_every=2, eval_examples=50, monitor_private_metrics=True)
  history = metrics["history"]
  assert [record.get("test_examples") for record in history] == [None, 50, 50]  # The last: always.
  assert "test_accuracy" not in history[0] and "epsilon" in history[0]
  assert (metrics["test_examples"], metrics["test_split_examples"]) == (50, 360)
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
  assert lines[0].startswith("Epoch 1/3: not evaluated (--eval_every), ε = ")
  assert lines[1].startswith("Epoch 2/3: test accuracy ") and " on 50 test examples" in lines[1]
  # The training-batch figure the run asked for is labelled as what it is, on every line.
  assert all("NOT PRIVATE train accuracy (no noise)" in line for line in lines), lines
  assert all("(wall clock: not private)" in line for line in lines[:-1]), lines


def test_eval_examples_beyond_the_test_split_evaluate_all_of_it(tmp_path):
  assert _run(tmp_path, epochs=1, eval_examples=10_000, progress="quiet")["test_examples"] == 360


@pytest.mark.parametrize("field, value", [("eval_every", 0), ("eval_examples", 0),
                                          ("progress", "loud")])
def test_bad_evaluation_and_progress_settings_are_refused_by_name(field, value):
  with pytest.raises(ValueError, match=field):
    config_lib.RunConfig(**{field: value})


def test_curves_are_written_whole_from_the_history(tmp_path):
  history = [{"epoch": 1, "steps": 6, "epsilon": 1.0},
             {"epoch": 2, "steps": 12, "epsilon": 1.5, "test_accuracy": 0.8, "test_examples": 360}]
  path = curves.write(str(tmp_path), history, "epsilon")
  assert path == os.path.join(tmp_path, "curves.png")
  assert open(path, "rb").read(4) == b"\x89PNG" and os.listdir(tmp_path) == ["curves.png"]
  curves.write(str(tmp_path), [{"epoch": 1, "steps": 6, "test_accuracy": 0.9}], None)  # No ε.


def test_a_run_writes_its_curves_beside_its_metrics(tmp_path):
  _run(tmp_path, epochs=1, progress="quiet")
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert json.loads((tmp_path / "metrics.json").read_text())["eval_every"] == 1
