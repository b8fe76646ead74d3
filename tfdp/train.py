"""Train an image classifier with differential privacy.

  python -m tfdp.train --flagfile=flags/quickstart.flags     # digits at ε = 3: about a minute
  python -m tfdp.train --flagfile=flags/quickstart.flags --epochs=2 --output_dir=runs/try
  python -m tfdp.train --dataset=folder --data_dir=/data/pets --model=resnet20 --epsilon=3

The run writes --output_dir (checkpoints, metrics.json, curves.png, TensorBoard) and exports the
model to --export_dir. Ctrl-C stops it after the step in flight, saved; the same command resumes
it, and says so when the run is already finished. Exit status: 0 done; 1 bad input (one line,
"tfdp.train: error: ..."); 130 or 143 stopped by SIGINT or SIGTERM (resumable).
"""
# For developers: flags are parsed here, once, into tfdp.config dataclasses; nothing below reads
# FLAGS. A config field's flag is made from the field (name, default, help, choices:
# tfdp.config_flags); the flags defined below fill the two fields that several flags make up.

import sys
import textwrap

from tfdp.training import stopping  # Imports no TensorFlow.

if __name__ == "__main__":  # TensorFlow takes seconds to import: a Ctrl-C then ends in one line.
  stopping.exit_at_once_on_signals("tfdp.train")

# pylint: disable=wrong-import-position
from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from tfdp import config as config_lib
from tfdp import config_flags
from tfdp import recipes
from tfdp import run_lock
from tfdp.training import checkpointing
from tfdp.training import distribution
# pylint: enable=wrong-import-position


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
                                            "Weight-standardized convolutions.")
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
# The topic of each flag defined above, for --help's index.
_EXTRA_TOPICS = {"model": ["model_kwargs", "groupnorm_groups", "activation",
                           "weight_standardization", "weights"],
                 "optimizer": ["epsilon_adam", "beta_1", "beta_2", "rho",
                               "initial_accumulator_value"]}


def _flag_index() -> str:
  """The flags by topic, one paragraph each, for the usage text (absl prints it above the flags)."""
  lines = ["", "Flags by topic (each is described below, in alphabetical order):"]
  for topic, names in config_flags.topics(config_lib.Config):
    listed = " ".join(f"--{name}" for name in names + _EXTRA_TOPICS.get(topic, []))
    lines.append(textwrap.fill(listed, width=100, initial_indent=f"  {topic + ':':11}",
                               subsequent_indent=" " * 13))
  return "\n".join(lines) + "\n"


__doc__ += _flag_index()  # absl's --help and --helpshort print the main module's __doc__.


def config_from_flags() -> config_lib.Config:
  """The run the parsed flags describe; ValueError (naming the value) if they describe none."""
  options = config_lib.model_options(
      _MODEL_KWARGS.value, groupnorm_groups=_GROUPNORM_GROUPS.value, activation=_ACTIVATION.value,
      weight_standardization=_WEIGHT_STANDARDIZATION.value, weights=_WEIGHTS.value)
  hyperparameters = tuple(sorted((key, flag.value) for key, flag in _HYPERPARAMETERS.items()
                                 if flag.value is not None))
  return config_flags.build(config_lib.Config, flags.FLAGS, {
      "model.options": options, "optimizer.hyperparameters": hyperparameters})


# Python log levels of absl and TensorFlow by --progress. Verbose keeps their warnings (as before
# --progress: TF's INFO lines, SavedModel writing, drown the progress); below it, errors only:
# TensorFlow's warnings at the end of a run (unrestored checkpoint values, retracing) are for
# developers. TensorFlow's C++ lines are set apart, before it is imported (tfdp.cpu).
_LOG_LEVELS = {"quiet": "error", "normal": "error", "verbose": "warning"}


def main(argv):
  del argv
  logging.set_verbosity(_LOG_LEVELS[flags.FLAGS.progress])
  tf.get_logger().setLevel(_LOG_LEVELS[flags.FLAGS.progress].upper())
  from tfdp.training import loop  # pylint: disable=import-outside-toplevel
  try:
    config = config_from_flags()
    if config.run.recipe != "none":
      recipes.refuse_chosen_flags(name for name in recipes.CHOSEN_FLAGS if flags.FLAGS[name].present)
    config, dataset = loop.with_recipe(config)
    prepared = loop.prepare(config, dataset)
  except ValueError as error:  # data.DataError included: bad input, named in one line.
    sys.exit(f"tfdp.train: error: {error}")
  stopping.hand_over()  # From here the run saves before it stops (tfdp.training.stopping).
  try:
    loop.train_and_evaluate(config, prepared)
  except (run_lock.DirectoryInUse, checkpointing.RunStateError) as error:  # Before any step.
    sys.exit(f"tfdp.train: error: {error}")
  except stopping.Stopped as stop:
    print(f"tfdp.train: {stop}", file=sys.stderr)
    sys.exit(stop.exit_code)
  except KeyboardInterrupt as interrupt:  # A second Ctrl-C, or one where signals are left alone.
    print(f"tfdp.train: {str(interrupt) or _interrupted(config)}", file=sys.stderr)
    sys.exit(stopping.Interrupted.exit_code)
  except OSError as error:  # A full disk, a lost mount: spent.json is written before results.
    sys.exit(f"tfdp.train: error: {error}; every step whose results were written is counted in "
             f"{config.run.output_dir}/spent.json: fix the cause and run the same command to "
             "resume")
  except tf.errors.OpError as error:
    failure = distribution.worker_failure(error)
    if failure is None:
      raise
    sys.exit(f"tfdp.train: error: {failure}")


def _interrupted(config: config_lib.Config) -> str:
  return (f"stopped at once by SIGINT; {config.run.output_dir} keeps its last checkpoint; run the "
          "same command to resume")


if __name__ == "__main__":
  app.run(main)
