"""The sweep's PNG plots: accuracy vs ε, accuracy vs epoch, accuracy vs each swept flag.

Each point is a cell's median over seeds with a bar from its min to its max, as in the studies.
"""

import itertools
import os
import statistics
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # Files only: no display on the machines that run sweeps.
from matplotlib import pyplot  # pylint: disable=wrong-import-position



def _save(figure, path: str) -> str:
  tmp = f"{path}.tmp.png"
  figure.savefig(tmp, dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  os.replace(tmp, path)
  return path


def _cells(runs) -> Dict[tuple, list]:
  return {cell: list(members) for cell, members in itertools.groupby(runs, key=lambda r: r.cell)}


def _bar(axes, x, values, label=None):
  median = statistics.median(values)
  axes.errorbar([x], [median], yerr=[[median - min(values)], [max(values) - median]], fmt="o",
                capsize=3, label=label)


def accuracy_vs_epsilon(sweep_dir: str, runs, metrics) -> str:
  figure, axes = pyplot.subplots(figsize=(6, 4))
  for cell, members in _cells(runs).items():
    epsilons = [metrics[r]["epsilon"] for r in members if metrics[r].get("epsilon") is not None]
    if epsilons:
      _bar(axes, statistics.median(epsilons), [metrics[r]["test_accuracy"] for r in members],
           ",".join(f"{n}={v}" for n, v in cell) or "base")
  axes.set_xlabel("ε spent (RDP; PLD for Laplace noise)")
  axes.set_ylabel("test accuracy")
  axes.legend(fontsize=6)
  return _save(figure, os.path.join(sweep_dir, "accuracy_vs_epsilon_spent.png"))


# Training-batch accuracy as runs record it: non-private runs under its own name, private runs only
# with --monitor_private_metrics and marked not private (it is computed without noise).
_TRAIN_CURVES = (("train_accuracy", "train"),
                 ("not_private/train_accuracy", "train (NOT PRIVATE)"))


def accuracy_vs_epoch(sweep_dir: str, runs, metrics) -> str:
  """Test accuracy per evaluated epoch (median over seeds; --eval_every may skip epochs); train
  accuracy where the runs released it."""
  figure, axes = pyplot.subplots(figsize=(6, 4))
  for cell, members in _cells(runs).items():
    histories = [metrics[r]["history"] for r in members]
    epochs = min(len(h) for h in histories)
    shown = [e for e in range(epochs) if all("test_accuracy" in h[e] for h in histories)]
    x = [e + 1 for e in shown]
    name = ",".join(f"{n}={v}" for n, v in cell) or "base"
    test = [statistics.median([h[e]["test_accuracy"] for h in histories]) for e in shown]
    line, = axes.plot(x, test, label=f"{name} test")
    for key, label in _TRAIN_CURVES:
      if all(key in h[e] for h in histories for e in range(epochs)):
        trained = [statistics.median([h[e][key] for h in histories]) for e in range(epochs)]
        axes.plot(range(1, epochs + 1), trained, linestyle="--", color=line.get_color(),
                  label=f"{name} {label}")
  axes.set_xlabel("epoch")
  axes.set_ylabel("accuracy (median over seeds)")
  axes.legend(fontsize=6)
  return _save(figure, os.path.join(sweep_dir, "accuracy_vs_epoch.png"))


def accuracy_vs_flag(sweep_dir: str, runs, metrics, flag: str) -> str:
  """x: the flag's values (in grid order); one series per combination of the other swept flags."""
  figure, axes = pyplot.subplots(figsize=(6, 4))
  series: Dict[tuple, Dict[str, list]] = {}
  for run in runs:
    others = tuple((n, v) for n, v in run.cell if n != flag)
    value = dict(run.cell)[flag]
    series.setdefault(others, {}).setdefault(value, []).append(metrics[run]["test_accuracy"])
  for others, by_value in series.items():
    values = list(by_value)
    medians = [statistics.median(by_value[v]) for v in values]
    axes.plot(range(len(values)), medians, marker="o",
              label=",".join(f"{n}={v}" for n, v in others) or flag)
    for i, v in enumerate(values):
      axes.vlines(i, min(by_value[v]), max(by_value[v]))
    axes.set_xticks(range(len(values)), values)
  axes.set_xlabel(flag)
  axes.set_ylabel("test accuracy (median, min-max)")
  axes.legend(fontsize=6)
  return _save(figure, os.path.join(sweep_dir, f"accuracy_vs_flag_{flag}.png"))


def write_all(sweep_dir: str, runs, metrics, swept: List[str]) -> List[str]:
  paths = [accuracy_vs_epsilon(sweep_dir, runs, metrics),
           accuracy_vs_epoch(sweep_dir, runs, metrics)]
  paths += [accuracy_vs_flag(sweep_dir, runs, metrics, flag) for flag in swept]
  return paths
