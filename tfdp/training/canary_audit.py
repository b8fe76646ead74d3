"""The one-run audit of a trained run: its canaries' losses under the released weights, turned
into an empirical lower bound on ε and membership-inference figures (tfdp.privacy.audit, which
states the game, the theorem and why none of it is covered by the run's guarantee)."""

import sys

import numpy as np
import tensorflow as tf

from tfdp.data import canaries
from tfdp.privacy import audit


def canary_losses(model: tf.keras.Model, preprocess, loss_fn, drawn: canaries.Canaries,
                  batch_size: int = 500) -> np.ndarray:
  """float64 [m]: each canary's loss, with its canary label, under `model` as it stands."""
  losses_out = []
  for start in range(0, drawn.count, batch_size):
    images = drawn.images[start:start + batch_size]
    logits = model(preprocess(images), training=False)
    losses_out.append(loss_fn(tf.constant(drawn.labels[start:start + batch_size]), logits).numpy())
  return np.concatenate(losses_out).astype(np.float64)


def audit_run(run_dir: str, model, preprocess, loss_fn, metrics: dict,
              confidence: float = audit.CONFIDENCE) -> dict:
  """The one-run audit of the run in `run_dir` (its canaries) on `model`, the released weights,
  beside the run's proven ε from `metrics`; prints its verdict. The figures are not covered by the
  guarantee (tfdp.privacy.audit)."""
  drawn = canaries.load(run_dir)
  if drawn is None:
    raise ValueError(f"{run_dir} has no {canaries.FILE}: the run was not trained with "
                     "--audit_canaries")
  proven = metrics.get("epsilon") if metrics.get("dp_guarantee") != "none" else None
  delta = metrics.get("delta") or 1e-5  # A non-private run is tested against (ε, 1e-5)-DP.
  result = audit.audit(canary_losses(model, preprocess, loss_fn, drawn), drawn.included, delta,
                       confidence, proven)
  result["audit"]["canary_type"] = drawn.kind
  if result["audit"]["above_proven"]:
    print(f"WARNING: {result['audit']['verdict']}", file=sys.stderr)
  print(f"Audit ({drawn.count} {drawn.kind} canaries, {result['audit_correct']} of "
        f"{result['audit_guesses']} guesses right): {result['audit']['verdict']}; "
        f"membership inference AUC {result['mia_auc']:.3f}")
  return result
