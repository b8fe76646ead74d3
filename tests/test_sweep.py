"""The sweep: a tiny grid on digits runs, a rerun skips finished cells, and the outputs agree."""

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

from tfdp import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(sweep_dir, *extra):
  command = [sys.executable, "-m", "tfdp.sweep", "--flagfile=flags/quickstart.flags", "--epochs=1",
             "--grid=epsilon=2,8", "--seeds=2", f"--sweep_dir={sweep_dir}", *extra]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return result.returncode, result.stdout + result.stderr


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_tiny_grid_runs_resumes_and_its_tables_and_plots_agree(tmp_path):
  code, output = _sweep(tmp_path)
  assert code == 0, output
  assert "[4/4]" in output and "min left" in output and "4 runs executed, 0 reused" in output
  rows = _read_csv(tmp_path / "results.csv")
  assert len(rows) == 4
  assert {(r["flag.epsilon"], r["flag.seed"]) for r in rows} == {
      ("2", "0"), ("2", "1"), ("8", "0"), ("8", "1")}
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
  for plot in ("accuracy_vs_epsilon_spent.png", "accuracy_vs_epoch.png",
               "accuracy_vs_flag_epsilon.png"):
    assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"

  code, output = _sweep(tmp_path)
  assert code == 0, output
  assert "0 runs executed, 4 reused" in output and output.count("skipped") == 4


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
