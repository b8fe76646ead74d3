"""Checkpoints that carry the privacy ledger, so an interrupted run resumes with its budget intact.

Layout under the run's output_dir:
  checkpoints/ckpt-E.*   model and optimizer state after epoch E (tf.train.CheckpointManager)
  state.json             {"epoch": E, "checkpoint": "ckpt-E", "ledger": {...}, "history": [...]}, written atomically
                         *after* the checkpoint, so it never names a checkpoint that is not complete.
                         The history holds what the run releases per epoch (tfdp.training): no
                         training-batch figures of a private run unless --monitor_private_metrics
                         asked for them, under keys marked not private.
Optimizer state that must not be released (DiceSGD's error) is kept out of checkpoints; such an
optimizer names it in `not_checkpointed`, and a resume restarts it.
"""

import json
import os
from typing import List, Optional, Tuple

import tensorflow as tf

from tfdp import atomic
from tfdp.privacy import ledger as ledger_lib


class RunState:
  """Saves and restores (model, optimizer, epoch, ledger) for one output_dir."""

  def __init__(self, output_dir: str, model: tf.keras.Model, optimizer, *,
               save_dir: Optional[str] = None, **extra):
    """`extra`: further trackables saved with the model (e.g. ema=WeightAverage).

    `save_dir`: where `save` writes, when not output_dir (a worker other than the chief restores
    the chief's run from output_dir and saves to a scratch directory).
    """
    # The optimizer's state that checkpoints leave out, one sentence each (a resume restarts it).
    self.not_checkpointed = tuple(getattr(optimizer, "not_checkpointed", ()))
    self._state_path = os.path.join(output_dir, "state.json")
    self._save_state_path = os.path.join(save_dir or output_dir, "state.json")
    self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **extra)
    self._directory = os.path.join(output_dir, "checkpoints")
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, os.path.join(save_dir or output_dir, "checkpoints"), max_to_keep=3)

  def restore(self) -> Optional[Tuple[int, ledger_lib.PrivacyLedger, List[dict]]]:
    """Restores the last complete checkpoint.

    Returns:
      (epochs done, ledger, per-epoch history), or None when output_dir holds no run.
    """
    if not os.path.exists(self._state_path):
      return None
    with open(self._state_path) as f:
      state = json.load(f)
    prefix = os.path.join(self._directory, state["checkpoint"])
    self._checkpoint.restore(prefix).assert_existing_objects_matched()
    return state["epoch"], ledger_lib.PrivacyLedger(**state["ledger"]), state["history"]

  def save(self, epoch: int, ledger: ledger_lib.PrivacyLedger, history: List[dict]) -> None:
    prefix = self._manager.save(checkpoint_number=epoch)
    state = {"epoch": epoch, "checkpoint": os.path.basename(prefix),
             "ledger": json.loads(ledger.to_json()), "history": history}
    atomic.write_text(self._save_state_path, json.dumps(state, indent=2, sort_keys=True))


def restore_weights(output_dir: str, model: tf.keras.Model, weight_average=None):
  """Restores only the model (and EMA) of a run's last complete checkpoint, for export.

  Returns:
    (epochs done, ledger, history) from state.json. Raises ValueError if there is no checkpoint.
  """
  state_path = os.path.join(output_dir, "state.json")
  if not os.path.exists(state_path):
    raise ValueError(f"{output_dir} has no completed epoch to export (no state.json)")
  with open(state_path) as f:
    state = json.load(f)
  extra = {"ema": weight_average} if weight_average is not None else {}
  checkpoint = tf.train.Checkpoint(model=model, **extra)
  prefix = os.path.join(output_dir, "checkpoints", state["checkpoint"])
  checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
  return state["epoch"], ledger_lib.PrivacyLedger(**state["ledger"]), state["history"]
