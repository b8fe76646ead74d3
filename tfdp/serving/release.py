"""What a run releases beyond its metrics: the run spec that lets tfdp.export rebuild the model, the
weights it evaluates and exports (the EMA's when it has one), and exports from a checkpoint."""

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import sys
from typing import Optional

from absl import app
from absl import flags

from tfdp import atomic
from tfdp import config as config_lib
from tfdp import data
from tfdp import models
from tfdp.serving import model_card
from tfdp.serving import saved_model
from tfdp.training import checkpointing
from tfdp.training import ema


RUN_SPEC = "run_spec.json"  # What tfdp.export needs to rebuild the model without the data.
# Files that mark a directory as (part of) a tfdp run or export, and record whether it was private.
RUN_RECORDS = ("state.json", "metrics.json", saved_model.MODEL_CARD,
               os.path.join("assets", saved_model.MODEL_CARD))
_RECORD_LEVELS = 4  # The weights' directory and 3 above: run/checkpoints/, export/1/variables/.


def write_run_spec(config: config_lib.Config, dataset) -> None:
  spec = {"model": config.model.name, "model_options": config.model.kwargs,
          "ema_decay": config.run.ema_decay, "class_names": list(dataset.class_names),
          "mean": list(dataset.mean), "std": list(dataset.std),
          "input_shape": list(dataset.input_shape), "dataset": config.data.dataset,
          "augment": config.data.augment or dataset.augment, "config": dataclasses.asdict(config)}
  atomic.write_text(os.path.join(config.run.output_dir, RUN_SPEC),
                    json.dumps(spec, indent=2, sort_keys=True, default=str))


def export_run(checkpoint_dir: str, export_dir: str) -> str:
  """Exports the last checkpoint of a tfdp.train run to export_dir/<next version>/.

  The model card comes from the run's metrics.json when the run finished, else from its ledger
  and last evaluated epoch (state.json). EMA weights are exported when the run used EMA.
  """
  run = restore_run(checkpoint_dir)
  card = model_card.build(_metrics_for_card(checkpoint_dir, run.restored))
  with released_weights(run.weight_average):
    return saved_model.export_versioned(run.model, export_dir, preprocess=run.preprocess,
                                        class_names=run.spec["class_names"], model_card=card)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A run's model with its last checkpoint's weights, as tfdp.export and tfdp.audit need it."""
  spec: dict  # The run spec (RUN_SPEC).
  model: object  # tf.keras.Model with the live weights restored.
  weight_average: Optional[ema.WeightAverage]  # Its EMA, when the run used one.
  preprocess: object  # The evaluation preprocessing: uint8 images -> model inputs.
  restored: tuple  # checkpointing.restore_weights's (epoch, ledger, history).


def restore_run(checkpoint_dir: str) -> RestoredRun:
  """Rebuilds a tfdp.train run's model from its run spec and restores its last checkpoint."""
  spec_path = os.path.join(checkpoint_dir, RUN_SPEC)
  if not os.path.exists(spec_path):
    raise ValueError(f"{checkpoint_dir} is not a tfdp.train run directory (no {RUN_SPEC})")
  with open(spec_path) as f:
    spec = json.load(f)
  model = models.build_model(spec["model"], len(spec["class_names"]), tuple(spec["input_shape"]),
                             **spec["model_options"])
  weight_average = ema.WeightAverage(model, spec["ema_decay"]) if spec["ema_decay"] else None
  restored = checkpointing.restore_weights(checkpoint_dir, model, weight_average)
  preprocess = data.make_preprocess(spec["mean"], spec["std"], spec["augment"], training=False)
  return RestoredRun(spec, model, weight_average, preprocess, restored)


def _metrics_for_card(checkpoint_dir: str, restored) -> dict:
  metrics_path = os.path.join(checkpoint_dir, "metrics.json")
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      return json.load(f)
  epoch, ledger, history = restored
  last = history[-1] if history else {}
  return {**last, **ledger.epsilon_fields(),
          "dp_guarantee": ledger.guarantee(), "randomness": ledger.randomness,
          "delta": ledger.delta, "target_epsilon": ledger.target_epsilon,
          "delta_float_tail": ledger.float_tail_delta() if ledger.private else None,
          "accountant": ledger.accountant, "sampling": ledger.sampling,
          "sampling_probability": ledger.sampling_probability, "noise": ledger.noise,
          "noise_multiplier": ledger.noise_multiplier, "steps": ledger.steps,
          "epochs_completed": epoch, "privacy_statement": ledger.statement()}


def weights_provenance(path: Optional[str]) -> Optional[dict]:
  """{"path", "sha256"} of a --weights file (of all its files, for a checkpoint prefix), or None.

  Pretrained weights are assumed public and independent of the private training data; their own
  privacy cost is not composed. So weights that come from an earlier private tfdp run (a run
  record or model card in their directory or up to 3 levels above says ε or σ > 0) are refused.

  Raises:
    ValueError: the file does not exist, or comes from a private run, naming it.
  """
  if path is None:
    return None
  files = [path] if os.path.isfile(path) else sorted(glob.glob(glob.escape(path) + ".*"))
  if not files:
    raise ValueError(f"weights file {path!r} does not exist (a file, or a checkpoint prefix)")
  record = _private_run_record(path)
  if record:
    raise ValueError(f"--weights {path!r} comes from an earlier private tfdp run ({record}): "
                     "training on it would spend that run's privacy budget again, and tfdp does "
                     "not compose the two. Use weights that are public and independent of the "
                     "private training data")
  digest = hashlib.sha256()
  for name in files:
    with open(name, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return {"path": os.path.abspath(path), "sha256": digest.hexdigest()}


def _private_run_record(path: str) -> Optional[str]:
  """The first run record near `path` that says its run was private, or None."""
  directory = os.path.dirname(os.path.abspath(path))
  for _ in range(_RECORD_LEVELS):
    for name in RUN_RECORDS:
      candidate = os.path.join(directory, name)
      if os.path.isfile(candidate) and _says_private(candidate):
        return candidate
    directory = os.path.dirname(directory)
  return None


def _says_private(record_path: str) -> bool:
  """Whether a state.json, metrics.json or model card records a private run (ε or σ > 0)."""
  try:
    with open(record_path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(record, dict):
    return False
  ledger = record.get("ledger") if isinstance(record.get("ledger"), dict) else record
  sigma = ledger.get("noise_multiplier")
  return (isinstance(sigma, (int, float)) and sigma > 0
          or any(record.get(k) is not None for k in ("epsilon", "epsilon_if_dp_sgd"))
          or record.get("dp_guarantee") not in (None, "none"))


def released_weights(weight_average):
  """The weights a run evaluates and exports: the EMA's when it has one, else the live ones."""
  return weight_average.applied() if weight_average else contextlib.nullcontext()


def with_weights(evaluate, weight_average):
  def evaluate_released(images, labels):
    with released_weights(weight_average):
      return evaluate(images, labels)
  return evaluate_released


def main(argv):
  del argv
  try:
    path = export_run(flags.FLAGS.checkpoint_dir, flags.FLAGS.export_dir)
  except (ValueError, OSError) as error:
    sys.exit(f"tfdp.export: error: {error}")
  print(f"Exported {path}")


def run_export_command() -> None:
  """python -m tfdp.export --checkpoint_dir=RUN --export_dir=BASE: the next version of BASE."""
  # Defined only here: tfdp.train, which imports this module, has its own --export_dir.
  flags.DEFINE_string("checkpoint_dir", None, "A tfdp.train --output_dir (its last checkpoint).")
  flags.DEFINE_string("export_dir", None, "Base directory; the next version number goes in it.")
  flags.mark_flags_as_required(["checkpoint_dir", "export_dir"])
  app.run(main)


if __name__ == "__main__":
  run_export_command()
