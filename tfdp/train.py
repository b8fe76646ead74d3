"""Train an image classifier with differential privacy.

  python -m tfdp.train --flagfile=flags/quickstart.flags
  python -m tfdp.train --model=resnet20 --dataset=folder --data_dir=/tmp/cifar10 \
      --optimizer=dp_adagrad --epsilon=3 --epochs=1 --train_examples=2000

Flags are parsed here, once, into tfdp.config dataclasses; nothing below reads FLAGS.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from tfdp import config as config_lib
from tfdp import data
from tfdp import losses
from tfdp import models
from tfdp import optimizers
from tfdp.dp import clipping

_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(data.DATASETS), "Dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory (folder: train/ and test/).")
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples", None, "Keep a seeded subset of this many training examples; the accountant "
    "uses this N.")
_SAMPLING = flags.DEFINE_enum("sampling", "poisson", list(config_lib.SAMPLINGS),
                              "poisson (what the accountant assumes) or shuffle (reported as such).")
_AUGMENT = flags.DEFINE_string("augment", None, "Augmentation; default: the dataset's.")
_MODEL = flags.DEFINE_enum("model", "cnn", sorted(models.MODELS), "Model name.")
_MODEL_KWARGS = flags.DEFINE_list("model_kwargs", [],
                                  "Model builder options as key=value, e.g. depth=40,width=4.")
_GROUPNORM_GROUPS = flags.DEFINE_integer("groupnorm_groups", None,
                                         "GroupNorm groups (models with GroupNorm).")
_ACTIVATION = flags.DEFINE_string("activation", None, "Activation (e.g. relu, tanh, silu).")
_WEIGHT_STANDARDIZATION = flags.DEFINE_bool("weight_standardization", None,
                                            "Weight-standardized convolutions (WSConv2D).")
_WEIGHTS = flags.DEFINE_string("weights", None,
                               "Local pretrained weights file (models that take one).")
_LOSS = flags.DEFINE_enum("loss", "cross_entropy", sorted(losses.LOSSES),
                          "Per-example loss; hinge with --model=linear is a linear SVM.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "dp_sgd", sorted(optimizers.OPTIMIZERS),
                               "Optimizer name.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None,
                                    "Learning rate; default: the optimizer's usual one.")
_MOMENTUM = flags.DEFINE_float("momentum", 0.0, "Momentum (sgd and rmsprop variants).")
_EPSILON = flags.DEFINE_float("epsilon", None, "Target ε: the noise is calibrated to it.")
_DELTA = flags.DEFINE_float("delta", 1e-5, "δ of the (ε, δ) guarantee; must be < 1/N.")
_NOISE_MULTIPLIER = flags.DEFINE_float("noise_multiplier", None,
                                       "σ (noise std / clip norm); without --epsilon, ε is "
                                       "only reported.")
_L2_NORM_CLIP = flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example L2 clip norm C.")
_CLIPPING = flags.DEFINE_enum("clipping", "fast", sorted(clipping.CLIPPING_ENGINES),
                              "Per-example gradient engine: fast (per-layer closed forms) or "
                              "vectorized (TF Privacy's Jacobian, the slow reference).")
_CLIPPING_MODE = flags.DEFINE_enum(
    "clipping_mode", "clip", ["clip", "normalize"],
    "clip: g * min(1, C/||g||); normalize: g * C / (||g|| + gamma) (automatic clipping, Bu et al. "
    "2022). Both have sensitivity C, so the accountant is the same.")
_NORMALIZE_GAMMA = flags.DEFINE_float("normalize_gamma", 0.01,
                                      "gamma of --clipping_mode=normalize (> 0).")
_CLIP_GROUPS = flags.DEFINE_string("clip_groups", None,
                                   "Grouped clipping: K (contiguous groups of layers) or 'layer'; "
                                   "each group is clipped to C/sqrt(groups), total sensitivity C.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Expected batch size (q = batch_size / N).")
_PHYSICAL_BATCH_SIZE = flags.DEFINE_integer(
    "physical_batch_size", None, "Rows per compiled chunk (bounds memory); default "
    "min(batch_size, 64) (8 with --clipping=vectorized). Changes speed, never the mechanism.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs (steps per epoch = ceil(N / batch_size)).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for initialization, sampling and subsets.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/default",
                                  "Run directory: checkpoints, metrics.json, TensorBoard, "
                                  "SavedModel. An existing run there is resumed.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                  "SavedModel copy; default saved_models/<run name>.")
_EXPORT = flags.DEFINE_bool("export", True, "Write the SavedModel (and its copy).")
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the per-chunk step with XLA.")


def _parse_clip_groups(value):
  if value is None or value == "layer":
    return value
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"clip_groups must be a positive integer or 'layer', got {value!r}") from None


def _parse_value(text: str):
  """'3' -> 3, '0.5' -> 0.5, 'true'/'false' -> bool, anything else stays a string."""
  for parse in (int, float):
    try:
      return parse(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def _model_options():
  options = {}
  for item in _MODEL_KWARGS.value:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--model_kwargs entries must be key=value, got {item!r}")
    options[key.strip()] = _parse_value(value.strip())
  dedicated = {"groupnorm_groups": _GROUPNORM_GROUPS.value, "activation": _ACTIVATION.value,
               "weight_standardization": _WEIGHT_STANDARDIZATION.value,
               "weights": _WEIGHTS.value}
  options.update({k: v for k, v in dedicated.items() if v is not None})
  return tuple(sorted(options.items()))


def config_from_flags() -> config_lib.Config:
  return config_lib.Config(
      data=config_lib.DataConfig(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                                 train_examples=_TRAIN_EXAMPLES.value, sampling=_SAMPLING.value,
                                 augment=_AUGMENT.value),
      model=config_lib.ModelConfig(name=_MODEL.value, options=_model_options(),
                                   loss=_LOSS.value),
      privacy=config_lib.PrivacyConfig(epsilon=_EPSILON.value, delta=_DELTA.value,
                                       noise_multiplier=_NOISE_MULTIPLIER.value,
                                       l2_norm_clip=_L2_NORM_CLIP.value, clipping=_CLIPPING.value,
                                       clip_groups=_parse_clip_groups(_CLIP_GROUPS.value),
                                       clipping_mode=_CLIPPING_MODE.value,
                                       normalize_gamma=_NORMALIZE_GAMMA.value),
      optimizer=config_lib.OptimizerConfig(name=_OPTIMIZER.value,
                                           learning_rate=_LEARNING_RATE.value,
                                           momentum=_MOMENTUM.value),
      run=config_lib.RunConfig(batch_size=_BATCH_SIZE.value,
                               physical_batch_size=_PHYSICAL_BATCH_SIZE.value,
                               epochs=_EPOCHS.value, seed=_SEED.value,
                               output_dir=_OUTPUT_DIR.value, export_dir=_EXPORT_DIR.value,
                               export=_EXPORT.value,
                               jit_compile=_JIT_COMPILE.value))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's INFO lines (SavedModel writing) drown the progress.
  from tfdp import training  # pylint: disable=import-outside-toplevel
  try:
    config = config_from_flags()
    prepared = training.prepare(config)
  except ValueError as error:  # data.DataError included: bad input, named in one line.
    sys.exit(f"tfdp.train: error: {error}")
  training.train_and_evaluate(config, prepared)


if __name__ == "__main__":
  app.run(main)
