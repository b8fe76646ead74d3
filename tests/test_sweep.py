"""The sweep: a tiny grid on digits runs, a rerun skips finished cells, and the outputs agree."""

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

from tfdp.experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(sweep_dir, *extra):
  command = [sys.executable, "-m", "tfdp.sweep", "--flagfile=flags/quickstart.flags", "--epochs=1",
             "--grid=epsilon=2,8", "--seeds=1", f"--sweep_dir={sweep_dir}", *extra]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return result.returncode, result.stdout + result.stderr


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_tiny_grid_runs_resumes_and_its_tables_and_plots_agree(tmp_path):
  code, output = _sweep(tmp_path)
  assert code == 0, output
  # One seed: each run is a process of its own, and seeds and spreads have unit tests below.
  assert "[2/2]" in output and "min left" in output and "2 runs executed, 0 reused" in output
  rows = _read_csv(tmp_path / "results.csv")
  assert len(rows) == 2
  assert {(r["flag.epsilon"], r["flag.seed"]) for r in rows} == {("2", "0"), ("8", "0")}
  assert all(r["flag.model"] == "linear" and r["flag.epochs"] == "1" for r in rows)
  for row in rows:  # Each row is its run's metrics.json, and ε respects the cell's target.
    assert float(row["epsilon"]) <= float(row["flag.epsilon"])
    with open(tmp_path / "runs" / f"epsilon={row['flag.epsilon']}" / f"seed{row['flag.seed']}"
              / "metrics.json") as f:
      assert float(row["test_accuracy"]) == pytest.approx(json.load(f)["test_accuracy"])

  summary = _read_csv(tmp_path / "summary.csv")
  assert [s["epsilon"] for s in summary] == ["2", "8"]
  for cell in summary:
    accuracies = [float(r["test_accuracy"]) for r in rows if r["flag.epsilon"] == cell["epsilon"]]
    assert float(cell["test_accuracy.median"]) == pytest.approx(statistics.median(accuracies))
    assert float(cell["test_accuracy.min"]) == pytest.approx(min(accuracies))
    assert float(cell["test_accuracy.max"]) == pytest.approx(max(accuracies))
  assert "| epsilon |" in (tmp_path / "summary.md").read_text()
  assert all(cell["selection"].startswith("selection among 2 runs") for cell in summary)
  assert "selection among 2 runs on the same private data" in (tmp_path / "summary.md").read_text()
  for plot in ("accuracy_vs_epsilon_spent.png", "accuracy_vs_epoch.png",
               "accuracy_vs_flag_epsilon.png"):
    assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"

  code, output = _sweep(tmp_path)
  assert code == 0, output
  assert "0 runs executed, 2 reused" in output and output.count("skipped") == 2


def test_bad_grids_are_refused_naming_the_problem(tmp_path):
  known = ["epsilon", "learning_rate", "seed"]
  for grid, message in [("learning_rate", "flag=v1,v2"), ("warp=1,2", "warp"),
                        ("seed=1,2", "--seeds")]:
    with pytest.raises(ValueError, match=message):
      sweep.parse_grid(grid, known)
  code, output = _sweep(tmp_path, "--grid=warp=1,2")  # The command line says it in one line.
  assert code != 0 and "tfdp.sweep: error: --grid names 'warp'" in output, output
  assert not (tmp_path / "runs").exists()


def test_spread_and_runs_of_a_grid():
  assert sweep.spread([1.0, 2.0, 4.0]) == {"min": 1.0, "max": 4.0, "median": 2.0, "mad": 1.0,
                                          "runs": 3}
  runs = sweep.make_runs([("a", ["1", "2"]), ("b", ["x"])], seeds=2)
  assert [(r.cell_name, r.seed) for r in runs] == [("a=1,b=x", 0), ("a=1,b=x", 1),
                                                   ("a=2,b=x", 0), ("a=2,b=x", 1)]


def _fake_sweep(cells):
  """Runs and metrics of a sweep whose cells are {cell value: metrics of each seed}."""
  runs, metrics = [], {}
  for value, seeds in cells.items():
    for seed, values in enumerate(seeds):
      run = sweep.Run((("optimizer", value),), seed)
      runs.append(run)
      metrics[run] = {"test_accuracy": 0.5, "accountant": "rdp", "sampling": "poisson",
                      "history": [{"epoch": 1, "test_accuracy": 0.5}], **values}
  return runs, metrics


def test_summaries_say_that_choosing_among_runs_costs_privacy_and_label_unproven_cells(tmp_path):
  runs, metrics = _fake_sweep({
      "dp_sgd": [{"epsilon": 2.0, "dp_guarantee": "proven"}] * 2,
      "dice_sgd": [{"epsilon": None, "epsilon_if_dp_sgd": 2.5, "dp_guarantee": "unproven"}] * 2,
      "shuffled": [{"epsilon": 2.0, "dp_guarantee": "shuffle"}] * 2})
  rows = sweep.summarize(runs, metrics)
  note = sweep.SELECTION_NOTE.format(runs=6)
  assert [row["selection"] for row in rows] == [note] * 3 and "higher than its own" in note
  text = sweep.summary_markdown(rows, ["optimizer"])
  assert text.startswith(f"**Note: {note}.**")
  lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
  assert "| 2.000 |" in lines["| dp_sgd"]
  assert "no proven DP guarantee (DP-SGD's would be 2.500)" in lines["| dice_sgd"]
  assert "2.000 (approximation: shuffled batches)" in lines["| shuffled"]
  sweep.write_csv(str(tmp_path / "summary.csv"), rows)
  assert [r["selection"] for r in _read_csv(tmp_path / "summary.csv")] == [note] * 3


def test_epoch_plot_shows_train_accuracy_only_where_runs_released_it(tmp_path, monkeypatch):
  from tfdp.experiments import sweep_plots
  from matplotlib import pyplot
  runs, metrics = _fake_sweep({
      "dp_sgd": [{"history": [{"epoch": 1, "test_accuracy": 0.5}]}],
      "monitored": [{"history": [{"epoch": 1, "test_accuracy": 0.5,
                                  "not_private/train_accuracy": 0.6}]}],
      "sgd": [{"history": [{"epoch": 1, "test_accuracy": 0.5, "train_accuracy": 0.7}]}]})
  labels = []
  original = pyplot.Axes.legend

  def record_legend(axes, *args, **kwargs):
    labels.extend(axes.get_legend_handles_labels()[1])
    return original(axes, *args, **kwargs)

  monkeypatch.setattr(pyplot.Axes, "legend", record_legend)
  sweep_plots.accuracy_vs_epoch(str(tmp_path), runs, metrics)
  assert labels == ["optimizer=dp_sgd test", "optimizer=monitored test",
                    "optimizer=monitored train (NOT PRIVATE)", "optimizer=sgd test",
                    "optimizer=sgd train"]


def test_progress_lines_show_epsilon_to_three_decimals():
  run = sweep.Run((("epsilon", "1"),), 0)
  line = sweep._progress(1, 2, 0.0, run, {"test_accuracy": 0.9, "epsilon": 0.9940724981399401})
  assert "ε 0.994;" in line and "0.99407" not in line
  assert "ε ∞ (non-private)" in sweep._progress(1, 2, 0.0, run, {"test_accuracy": 0.9,
                                                                  "epsilon": None})
