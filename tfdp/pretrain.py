"""Pretrain an encoder on random-process images (DP-RandP phase I): a prior at no privacy cost.

  python -m tfdp.pretrain --model=resnet20 --source=mix --steps=2000 --output_dir=runs/randp
  python -m tfdp.train --init_from=runs/randp/prior ...     # or --init_from=priors/resnet20_randp

An interrupted run started again with the same flags resumes from its last checkpoint. The prior
(encoder weights + card) is written to <output_dir>/prior at the end.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from tfdp import config as config_lib
from tfdp.data import random_processes
from tfdp import models
from tfdp.priors import pretraining

_DEFAULTS = pretraining.PretrainConfig()
_MODEL = flags.DEFINE_enum("model", _DEFAULTS.model, sorted(models.MODELS), "Encoder architecture.")
_MODEL_KWARGS = flags.DEFINE_list("model_kwargs", [], "Model builder options as key=value.")
_SOURCE = flags.DEFINE_enum("source", _DEFAULTS.source, random_processes.sources(),
                            "Random-process images; mix cycles through every generator.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Image side in pixels.")
_CHANNELS = flags.DEFINE_integer("channels", _DEFAULTS.channels,
                                 "3, or 1 for a prior of grayscale images.")
_STEPS = flags.DEFINE_integer("steps", _DEFAULTS.steps, "Training steps.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Images per step.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate,
                                    "SGD learning rate per 256 images (scaled with the batch).")
_MOMENTUM = flags.DEFINE_float("momentum", _DEFAULTS.momentum, "SGD momentum.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "L2 weight decay.")
_FEATURE_DIM = flags.DEFINE_integer("feature_dim", _DEFAULTS.feature_dim,
                                    "Width of the projection the contrastive loss sees.")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Public seed: images, views, initialization.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", _DEFAULTS.output_dir,
                                  "Checkpoints, TensorBoard, the prior; an existing run resumes.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", _DEFAULTS.checkpoint_every,
                                         "Steps between checkpoints.")
_LOG_EVERY = flags.DEFINE_integer("log_every", _DEFAULTS.log_every, "Steps between log lines.")


def config_from_flags() -> pretraining.PretrainConfig:
  return pretraining.PretrainConfig(
      model=_MODEL.value, model_options=dict(config_lib.model_options(_MODEL_KWARGS.value)),
      source=_SOURCE.value, image_size=_IMAGE_SIZE.value, channels=_CHANNELS.value,
      steps=_STEPS.value,
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      momentum=_MOMENTUM.value, weight_decay=_WEIGHT_DECAY.value,
      feature_dim=_FEATURE_DIM.value, seed=_SEED.value, output_dir=_OUTPUT_DIR.value,
      checkpoint_every=_CHECKPOINT_EVERY.value, log_every=_LOG_EVERY.value)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  try:
    config = config_from_flags()
  except ValueError as error:
    sys.exit(f"tfdp.pretrain: error: {error}")
  del argv
  pretraining.pretrain(config, command=" ".join(["python -m tfdp.pretrain", *sys.argv[1:]]))


if __name__ == "__main__":
  app.run(main)
