"""curves.png: a run's test accuracy and ε against its steps, drawn once at the end.

What it draws, and how private each part is: the accuracy on the held-out test split (not the
private training set: released as it is, as the metrics are) at the epochs that were evaluated, and
ε, from the public plan and the ledger. No training-batch figure is drawn.
"""

import io
import os
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")  # Files only: the machines that train often have no display.
from matplotlib import pyplot  # pylint: disable=wrong-import-position

from tfdp import atomic  # pylint: disable=wrong-import-position

FILE_NAME = "curves.png"


def write(output_dir: str, history: List[dict], epsilon_key: Optional[str]) -> str:
  """Draws the history's test accuracy and ε against steps into output_dir/curves.png.

  Args:
    output_dir: The run directory.
    history: The run's epoch records (tfdp.training.reporting.epoch_record): `steps`, and
      `test_accuracy` with `test_examples` where the epoch was evaluated.
    epsilon_key: The records' ε key ('epsilon', or 'epsilon_if_dp_sgd' for a mechanism without
      a proof), or None for a non-private run (no ε axis).

  Returns:
    The path written (atomically: whole or not at all).
  """
  figure, accuracy_axes = pyplot.subplots(figsize=(6, 4))
  evaluated = [record for record in history if "test_accuracy" in record]
  accuracy_axes.plot([r["steps"] for r in evaluated], [r["test_accuracy"] for r in evaluated],
                     marker="o", color="tab:blue")
  accuracy_axes.set_xlabel("training steps")
  accuracy_axes.set_ylabel(_accuracy_label(evaluated), color="tab:blue")
  if epsilon_key is not None:
    epsilon_axes = accuracy_axes.twinx()
    spent = [r for r in history if r.get(epsilon_key) is not None]
    epsilon_axes.plot([r["steps"] for r in spent], [r[epsilon_key] for r in spent],
                      color="tab:red", linestyle="--")
    epsilon_axes.set_ylabel(_EPSILON_LABELS[epsilon_key], color="tab:red")
  accuracy_axes.set_title(f"{os.path.basename(os.path.normpath(output_dir))}: accuracy on the "
                          "test split (not the training data)", fontsize=9)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  path = os.path.join(output_dir, FILE_NAME)
  atomic.write_bytes(path, buffer.getvalue())
  return path


_EPSILON_LABELS = {"epsilon": "ε spent (dashed)",
                   "epsilon_if_dp_sgd": "DP-SGD's ε at this σ: no proven guarantee (dashed)"}


def _accuracy_label(evaluated: List[dict]) -> str:
  counts = sorted({record.get("test_examples") for record in evaluated} - {None})
  examples = f", {counts[0]} examples" if len(counts) == 1 else ""
  return f"test accuracy (test split{examples})"
