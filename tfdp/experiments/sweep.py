"""Run a grid of tfdp.train runs over seeds, then tabulate and plot them.

  python -m tfdp.sweep --flagfile=flags/quickstart.flags \
      --grid='epsilon=1,2,3,5,8;batch_size=256,512,1024' --seeds=3 --sweep_dir=sweeps/digits

The flagfile sets tfdp.train's flags; --grid overrides some of them (';' between flags, ',' between
values). Every (cell, seed) runs sequentially as its own `python -m tfdp.train` process in
sweep_dir/runs/<cell>/seed<k>/ with the flagfile it wrote there (run.flags). A run whose metrics.json
exists is not rerun, and an interrupted run resumes from its checkpoint, so a sweep is resumable.

Outputs in sweep_dir: results.csv (one row per run: every tfdp.train flag, then every scalar metric),
summary.csv and summary.md (min / max / median / MAD over seeds per cell), and PNG plots: test
accuracy vs ε, accuracy vs epoch, and accuracy vs each swept flag. Train accuracy appears only for
non-private runs, or labelled not private for runs with --monitor_private_metrics.

Every run of a sweep trains on the same private data, so choosing among them costs privacy: the ε of
a run picked by looking at these tables is higher than its own ε. summary.md and summary.csv say so
(SELECTION_NOTE); "Choosing among runs" in docs/guarantee.md gives the accounted alternative
(tfdp.privacy.tuning).
"""

import csv
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags

from tfdp import atomic
from tfdp import train  # Defines tfdp.train's flags, which the flagfile sets.

_GRID = flags.DEFINE_string("grid", "", "flag=v1,v2;flag2=w1,w2: the values to sweep.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per cell (0 .. seeds-1).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "sweeps/default", "Where runs and tables go.")

SUMMARY_METRICS = ("test_accuracy", "test_balanced_accuracy", "test_auc", "epsilon", "epsilon_pld",
                   "epsilon_if_dp_sgd", "examples_per_second")
SELECTION_NOTE = ("selection among {runs} runs on the same private data: the ε of a run chosen by "
                  "looking at these results is higher than its own ε; see docs/guarantee.md, "
                  "\"Choosing among runs\"")
_NOT_TABULATED = ("history", "ledger_history")  # Per-epoch lists: in the plots, not the CSV.


@dataclasses.dataclass(frozen=True)
class Run:
  cell: Tuple[Tuple[str, str], ...]  # (flag, value) of every swept flag.
  seed: int

  @property
  def cell_name(self) -> str:
    return ",".join(f"{name}={value}" for name, value in self.cell) or "base"

  def directory(self, sweep_dir: str) -> str:
    safe = self.cell_name.replace("/", "_")
    return os.path.join(sweep_dir, "runs", safe, f"seed{self.seed}")


def parse_grid(text: str, known_flags: Sequence[str]) -> List[Tuple[str, List[str]]]:
  """'a=1,2;b=x' -> [('a', ['1', '2']), ('b', ['x'])]; unknown flags raise ValueError."""
  grid = []
  for part in filter(None, (p.strip() for p in text.split(";"))):
    name, sep, values = part.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not values.strip():
      raise ValueError(f"grid entries are flag=v1,v2; got {part!r}")
    if name not in known_flags:
      raise ValueError(f"--grid names {name!r}, which is not a tfdp.train flag")
    if name in ("seed", "output_dir"):
      raise ValueError(f"--grid cannot sweep {name}: the sweep sets it (use --seeds)")
    grid.append((name, [v.strip() for v in values.split(",") if v.strip()]))
  return grid


def make_runs(grid: Sequence[Tuple[str, List[str]]], seeds: int) -> List[Run]:
  names = [name for name, _ in grid]
  cells = itertools.product(*(values for _, values in grid))
  return [Run(tuple(zip(names, cell)), seed) for cell in cells for seed in range(seeds)]


def run_flags(base: Dict[str, str], run: Run, directory: str) -> Dict[str, str]:
  """Every tfdp.train flag of `run`: the base values, the cell's, the seed and the directory."""
  values = {**base, **dict(run.cell), "seed": str(run.seed), "output_dir": directory,
            "export": "false"}
  return values


def _flagfile_text(values: Dict[str, str]) -> str:
  return "".join(f"--{name}={value}\n" for name, value in sorted(values.items()))


def execute(run: Run, base: Dict[str, str], sweep_dir: str) -> Dict[str, str]:
  """Runs one tfdp.train process (unless done); returns its flags. Raises on failure."""
  directory = run.directory(sweep_dir)
  values = run_flags(base, run, directory)
  if os.path.exists(os.path.join(directory, "metrics.json")):
    return values
  os.makedirs(directory, exist_ok=True)
  flagfile = os.path.join(directory, "run.flags")
  atomic.write_text(flagfile, _flagfile_text(values))
  with open(os.path.join(directory, "train.log"), "w") as log:
    code = subprocess.call([sys.executable, "-m", "tfdp.train", f"--flagfile={flagfile}"],
                           stdout=log, stderr=subprocess.STDOUT)
  if code != 0:
    raise RuntimeError(f"run {run.cell_name} seed {run.seed} failed (exit {code}); see "
                       f"{os.path.join(directory, 'train.log')}")
  return values


def _metrics(run: Run, sweep_dir: str) -> dict:
  with open(os.path.join(run.directory(sweep_dir), "metrics.json")) as f:
    return json.load(f)


def result_row(values: Dict[str, str], metrics: dict) -> dict:
  row = {f"flag.{name}": value for name, value in sorted(values.items())}
  for key, value in sorted(metrics.items()):
    if key in _NOT_TABULATED:
      continue
    row[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
  return row


def write_csv(path: str, rows: List[dict]) -> None:
  columns = list(dict.fromkeys(key for row in rows for key in row))
  tmp = f"{path}.tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)



def spread(values: List[float]) -> Dict[str, float]:
  """min, max, median and median absolute deviation of `values`."""
  median = statistics.median(values)
  return {"min": min(values), "max": max(values), "median": median,
          "mad": statistics.median([abs(v - median) for v in values]), "runs": len(values)}


def summarize(runs: List[Run], metrics: Dict[Run, dict]) -> List[dict]:
  """One row per cell: the swept flags, then min/max/median/MAD of each summary metric."""
  rows = []
  for cell, members in itertools.groupby(runs, key=lambda r: r.cell):
    members = list(members)
    row = dict(cell)
    for name in ("accountant", "sampling", "dp_guarantee"):  # Which ε this is: same for all seeds.
      row[name] = metrics[members[0]].get(name)
    for name in SUMMARY_METRICS:
      values = [metrics[r][name] for r in members if metrics[r].get(name) is not None]
      if values:
        row.update({f"{name}.{stat}": value for stat, value in spread(values).items()})
    row["selection"] = SELECTION_NOTE.format(runs=len(runs))
    rows.append(row)
  return rows


def _epsilon_text(row: dict) -> str:
  """The cell's ε column: the median ε, labelled when no proven guarantee stands behind it."""
  if "epsilon_if_dp_sgd.median" in row:
    return f"no proven DP guarantee (DP-SGD's would be {row['epsilon_if_dp_sgd.median']:.3f})"
  if "epsilon.median" not in row:
    return "∞"
  label = {"reproducible": " (no guarantee: reproducible noise)",
           "shuffle": " (approximation: shuffled batches)"}.get(row.get("dp_guarantee"), "")
  return f"{row['epsilon.median']:.3f}{label}"


def summary_markdown(rows: List[dict], swept: List[str]) -> str:
  header = swept + ["test accuracy median [min, max] (MAD)", "ε median", "accountant, sampling",
                    "runs"]
  runs = sum(row["test_accuracy.runs"] for row in rows)
  lines = [f"**Note: {SELECTION_NOTE.format(runs=runs)}.**", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    accuracy = (f"{row['test_accuracy.median']:.4f} [{row['test_accuracy.min']:.4f}, "
                f"{row['test_accuracy.max']:.4f}] ({row['test_accuracy.mad']:.4f})")
    epsilon = _epsilon_text(row)
    provenance = f"{row['accountant']}, {row['sampling']}" if row["accountant"] else "-"
    lines.append("| " + " | ".join([str(row[name]) for name in swept]
                                    + [accuracy, epsilon, provenance,
                                       str(row["test_accuracy.runs"])]) + " |")
  return "\n".join(lines) + "\n"


def _progress(done: int, total: int, started: float, run: Run, metrics: dict) -> str:
  elapsed = time.monotonic() - started
  left = elapsed / done * (total - done) if done else float("nan")
  return (f"[{done}/{total}] {run.cell_name} seed {run.seed}: test accuracy "
          f"{metrics['test_accuracy']:.4f}, {_run_epsilon_text(metrics)}; {elapsed / 60:.1f} min "
          f"elapsed, about {left / 60:.1f} min left")


def _run_epsilon_text(metrics: dict) -> str:
  """A run's ε to 3 decimals, labelled when no proven guarantee stands behind it."""
  if metrics.get("epsilon") is not None:
    return f"ε {metrics['epsilon']:.3f}"
  if metrics.get("epsilon_if_dp_sgd") is not None:
    return f"no proven ε (DP-SGD's would be {metrics['epsilon_if_dp_sgd']:.3f})"
  return "ε ∞ (non-private)"


def run_sweep(base: Dict[str, str], grid, seeds: int, sweep_dir: str) -> Dict[Run, dict]:
  runs = make_runs(grid, seeds)
  os.makedirs(sweep_dir, exist_ok=True)
  rows, metrics, started, executed = [], {}, time.monotonic(), 0
  for index, run in enumerate(runs):
    was_done = os.path.exists(os.path.join(run.directory(sweep_dir), "metrics.json"))
    values = execute(run, base, sweep_dir)
    executed += not was_done
    metrics[run] = _metrics(run, sweep_dir)
    rows.append(result_row(values, metrics[run]))
    print(_progress(index + 1, len(runs), started, run, metrics[run])
          + (" (done before, skipped)" if was_done else ""), flush=True)
  swept = [name for name, _ in grid]
  write_csv(os.path.join(sweep_dir, "results.csv"), rows)
  summary = summarize(runs, metrics)
  write_csv(os.path.join(sweep_dir, "summary.csv"), summary)
  atomic.write_text(os.path.join(sweep_dir, "summary.md"), summary_markdown(summary, swept))
  from tfdp.experiments import sweep_plots  # pylint: disable=import-outside-toplevel  (matplotlib is slow)
  sweep_plots.write_all(sweep_dir, runs, metrics, swept)
  print(f"{executed} runs executed, {len(runs) - executed} reused; tables and plots in {sweep_dir}")
  return metrics


def base_flags() -> Dict[str, str]:
  """tfdp.train's flags as the flagfile and command line set them (unset ones left out)."""
  values = {}
  for flag in flags.FLAGS.get_flags_for_module(train.__name__):
    if flag.present or flag.value != flag.default:
      values[flag.name] = flag.serialize().partition("=")[2] or ("true" if flag.value else "false")
  return values


def main(argv):
  del argv
  known = [f.name for f in flags.FLAGS.get_flags_for_module(train.__name__)]
  try:
    grid = parse_grid(_GRID.value, known)
    if _SEEDS.value < 1:
      raise ValueError(f"--seeds must be >= 1, got {_SEEDS.value}")
    run_sweep(base_flags(), grid, _SEEDS.value, _SWEEP_DIR.value)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"tfdp.sweep: error: {error}")


def run() -> None:
  """The command `python -m tfdp.sweep`."""
  app.run(main)


if __name__ == "__main__":
  run()
