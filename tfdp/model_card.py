"""The model card: what a released model's privacy guarantee is, in fields a reader can check.

Built from a run's metrics (tfdp.training); written beside every export and inside it as an asset.
"""

from typing import Any, Dict

import tensorflow as tf

import tfdp

GUARANTEE = (
    "Example-level differential privacy under add/remove-one adjacency: for any single training "
    "example, every released artifact of this run (each checkpoint, each export, the metrics) is "
    "(ε, δ)-indistinguishable from the same run without that example. It does not bound what "
    "groups of examples reveal together (for instance several images of one person) beyond "
    "group privacy, and it says nothing about the test data.")
NON_PRIVATE = "Trained without differential privacy: this model carries no privacy guarantee."

FIELDS = ("epsilon", "epsilon_pld", "delta", "target_epsilon", "accountant", "sampling",
          "sampling_probability", "noise", "noise_multiplier", "noise_multipliers_per_epoch",
          "noise_schedule", "layer_noise", "adaptive_clip_quantile", "final_clip_norm",
          "l2_norm_clip", "clip_groups", "clipping_mode", "steps", "epochs_completed", "batch_size",
          "dataset", "train_examples", "test_examples", "model", "model_options", "parameters",
          "optimizer", "learning_rate", "ema_decay", "augmult", "test_accuracy",
          "test_balanced_accuracy", "test_auc", "test_loss", "privacy_statement", "seed")


def build(metrics: Dict[str, Any]) -> Dict[str, Any]:
  """The card's fields from a run's metrics (missing ones are None), plus versions and guarantee."""
  card = {name: metrics.get(name) for name in FIELDS}
  private = metrics.get("epsilon") is not None
  card.update(guarantee=GUARANTEE if private else NON_PRIVATE,
              exported_weights="exponential moving average" if metrics.get("ema_decay")
              else "final",
              tfdp_version=tfdp.__version__, tensorflow_version=tf.__version__)
  return card
