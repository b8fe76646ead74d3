"""What a run releases beyond its metrics: the run spec that lets tfdp.export rebuild the model, the
weights it evaluates and exports (the EMA's when it has one), and the provenance of the weights it
starts from. Exporting a run's checkpoint is tfdp.training.export_run: restoring one needs
training's modules, which serving, below training, does not import."""

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
from typing import Optional

from tfdp import atomic
from tfdp import config as config_lib
from tfdp.serving import saved_model


RUN_SPEC = "run_spec.json"  # What tfdp.export needs to rebuild the model without the data.
# Files that mark a directory as (part of) a tfdp run or export, and record whether it was private.
RUN_RECORDS = ("state.json", "metrics.json", saved_model.MODEL_CARD,
               os.path.join("assets", saved_model.MODEL_CARD))
_RECORD_LEVELS = 4  # The weights' directory and 3 above: run/checkpoints/, export/1/variables/.


def write_run_spec(config: config_lib.Config, dataset) -> None:
  """Writes RUN_SPEC into the run's output_dir: the model, its preprocessing and the config."""
  spec = {"model": config.model.name, "model_options": config.model.kwargs,
          "ema_decay": config.run.ema_decay, "class_names": list(dataset.class_names),
          "mean": list(dataset.mean), "std": list(dataset.std),
          "input_shape": list(dataset.input_shape), "dataset": config.data.dataset,
          "augment": config.data.augment or dataset.augment, "config": dataclasses.asdict(config)}
  atomic.write_text(os.path.join(config.run.output_dir, RUN_SPEC),
                    json.dumps(spec, indent=2, sort_keys=True, default=str))


def read_run_spec(output_dir: str) -> dict:
  """The run spec a tfdp.train run wrote in `output_dir`. Raises ValueError when there is none."""
  spec_path = os.path.join(output_dir, RUN_SPEC)
  if not os.path.exists(spec_path):
    raise ValueError(f"{output_dir} is not a tfdp.train run directory (no {RUN_SPEC})")
  with open(spec_path) as f:
    return json.load(f)


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
