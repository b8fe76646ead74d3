"""The model card: what a released model's privacy guarantee is, in fields a reader can check.

Built from a run's metrics (tfdp.training); written beside every export and inside it as an asset.
The guarantee text depends on what holds for the run (`dp_guarantee`, from
tfdp.privacy.ledger.PrivacyLedger.guarantee): a proven guarantee, the customary approximation for
shuffled batches, or no guarantee (reproducible noise, DiceSGD, non-private training). The card
lists which of its fields the guarantee covers (`covered_fields`) and which it does not
(`not_covered`).
"""

from typing import Any, Dict, List

import tensorflow as tf

import tfdp

WEIGHTS = "model weights"  # The released weights themselves, named in covered_fields/not_covered.

ASSUMPTIONS = (
    "the batch sampling and the noise were drawn from a secure random source and kept secret",
    "the initial weights (random, the public pretrained weights_file, or the prior, made from "
    "random-process images only) are independent of the private training data",
    "the training set size N is public, as is customary (q, the steps and ε are functions of it)",
)
_SCOPE = (
    "It does not cover groups of examples (for instance several images of one person) beyond "
    "group privacy; the test data (the test metrics are computed on it without privacy); "
    "hyperparameters or runs chosen by looking at results on the private data (each such choice "
    "spends privacy that this ε does not count; see docs/guarantee.md); or, with --train_examples, "
    "which examples are in the training subset: the public seed chose it, so the subset is public "
    "and the guarantee covers the examples in it.")
_PROVEN = (
    "Example-level (ε, δ)-differential privacy under add/remove-one adjacency: for any single "
    "training example, the released artifacts listed in covered_fields (the model weights in "
    "every checkpoint and export, and the fields computed only from them, from the noised updates "
    "and from public configuration) are (ε, δ)-indistinguishable from those of the same run "
    "without that example. It assumes that " + "; that ".join(ASSUMPTIONS) + ". " + _SCOPE)
_SHUFFLE = (
    "NOT A PROOF: the batches were drawn by shuffling, not by Poisson sampling, and the ε is the "
    "Poisson-subsampling bound applied to them, the customary approximation. Were the batches "
    "Poisson-sampled, the statement would read: " + _PROVEN)
_REPRODUCIBLE = (
    "NO DIFFERENTIAL-PRIVACY GUARANTEE against anyone who knows the seed: the sampling and the "
    "noise followed from the published seed (--reproducible_noise), so the batches can be "
    "recomputed and the noise subtracted. The ε shown is what the same mechanism would give with "
    "secret randomness; such a run is for tests and debugging only.")
_UNPROVEN = (
    "NO PROVEN DIFFERENTIAL-PRIVACY GUARANTEE: DiceSGD's hidden error feeds the unclipped part of "
    "a sampled example's gradient into later releases where that example is not sampled, without "
    "amplification by sampling, and for unbounded gradients no finite ε follows. epsilon is null; "
    "epsilon_if_dp_sgd is DP-SGD's ε at the same σ, for comparison only.")
NON_PRIVATE = "Trained without differential privacy: this model carries no privacy guarantee."
GUARANTEES = {"proven": _PROVEN, "shuffle": _SHUFFLE, "reproducible": _REPRODUCIBLE,
              "unproven": _UNPROVEN, "none": NON_PRIVATE}

# The one-run audit (tfdp.privacy.audit), when the run had canaries.
AUDIT_FIELDS = ("audit_epsilon_lower_bound", "audit_guesses", "audit_correct", "mia_auc",
                "mia_tpr_at_fpr_0.01", "mia_tpr_at_fpr_0.001", "audit")
FIELDS = ("epsilon", "epsilon_pld", "epsilon_if_dp_sgd", "delta", "delta_float_tail",
          "target_epsilon", "accountant",
          "dp_guarantee", "randomness", "sampling", "sampling_probability", "noise",
          "noise_multiplier", "noise_multipliers_per_epoch", "noise_schedule", "layer_noise",
          "adaptive_clip_quantile", "final_clip_norm", "l2_norm_clip", "l1_norm_clip",
          "dice_error_clip", "clip_groups", "clipping_mode", "steps", "prior_phases",
          "epochs_completed",
          "batch_size", "dataset", "train_examples", "train_subset", "test_examples", "model",
          "model_options", "weights_file", "prior", "linear_probe", "feature_statistics",
          "parameters", "optimizer",
          "learning_rate", "ema_decay", "augment", "augmult", "recipe", "test_accuracy", "test_balanced_accuracy",
          "test_auc", "test_loss", "privacy_statement", "seed", "not_private_monitoring",
          "local_dp", "timing", "skipped_images", *AUDIT_FIELDS)
# Fields computed from the training data through the weights or the mechanism: covered by a
# guarantee when there is one, not covered otherwise.
_DATA_DEPENDENT = ("test_accuracy", "test_balanced_accuracy", "test_auc", "test_loss",
                   "final_clip_norm", "linear_probe",  # The probe's figures include its accuracy.
                   "feature_statistics")
# Computed from the private data without noise (--monitor_private_metrics): never covered.
# So are the audit's figures (the canaries' losses without noise), the timing (wall time grows
# with the chunks each step's drawn batch needed, and the drawn sizes are private) and the count of
# unusable image files --skip_bad_images left out (which training files are bad is private).
_NEVER_COVERED = ("not_private_monitoring", "timing", "skipped_images", *AUDIT_FIELDS)


def guarantee_kind(metrics: Dict[str, Any]) -> str:
  """The run's `dp_guarantee` (a key of GUARANTEES).

  Metrics written before tfdp recorded it count as reproducible when they have an ε: those runs
  drew their sampling and noise from the seed.
  """
  kind = metrics.get("dp_guarantee")
  if kind is not None:
    if kind not in GUARANTEES:
      raise ValueError(f"unknown dp_guarantee {kind!r}; valid: {', '.join(GUARANTEES)}")
    return kind
  return "none" if metrics.get("epsilon") is None else "reproducible"


def coverage(card: Dict[str, Any], kind: str) -> Dict[str, List[str]]:
  """{"covered_fields": [...], "not_covered": [...]}: the card's released fields by coverage.

  With a guarantee ('proven', or 'shuffle' as its approximation) it covers the model weights and
  every field present except those computed from the private data without noise; without one, the
  weights and every data-dependent field are not covered.
  """
  present = [name for name in FIELDS if card.get(name) is not None]
  never = [name for name in present if name in _NEVER_COVERED]
  if kind in ("proven", "shuffle"):
    return {"covered_fields": [WEIGHTS] + [n for n in present if n not in never],
            "not_covered": never}
  dependent = [name for name in present if name in _DATA_DEPENDENT]
  return {"covered_fields": [], "not_covered": [WEIGHTS] + dependent + never}


def build(metrics: Dict[str, Any]) -> Dict[str, Any]:
  """The card's fields from a run's metrics (missing ones are None), plus the guarantee that
  holds, its assumptions, what it covers, and the versions."""
  kind = guarantee_kind(metrics)
  card = {name: metrics.get(name) for name in FIELDS}
  card["dp_guarantee"] = kind
  card.update(coverage(card, kind),
              guarantee=GUARANTEES[kind],
              assumptions=list(ASSUMPTIONS) if kind in ("proven", "shuffle") else [],
              exported_weights="exponential moving average" if metrics.get("ema_decay")
              else "final",
              tfdp_version=tfdp.__version__, tensorflow_version=tf.__version__)
  if metrics.get("local_dp"):
    card["local_dp_guarantee"] = local_dp_guarantee(metrics["local_dp"])
  return card


def _delta_text(report: Dict[str, Any]) -> str:
  """The local-DP δ; a run from before tfdp recorded it is not assumed to have δ = 0."""
  delta = report.get("delta_per_image")
  return "not recorded by this run" if delta is None else f"{delta:.3g}"


def local_dp_guarantee(report: Dict[str, Any]) -> str:
  """The guarantee of images perturbed once before training (tfdp.data.local_dp), in words."""
  if report.get("randomness") == "reproducible":
    return ("NO LOCAL-DP GUARANTEE against anyone who knows the seed: the images' noise followed "
            "from the published seed (--reproducible_noise), so it can be subtracted.")
  return (f"Local differential privacy: every training image was perturbed once, before training, "
          f"with {report['mechanism']} noise of scale {report['scale']:g} per pixel value, and "
          f"training saw only the perturbed copy, so everything released is "
          f"(ε = {report['epsilon_per_image']:.6g}, δ = {_delta_text(report)})-DP "
          "per training image under replace-one adjacency (δ = 1 is no guarantee: the noise "
          "sampler cannot move a pixel value across the whole range). The per-pixel figure {report['epsilon_per_pixel']:.4g} holds for "
          "one pixel value alone and is not the image's guarantee. Labels are not covered. "
          "This is in addition to, and composes with, any guarantee of the training above.")
