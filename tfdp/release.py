"""What a run releases beyond its metrics: the run spec that lets tfdp.export rebuild the model, the
weights it evaluates and exports (the EMA's when it has one), and exports from a checkpoint."""

import contextlib
import dataclasses
import json
import os

from tfdp import atomic
from tfdp import checkpointing
from tfdp import config as config_lib
from tfdp import data
from tfdp import ema
from tfdp import export
from tfdp import model_card
from tfdp import models


RUN_SPEC = "run_spec.json"  # What tfdp.export needs to rebuild the model without the data.


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
  card = model_card.build(_metrics_for_card(checkpoint_dir, restored))
  with released_weights(weight_average):
    return export.export_versioned(model, preprocess, spec["class_names"], export_dir, card)


def _metrics_for_card(checkpoint_dir: str, restored) -> dict:
  metrics_path = os.path.join(checkpoint_dir, "metrics.json")
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      return json.load(f)
  epoch, ledger, history = restored
  last = history[-1] if history else {}
  return {**last, "epsilon": ledger.epsilon() if ledger.private else None,
          "epsilon_pld": ledger.epsilon("pld") if ledger.private else None,
          "delta": ledger.delta, "target_epsilon": ledger.target_epsilon,
          "accountant": ledger.accountant, "sampling": ledger.sampling,
          "sampling_probability": ledger.sampling_probability, "noise": ledger.noise,
          "noise_multiplier": ledger.noise_multiplier, "steps": ledger.steps,
          "epochs_completed": epoch, "privacy_statement": ledger.statement()}


def released_weights(weight_average):
  """The weights a run evaluates and exports: the EMA's when it has one, else the live ones."""
  return weight_average.applied() if weight_average else contextlib.nullcontext()


def with_weights(evaluate, weight_average):
  def evaluate_released(images, labels):
    with released_weights(weight_average):
      return evaluate(images, labels)
  return evaluate_released
