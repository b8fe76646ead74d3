"""tfdp.baselines: each classical model's ε is what its accountant reports, inputs respect the
bounds the guarantees assume, k-NN is only ever labelled non-private, and bad settings are refused."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from tfdp import data
from tfdp.experiments import baselines
from tfdp.privacy import accounting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits")


@pytest.fixture(scope="module")
def pixels(digits):
  return baselines.pixel_inputs(digits)


def test_inputs_stay_within_the_bounds_the_guarantees_assume(pixels):
  low, high = pixels.bounds
  assert pixels.train.x.min() >= low and pixels.train.x.max() <= high  # Naive Bayes's bounds.
  assert pixels.train.x.max() > 0.9  # Pixels, not something already squashed.
  for model in ("dp_logistic_regression", "knn"):
    rows = baselines.for_model(pixels, model).train.x
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-9)  # data_norm = 1.
  assert baselines.for_model(pixels, "dp_gaussian_nb") is pixels


@pytest.mark.newest_stack  # diffprivlib follows the newest TensorFlow's NumPy too.
@pytest.mark.parametrize("model", baselines.DIFFPRIVLIB_MODELS)
@pytest.mark.parametrize("epsilon", [0.5, 3.0])
def test_diffprivlib_models_report_the_epsilon_their_accountant_spent(pixels, model, epsilon):
  result = baselines.MODELS[model](baselines.for_model(pixels, model), epsilon, 0)
  assert result["epsilon"] == pytest.approx(epsilon) and result["delta"] == 0.0
  assert "pure ε-DP" in result["guarantee"]
  assert 0.0 <= result["test_accuracy"] <= 1.0


def test_the_noise_matters_for_the_diffprivlib_models(pixels):
  inputs = baselines.for_model(pixels, "dp_gaussian_nb")
  exact = baselines.gaussian_nb(inputs, float("inf"), 0)
  noisy = baselines.gaussian_nb(inputs, 0.05, 0)
  assert exact["guarantee"] == "none" and exact["epsilon"] is None
  assert noisy["test_accuracy"] < exact["test_accuracy"] - 0.2


def test_knn_runs_only_without_privacy_and_says_it_has_no_guarantee(pixels):
  assert baselines.knn(pixels, 1.0, 0) is None
  result = baselines.knn(baselines.for_model(pixels, "knn"), float("inf"), 0)
  assert result["epsilon"] is None and "NO DP GUARANTEE" in result["guarantee"]
  assert result["test_accuracy"] > 0.9


def test_the_dp_svm_reports_our_accountants_epsilon(tmp_path):
  settings = baselines.SvmSettings("digits", None, 600, delta=1e-5, batch_size=128, epochs=2,
                                   output_dir=str(tmp_path))
  result = baselines.linear_svm(settings, "pixels", 2.0, 0)
  assert result["epsilon"] <= 2.0 and result["delta"] == 1e-5
  assert "Poisson" in result["guarantee"]
  import json  # pylint: disable=import-outside-toplevel
  with open(tmp_path / "svm_pixels_eps2_seed0" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["loss"] == "hinge" and metrics["model"] == "linear"
  assert result["epsilon"] == pytest.approx(accounting.epsilon(
      metrics["noise_multiplier"], metrics["sampling_probability"], metrics["steps"], 1e-5))


@pytest.mark.parametrize("epsilons", [[0.0], [-1.0, 1.0], []])
def test_bad_epsilons_are_refused(epsilons):
  with pytest.raises(ValueError, match="ε must be > 0"):
    baselines.check_epsilons(epsilons)


def test_the_table_csv_and_plot_agree(digits, tmp_path):
  rows = baselines.run_all(digits, ["dp_gaussian_nb", "knn"], ["pixels"], [1.0, float("inf")], 2,
                           svm=None, log=lambda line: None)
  assert [(r["model"], r["epsilon_target"]) for r in rows] == [
      ("dp_gaussian_nb", 1.0)] * 2 + [("dp_gaussian_nb", float("inf"))] * 2 + [
      ("knn", float("inf"))] * 2
  baselines.write_outputs(str(tmp_path), rows, [1.0, float("inf")])
  with open(tmp_path / "results.csv") as f:
    assert len(list(csv.DictReader(f))) == 6
  summary = (tmp_path / "summary.md").read_text()
  median = np.median([r["test_accuracy"] for r in rows[:2]])
  assert f"| dp_gaussian_nb | pixels | {median:.3f} |" in summary
  assert "| knn | pixels | - |" in summary and "NO DP GUARANTEE" in summary
  assert (tmp_path / "accuracy_vs_epsilon.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("flag, message", [("--epsilons=0,1", "ε must be > 0"),
                                           ("--models=svm_rbf", "unknown model")])
def test_the_command_refuses_bad_settings_in_one_line(flag, message, tmp_path):
  result = subprocess.run([sys.executable, "-m", "tfdp.baselines", flag, f"--out={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "tfdp.baselines: error:" in result.stderr and message in result.stderr
