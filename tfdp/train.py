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
import tensorflow as tf

from tfdp import config as config_lib
from tfdp import data
from tfdp.dp import clipping
from tfdp.dp import losses
from tfdp import models
from tfdp import optimizers
from tfdp.privacy import accounting
from tfdp.privacy import mechanisms
from tfdp.privacy import schedules
from tfdp import run_lock
from tfdp.training import checkpointing
from tfdp.training import distribution
from tfdp.training import lr_schedules
from tfdp.training import stopping

_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(data.DATASETS), "Dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory (folder: train/ and test/).")
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples", None, "Keep a subset of this many training examples, chosen by the public "
    "--seed: which examples are in it is public, and the guarantee covers the examples in it. The "
    "accountant uses this N.")
_SAMPLING = flags.DEFINE_enum("sampling", "poisson", list(config_lib.SAMPLINGS),
                              "poisson (what the accountant assumes) or shuffle (reported as such).")
_AUGMENT = flags.DEFINE_enum("augment", None, sorted(data.AUGMENTATIONS),
                             "Training augmentation (keras-cv for randaugment and augmix); "
                             "default: the dataset's.")
_LOCAL_DP = flags.DEFINE_enum(
    "local_dp", "none", ["none", "laplace"], "Local DP: perturb every training image once, before "
    "training, with Laplace noise of scale --local_dp_scale per pixel value; training only sees "
    "the perturbed copy. Reports ε per image (H·W·C·255/β, replace-one) and 255/β per pixel.")
_LOCAL_DP_SCALE = flags.DEFINE_float("local_dp_scale", None,
                                     "β of --local_dp, in pixel values (0..255).")
_AUDIT_CANARIES = flags.DEFINE_integer(
    "audit_canaries", 0, "The one-run privacy audit (Steinke et al. 2023): this many canaries, "
    "each trained on with probability 1/2 (they count in N); after training, an empirical lower "
    "bound on ε at 95% and loss-threshold membership inference, reported beside the proven ε "
    "(not covered by it). 0: no audit.")
_AUDIT_CANARY_TYPE = flags.DEFINE_enum(
    "audit_canary_type", "mislabeled", ["mislabeled", "noise"],
    "mislabeled: training images with a random wrong label; noise: random-pixel images with "
    "random labels.")
_AUDIT_SEED = flags.DEFINE_integer(
    "audit_seed", None, "Seed of the canaries and their inclusion (tests); default: drawn from a "
    "secure source and kept only in output_dir/audit/ until the audit.")
_AUGMULT = flags.DEFINE_integer(
    "augmult", 1, "Augmented copies of each sampled example; its gradient is the mean over the "
    "copies, clipped as one (De et al. 2022): no privacy cost, augmult times the compute.")
_MODEL = flags.DEFINE_enum("model", "cnn", sorted(models.MODELS), "Model name.")
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
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "A prior for the encoder (every layer before the logits): a folder written "
    "by python -m tfdp.pretrain (its prior/ or the run folder) or a shipped one such as "
    "priors/resnet20_randp. Made from random-process images only, it costs no privacy; its card "
    "goes into the metrics and model card. The head starts fresh.")
_PROBE = config_lib.ProbeConfig()
_LINEAR_PROBE_STEPS = flags.DEFINE_integer(
    "linear_probe_steps", _PROBE.steps, "DP-RandP phase II: DP steps on the head alone, on the "
    "frozen encoder's features, before the main steps train the whole network (0: none).")
_PROBE_BATCH_SIZE = flags.DEFINE_integer("probe_batch_size", _PROBE.batch_size,
                                         "The probe's expected batch; default: the whole set.")
_PROBE_LEARNING_RATE = flags.DEFINE_float("probe_learning_rate", _PROBE.learning_rate,
                                          "The probe's DP-SGD learning rate.")
_PROBE_EPSILON_FRACTION = flags.DEFINE_float(
    "probe_epsilon_fraction", _PROBE.epsilon_fraction, "The share of --epsilon the probe alone "
    "spends (its σ is calibrated to it); the main steps' σ makes both together spend --epsilon.")
_PROBE_NOISE_MULTIPLIER = flags.DEFINE_float("probe_noise_multiplier", None,
                                             "The probe's σ, instead of --probe_epsilon_fraction.")
_LOSS = flags.DEFINE_enum("loss", "cross_entropy", sorted(losses.LOSSES),
                          "Per-example loss; hinge with --model=linear is a linear SVM.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "dp_sgd", sorted(optimizers.OPTIMIZERS),
                               "Optimizer name.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None,
                                    "Learning rate; default: the optimizer's usual one.")
_MOMENTUM = flags.DEFINE_float("momentum", 0.0, "Momentum (sgd and rmsprop variants).")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "constant", list(lr_schedules.LR_SCHEDULES),
                                 "Learning-rate schedule over the planned steps.")
_END_LEARNING_RATE = flags.DEFINE_float("end_learning_rate", 0.0,
                                        "Where cosine schedules end (e.g. 9e-5).")
_WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 0.0, "warmup_cosine: linear warm-up epochs.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0,
                                   "λ·w added to the noised gradient (post-processing).")
_EMA_DECAY = flags.DEFINE_float("ema_decay", None,
                                "EMA of the weights (warm-up min(decay, (1+t)/(10+t))), used for "
                                "evaluation and export; e.g. 0.999.")
_EPSILON = flags.DEFINE_float("epsilon", None, "Target ε: the noise is calibrated to it.")
_DELTA = flags.DEFINE_float("delta", 1e-5, "δ of the (ε, δ) guarantee; must be < 1/N.")
_NOISE_MULTIPLIER = flags.DEFINE_float("noise_multiplier", None,
                                       "σ (noise std / clip norm); without --epsilon, ε is "
                                       "only reported.")
_L2_NORM_CLIP = flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example L2 clip norm C.")
_NORMALIZATION_NOISE_MULTIPLIER = flags.DEFINE_float(
    "normalization_noise_multiplier", config_lib.PrivacyConfig.normalization_noise_multiplier,
    "σ of the DP per-map mean and variance that --model_kwargs=normalization=statistics "
    "(ScatterNet models) releases once before training; composed into ε.")
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
_NOISE = flags.DEFINE_enum(
    "noise", "gaussian", list(accounting.NOISES),
    "gaussian (float64 Box-Muller, radius capped at 12.13σ: its 2^-106 per coordinate is added "
    "to δ); discrete_gaussian: "
    "the clipped sum rounded to an integer grid plus discrete Gaussian noise, no float noise "
    "released (its sampler's distance from the ideal is added to δ), accounted by RDP with a general subsampling bound (a larger ε at "
    "the same σ); or laplace: per-example L1 clipping to --l1_norm_clip and Laplace noise per "
    "coordinate, accounted by PLD, not hardened (needs --clipping=vectorized).")
_DISCRETE_ROUNDING_INFLATION = flags.DEFINE_float(
    "discrete_rounding_inflation", 0.01, "--noise=discrete_gaussian: grid step chosen so that "
    "rounding inflates the sensitivity by this fraction (the noise grows with it).")
_L1_NORM_CLIP = flags.DEFINE_float("l1_norm_clip", 1.0, "Per-example L1 clip norm (--noise=laplace).")
_LAYER_NOISE = flags.DEFINE_enum(
    "layer_noise", "uniform", list(mechanisms.LAYER_NOISE),
    "Noise std per clipping group: uniform, or depth_decay (group k ∝ 1/(k+1)); the accountant uses "
    "the effective σ = 1/sqrt(Σ C_k²/s_k²). Needs --clip_groups.")
_ADAPTIVE_CLIP_QUANTILE = flags.DEFINE_float(
    "adaptive_clip_quantile", None, "Adaptive clipping (Andrew et al. 2021) to this quantile of "
    "per-example norms, e.g. 0.5; --l2_norm_clip is the initial clip.")
_ADAPTIVE_CLIP_LEARNING_RATE = flags.DEFINE_float("adaptive_clip_learning_rate", 0.2,
                                                  "Geometric learning rate of the adaptive clip.")
_ADAPTIVE_CLIP_COUNT_STDDEV = flags.DEFINE_float(
    "adaptive_clip_count_stddev", None, "Noise std of the unclipped count; default batch_size/20.")
_NOISE_SCHEDULE = flags.DEFINE_enum(
    "noise_schedule", "constant", list(schedules.SCHEDULES),
    "σ per epoch, fixed before training; calibration scales the whole schedule to --epsilon.")
_NOISE_SCHEDULE_END_FACTOR = flags.DEFINE_float(
    "noise_schedule_end_factor", 0.5, "linear_decay/cosine: last epoch's σ over the first's.")
_NOISE_SCHEDULE_STEP_EPOCHS = flags.DEFINE_integer("noise_schedule_step_epochs", 1,
                                                   "step schedule: epochs between steps.")
_NOISE_SCHEDULE_STEP_GAMMA = flags.DEFINE_float("noise_schedule_step_gamma", 0.9,
                                                "step schedule: σ factor at each step.")
_DICE_ERROR_CLIP = flags.DEFINE_float(
    "dice_error_clip", None, "DiceSGD's error clip C2 >= --l2_norm_clip, on the error of the summed "
    "gradient (the paper's C2 times the batch size); default C2 = C1. DiceSGD has no proven DP "
    "guarantee: it takes --noise_multiplier, not --epsilon.")
_EPSILON_ADAM = flags.DEFINE_float(
    "epsilon_adam", None, "Numerical epsilon of Adam/RMSProp/Adagrad (post-processing: no privacy "
    "cost). DP-Adam often wants it larger than Keras's 1e-7, as the noise dominates small moments.")
_BETA_1 = flags.DEFINE_float("beta_1", None, "Adam's first-moment decay.")
_BETA_2 = flags.DEFINE_float("beta_2", None, "Adam's second-moment decay.")
_RHO = flags.DEFINE_float("rho", None, "RMSProp's moving-average decay.")
_INITIAL_ACCUMULATOR_VALUE = flags.DEFINE_float("initial_accumulator_value", None,
                                                "Adagrad's initial accumulator.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Expected batch size (q = batch_size / N).")
_PHYSICAL_BATCH_SIZE = flags.DEFINE_integer(
    "physical_batch_size", None, "Rows per compiled chunk (bounds memory); default "
    "min(batch_size, 64) (8 with --clipping=vectorized). Changes speed, never the mechanism.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs (steps per epoch = ceil(N / batch_size)).")
_SEED = flags.DEFINE_integer(
    "seed", 0, "Public seed: initialization, augmentation, the --train_examples subset and "
    "evaluation order only. The mechanism's sampling and noise never depend on it (they come from "
    "a secure random source) unless --reproducible_noise is given.")
_REPRODUCIBLE_NOISE = flags.DEFINE_bool(
    "reproducible_noise", False, "Debugging only: derive Poisson sampling and noise from --seed "
    "so two runs repeat exactly. Such a run has NO differential-privacy guarantee against anyone "
    "who knows the seed, and its metrics and model card say so.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/default",
                                  "Run directory: checkpoints, metrics.json, TensorBoard, "
                                  "SavedModel. An existing run there is resumed.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                  "TF Serving base directory: each export is its next version "
                                  "<export_dir>/<N>/; default saved_models/<run name>.")
_EXPORT = flags.DEFINE_bool("export", True, "Write the SavedModel (and its copy).")
_MONITOR_PRIVATE_METRICS = flags.DEFINE_bool(
    "monitor_private_metrics", False, "Private runs: also show and record the training batches' "
    "loss and accuracy. They are computed from the private data without noise, so the guarantee "
    "does not cover them; they are labelled NOT PRIVATE in the logs, TensorBoard, metrics.json "
    "and the model card. Off by default: a private run releases only what the guarantee covers.")
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the per-chunk step with XLA.")
_DISTRIBUTION = flags.DEFINE_enum(
    "distribution", "none", sorted(distribution.STRATEGIES), "Data parallelism: 'mirrored' deals "
    "each step's chunks out to every visible GPU (or --cpu_replicas CPU devices); 'multi_worker' "
    "runs one replica per process of the TF_CONFIG cluster, each drawing its shard. Clipped sums "
    "are all-reduced and the noise added once (tfdp.training.distribution): same mechanism and ε.")
_CPU_REPLICAS = flags.DEFINE_integer(
    "cpu_replicas", None, "With --distribution=mirrored: this many logical CPU devices instead of "
    "the GPUs (for testing on a CPU machine).")


def _parse_clip_groups(value):
  if value is None or value == "layer":
    return value
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"clip_groups must be a positive integer or 'layer', got {value!r}") from None


def _model_options():
  return config_lib.model_options(
      _MODEL_KWARGS.value, groupnorm_groups=_GROUPNORM_GROUPS.value, activation=_ACTIVATION.value,
      weight_standardization=_WEIGHT_STANDARDIZATION.value, weights=_WEIGHTS.value)


def _optimizer_hyperparameters():
  given = {"epsilon": _EPSILON_ADAM.value, "beta_1": _BETA_1.value, "beta_2": _BETA_2.value,
           "rho": _RHO.value, "initial_accumulator_value": _INITIAL_ACCUMULATOR_VALUE.value}
  return tuple(sorted((k, v) for k, v in given.items() if v is not None))


def config_from_flags() -> config_lib.Config:
  return config_lib.Config(
      data=config_lib.DataConfig(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                                 train_examples=_TRAIN_EXAMPLES.value, sampling=_SAMPLING.value,
                                 augment=_AUGMENT.value, augmult=_AUGMULT.value,
                                 local_dp=_LOCAL_DP.value, local_dp_scale=_LOCAL_DP_SCALE.value,
                                 audit_canaries=_AUDIT_CANARIES.value,
                                 audit_canary_type=_AUDIT_CANARY_TYPE.value,
                                 audit_seed=_AUDIT_SEED.value),
      model=config_lib.ModelConfig(name=_MODEL.value, options=_model_options(),
                                   loss=_LOSS.value, init_from=_INIT_FROM.value),
      privacy=config_lib.PrivacyConfig(epsilon=_EPSILON.value, delta=_DELTA.value,
                                       noise_multiplier=_NOISE_MULTIPLIER.value,
                                       l2_norm_clip=_L2_NORM_CLIP.value, clipping=_CLIPPING.value,
                                       clip_groups=_parse_clip_groups(_CLIP_GROUPS.value),
                                       clipping_mode=_CLIPPING_MODE.value,
                                       normalize_gamma=_NORMALIZE_GAMMA.value,
                                       noise=_NOISE.value, l1_norm_clip=_L1_NORM_CLIP.value,
                                       discrete_rounding_inflation=(
                                           _DISCRETE_ROUNDING_INFLATION.value),
                                       layer_noise=_LAYER_NOISE.value,
                                       adaptive_clip_quantile=_ADAPTIVE_CLIP_QUANTILE.value,
                                       adaptive_clip_learning_rate=(
                                           _ADAPTIVE_CLIP_LEARNING_RATE.value),
                                       adaptive_clip_count_stddev=(
                                           _ADAPTIVE_CLIP_COUNT_STDDEV.value),
                                       noise_schedule=_NOISE_SCHEDULE.value,
                                       noise_schedule_end_factor=_NOISE_SCHEDULE_END_FACTOR.value,
                                       noise_schedule_step_epochs=(
                                           _NOISE_SCHEDULE_STEP_EPOCHS.value),
                                       noise_schedule_step_gamma=_NOISE_SCHEDULE_STEP_GAMMA.value,
                                       dice_error_clip=_DICE_ERROR_CLIP.value,
                                       normalization_noise_multiplier=(
                                           _NORMALIZATION_NOISE_MULTIPLIER.value)),
      optimizer=config_lib.OptimizerConfig(name=_OPTIMIZER.value,
                                           learning_rate=_LEARNING_RATE.value,
                                           momentum=_MOMENTUM.value,
                                           hyperparameters=_optimizer_hyperparameters(),
                                           lr_schedule=_LR_SCHEDULE.value,
                                           end_learning_rate=_END_LEARNING_RATE.value,
                                           warmup_epochs=_WARMUP_EPOCHS.value,
                                           weight_decay=_WEIGHT_DECAY.value),
      run=config_lib.RunConfig(batch_size=_BATCH_SIZE.value,
                               physical_batch_size=_PHYSICAL_BATCH_SIZE.value,
                               epochs=_EPOCHS.value, seed=_SEED.value,
                               output_dir=_OUTPUT_DIR.value, export_dir=_EXPORT_DIR.value,
                               export=_EXPORT.value,
                               jit_compile=_JIT_COMPILE.value, ema_decay=_EMA_DECAY.value,
                               reproducible_noise=_REPRODUCIBLE_NOISE.value,
                               monitor_private_metrics=_MONITOR_PRIVATE_METRICS.value,
                               distribution=_DISTRIBUTION.value,
                               cpu_replicas=_CPU_REPLICAS.value),
      probe=config_lib.ProbeConfig(steps=_LINEAR_PROBE_STEPS.value,
                                   batch_size=_PROBE_BATCH_SIZE.value,
                                   learning_rate=_PROBE_LEARNING_RATE.value,
                                   epsilon_fraction=_PROBE_EPSILON_FRACTION.value,
                                   noise_multiplier=_PROBE_NOISE_MULTIPLIER.value))


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
