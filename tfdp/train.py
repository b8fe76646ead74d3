"""Train an image classifier with differential privacy.

  python -m tfdp.train --flagfile=flags/quickstart.flags
  python -m tfdp.train --model=resnet20 --dataset=folder --data_dir=/tmp/cifar10 \
      --optimizer=dp_adagrad --epsilon=3 --epochs=1 --train_examples=2000

Flags are parsed here, once, into tfdp.config dataclasses; nothing below reads FLAGS. A config
field's flag is made from the field (name, default, help, choices: tfdp.config_flags); the
flags defined below fill the two fields that several flags make up.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from tfdp import config as config_lib
from tfdp import config_flags
from tfdp import run_lock
from tfdp.training import checkpointing
from tfdp.training import distribution
from tfdp.training import stopping


def _define_config_flags():
  """One flag per config field, with the field's default and help (tfdp.config)."""
  for flag in config_flags.make_flags(config_lib.Config):
    flags.DEFINE_flag(flag)  # Called from here: absl lists the flags as tfdp.train's.


_define_config_flags()
# ModelConfig.options, merged by config_lib.model_options: the dedicated flags win.
_MODEL_KWARGS = flags.DEFINE_list("model_kwargs", [],
                                  "Model builder options as key=value, e.g. depth=40,width=4.")
_GROUPNORM_GROUPS = flags.DEFINE_integer("groupnorm_groups", None,
                                         "GroupNorm groups (models with GroupNorm).")
_ACTIVATION = flags.DEFINE_string("activation", None, "Activation (e.g. relu, tanh, silu).")
_WEIGHT_STANDARDIZATION = flags.DEFINE_bool("weight_standardization", None,
                                            "Weight-standardized convolutions (WSConv2D).")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "Local pretrained weights file (models that take one). Assumed public and "
    "independent of the private training data; its path and sha256 go into the metrics and model "
    "card. Weights of an earlier private tfdp run are refused (their cost would need composing).")
# OptimizerConfig.hyperparameters: the Keras keyword arguments given, each by its own flag.
_HYPERPARAMETERS = {
    "epsilon": flags.DEFINE_float(
        "epsilon_adam", None, "Numerical epsilon of Adam/RMSProp/Adagrad (post-processing: no "
        "privacy cost). DP-Adam often wants it larger than Keras's 1e-7, as the noise dominates "
        "small moments."),
    "beta_1": flags.DEFINE_float("beta_1", None, "Adam's first-moment decay."),
    "beta_2": flags.DEFINE_float("beta_2", None, "Adam's second-moment decay."),
    "rho": flags.DEFINE_float("rho", None, "RMSProp's moving-average decay."),
    "initial_accumulator_value": flags.DEFINE_float("initial_accumulator_value", None,
                                                    "Adagrad's initial accumulator."),
}


def config_from_flags() -> config_lib.Config:
  """The run the parsed flags describe; ValueError (naming the value) if they describe none."""
  options = config_lib.model_options(
      _MODEL_KWARGS.value, groupnorm_groups=_GROUPNORM_GROUPS.value, activation=_ACTIVATION.value,
      weight_standardization=_WEIGHT_STANDARDIZATION.value, weights=_WEIGHTS.value)
  hyperparameters = tuple(sorted((key, flag.value) for key, flag in _HYPERPARAMETERS.items()
                                 if flag.value is not None))
  return config_flags.build(config_lib.Config, flags.FLAGS, {
      "model.options": options, "optimizer.hyperparameters": hyperparameters})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's INFO lines (SavedModel writing) drown the progress.
  from tfdp.training import loop  # pylint: disable=import-outside-toplevel
  try:
    config = config_from_flags()
    prepared = loop.prepare(config)
  except ValueError as error:  # data.DataError included: bad input, named in one line.
    sys.exit(f"tfdp.train: error: {error}")
  try:
    loop.train_and_evaluate(config, prepared)
  except (run_lock.DirectoryInUse, checkpointing.RunStateError) as error:  # Before any step.
    sys.exit(f"tfdp.train: error: {error}")
  except stopping.Stopped as stop:
    print(f"tfdp.train: {stop}", file=sys.stderr)
    sys.exit(stop.exit_code)
  except OSError as error:  # A full disk, a lost mount: spent.json is written before results.
    sys.exit(f"tfdp.train: error: {error}; every step whose results were written is counted in "
             f"{config.run.output_dir}/spent.json: fix the cause and run the same command to "
             "resume")
  except tf.errors.OpError as error:
    failure = distribution.worker_failure(error)
    if failure is None:
      raise
    sys.exit(f"tfdp.train: error: {failure}")


if __name__ == "__main__":
  app.run(main)
