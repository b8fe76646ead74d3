"""`python -m tfdp.export --checkpoint_dir=RUN --export_dir=BASE`: a tfdp.train run's last
checkpoint, exported as the next version of BASE.

It rebuilds the model from the run spec (tfdp.serving.release), restores the last complete
checkpoint (tfdp.training.checkpointing) and exports the released weights (the EMA's when the run
used one) with a model card. It sits in training, not serving, because restoring a checkpoint and
its EMA needs training's modules; serving needs nothing from here.
"""

import dataclasses
import json
import os
import sys
from typing import Optional

from absl import app
from absl import flags

from tfdp import data
from tfdp import models
from tfdp.serving import model_card
from tfdp.serving import release
from tfdp.serving import saved_model
from tfdp.training import checkpointing
from tfdp.training import ema


def export_run(checkpoint_dir: str, export_dir: str) -> str:
  """Exports the last checkpoint of a tfdp.train run to export_dir/<next version>/.

  The model card comes from the run's metrics.json when the run finished, else from its ledger
  and last evaluated epoch (state.json). EMA weights are exported when the run used EMA.
  """
  run = restore_run(checkpoint_dir)
  card = model_card.build(_metrics_for_card(checkpoint_dir, run.restored))
  with release.released_weights(run.weight_average):
    return saved_model.export_versioned(run.model, export_dir, preprocess=run.preprocess,
                                        class_names=run.spec["class_names"], model_card=card)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A run's model with its last checkpoint's weights, as tfdp.export and tfdp.audit need it."""
  spec: dict  # The run spec (tfdp.serving.release.RUN_SPEC).
  model: object  # tf.keras.Model with the live weights restored.
  weight_average: Optional[ema.WeightAverage]  # Its EMA, when the run used one.
  preprocess: object  # The evaluation preprocessing: uint8 images -> model inputs.
  restored: tuple  # checkpointing.restore_weights's (epoch, ledger, history).


def restore_run(checkpoint_dir: str) -> RestoredRun:
  """Rebuilds a tfdp.train run's model from its run spec and restores its last checkpoint."""
  spec = release.read_run_spec(checkpoint_dir)
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


def main(argv):
  del argv
  try:
    path = export_run(flags.FLAGS.checkpoint_dir, flags.FLAGS.export_dir)
  except (ValueError, OSError) as error:
    sys.exit(f"tfdp.export: error: {error}")
  print(f"Exported {path}")


def run_export_command() -> None:
  """python -m tfdp.export --checkpoint_dir=RUN --export_dir=BASE: the next version of BASE."""
  # Defined only here, so that importing this module (tfdp.audit does) defines no flags that
  # could clash with the importer's own (tfdp.train has its own --export_dir).
  flags.DEFINE_string("checkpoint_dir", None, "A tfdp.train --output_dir (its last checkpoint).")
  flags.DEFINE_string("export_dir", None, "Base directory; the next version number goes in it.")
  flags.mark_flags_as_required(["checkpoint_dir", "export_dir"])
  app.run(main)


if __name__ == "__main__":
  run_export_command()
