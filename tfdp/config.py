"""Frozen, self-validating configs. Flags are parsed into these once, at the entry point.

Every check raises ValueError with a message that names the offending value and the valid range, so
that a bad command line fails before any work is done. A field that is also a flag of tfdp.train
carries the flag's help (and, where needed, its name and choices) in its metadata, from which
tfdp.config_flags defines the flag: each default is written once, here.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from tfdp.data import canaries
from tfdp.data import datasets
from tfdp.data import feature_augment
from tfdp.data import local_dp as local_dp_lib
from tfdp.data import preprocess
from tfdp.data import sampling as sampling_lib
from tfdp.dp import clipping as clipping_lib
from tfdp.dp import groups
from tfdp.dp import losses
from tfdp import models
from tfdp.models import scatter
from tfdp import names
from tfdp import optimizers
from tfdp import precision as precision_lib
from tfdp.optimizers import lr_schedules
from tfdp.privacy import mechanisms
from tfdp.privacy.mechanisms import linear_probe
from tfdp.privacy.mechanisms import scatter_statistics
from tfdp.privacy import schedules
from tfdp import recipes

# Rows per compiled chunk when --physical_batch_size is not given, per clipping engine. TF Privacy's
# vectorized per-example gradients cost superlinearly in the chunk size on conv nets (pfor falls back
# to a loop for the filter gradient): ResNet-20 measured 124, 107, 66, 31, 16 examples/s at chunks of
# 4, 8, 16, 32, 64. The fast engine is linear in the chunk size; larger chunks amortize overhead.
DEFAULT_CHUNK = {"vectorized": 8, "fast": 64}
ACCOUNTANTS = ("rdp", "pld")
# The keys of tfdp.training.distribution.STRATEGIES (tests/test_distribution.py checks): training
# builds the strategies and sits above the configs, so the configs keep the names they check.
STRATEGY_NAMES = ("mirrored", "multi_worker", "none")
# How much a run prints (--progress), least first (tfdp.training.reporting.Console says what each
# adds). The flag is not --verbosity: absl.logging defines that one, for its own log lines.
PROGRESS_LEVELS = ("quiet", "normal", "verbose")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _flag(default: Any, help_text: str, *, name: Optional[str] = None,
          choices: Optional[Callable[[], Sequence[str]]] = None,
          parse: Optional[Callable[[str], Any]] = None) -> Any:
  """A field that is also a command-line flag (tfdp.config_flags reads the metadata).

  Args:
    default: The field's default, which is the flag's.
    help_text: The flag's help.
    name: The flag's name, where it is not the field's.
    choices: Returns the flag's valid values (an enum flag), from the registry that checks them;
      called when the flag is defined, so that the list is the registry's at that time.
    parse: Maps the flag's text to the field's value, for a type no flag has (a string flag).

  Returns:
    A dataclasses.field.
  """
  return dataclasses.field(default=default, metadata={
      "help": help_text, "flag_name": name, "choices": choices, "parse": parse})


def _augment_names():
  """--augment's names: image augmentations, then the cached-feature policies."""
  return sorted(preprocess.AUGMENTATIONS) + sorted(feature_augment.POLICIES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  dataset: str = _flag("digits", "Dataset name.", choices=lambda: sorted(datasets.DATASETS))
  data_dir: Optional[str] = _flag(None, "Dataset directory (folder: train/ and test/).")
  train_examples: Optional[int] = _flag(
      None, "Keep a subset of this many training examples, chosen by the public --seed: which "
      "examples are in it is public, and the guarantee covers the examples in it. The accountant "
      "uses this N.")
  sampling: str = _flag(
      "poisson", "poisson (what the accountant assumes) or shuffle (reported as such).",
      choices=lambda: list(sampling_lib.SAMPLERS))
  augment: Optional[str] = _flag(
      None, "Training augmentation (keras-cv for randaugment and augmix); default: the dataset's. "
      "ScatterNet models take the scatter_* policies, which augment the cached features (image "
      "flips cached once, map translations per step).",
      choices=lambda: _augment_names())
  augmult: int = _flag(
      1, "Augmented copies of each sampled example; its gradient is the mean over the copies, "
      "clipped as one (De et al. 2022): no privacy cost, augmult times the compute.")
  local_dp: str = _flag(
      "none", "Local DP: perturb every training image once, before training, with Laplace noise "
      "of scale --local_dp_scale per pixel value; training only sees the perturbed copy. Reports "
      "ε per image (H·W·C·255/β, replace-one) and 255/β per pixel.",
      choices=lambda: local_dp_lib.NAMES)
  local_dp_scale: Optional[float] = _flag(None, "β of --local_dp, in pixel values (0..255).")
  # The one-run audit (tfdp.privacy.audit) with canaries (tfdp.data.canaries).
  audit_canaries: int = _flag(
      0, "The one-run privacy audit (Steinke et al. 2023): this many canaries, each trained on "
      "with probability 1/2 (they count in N); after training, an empirical lower bound on ε at "
      "95% and loss-threshold membership inference, reported beside the proven ε (not covered by "
      "it). 0: no audit.")
  audit_canary_type: str = _flag(
      "mislabeled", "mislabeled: training images with a random wrong label; noise: random-pixel "
      "images with random labels.", choices=lambda: canaries.KINDS)
  audit_seed: Optional[int] = _flag(
      None, "Seed of the canaries and their inclusion (tests); default: drawn from a secure "
      "source and kept only in output_dir/audit/ until the audit.")
  # Which training files are unusable is a fact about the private data: skipping them releases
  # how many in metrics.json, outside the guarantee (names only on the console, as a file's name
  # can itself be private); failing releases nothing.
  skip_bad_images: bool = _flag(
      False, "--dataset=folder: leave out image files that cannot be used (empty, not an image, "
      "truncated, a size or channel count that does not convert), name them on the console "
      "and record their count in metrics.json (skipped_images). Which training files are bad "
      "is a fact about the private data: that record is NOT covered by the privacy guarantee; N "
      "counts the images kept. Default: the run stops before training, naming every bad file.")

  def __post_init__(self):
    local_dp_lib.check_name(self.local_dp)
    _require((self.local_dp == "none") == (self.local_dp_scale is None),
             "--local_dp_scale goes with --local_dp (and --local_dp with a scale)")
    _require(self.local_dp_scale is None or self.local_dp_scale > 0,
             f"local_dp_scale must be > 0, got {self.local_dp_scale}")
    if self.augment is not None:  # None: the dataset's own.
      names.check("augment", self.augment, _augment_names())
    _require(self.augmult >= 1, f"augmult must be >= 1, got {self.augmult}")
    _require(self.audit_canaries == 0 or self.audit_canaries >= 2,
             f"audit_canaries must be 0 (no audit) or >= 2, got {self.audit_canaries}")
    canaries.check_name(self.audit_canary_type)
    datasets.check_name(self.dataset)
    sampling_lib.check_name(self.sampling)
    _require(self.train_examples is None or self.train_examples > 0,
             f"train_examples must be > 0, got {self.train_examples}")
    _require(not self.skip_bad_images or self.dataset == "folder",
             f"--skip_bad_images applies to --dataset=folder (the one that reads image files one "
             f"by one), not --dataset={self.dataset}: drop it")


def _parse_value(text: str):
  """'3' -> 3, '0.5' -> 0.5, 'true'/'false' -> bool, anything else stays a string."""
  for parse in (int, float):
    try:
      return parse(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def model_options(items, **dedicated) -> Tuple[Tuple[str, Any], ...]:
  """ModelConfig.options from `--model_kwargs` items ('key=value') and dedicated flags.

  A dedicated flag (e.g. weight_standardization=False) wins over the same key in `items`; None
  means not given.
  """
  options = {}
  for item in items:
    key, sep, value = item.partition("=")
    _require(bool(sep and key.strip()), f"--model_kwargs entries must be key=value, got {item!r}")
    options[key.strip()] = _parse_value(value.strip())
  options.update({k: v for k, v in dedicated.items() if v is not None})
  return tuple(sorted(options.items()))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  name: str = _flag("cnn", "Model name.", name="model", choices=lambda: sorted(models.MODELS))
  # Builder keyword options, e.g. (("depth", 40),): --model_kwargs and the dedicated model flags.
  options: Tuple[Tuple[str, Any], ...] = ()
  loss: str = _flag("cross_entropy", "Per-example loss; hinge with --model=linear is a linear SVM.",
                    choices=lambda: sorted(losses.LOSSES))
  # A prior (tfdp.pretrain's output) whose encoder initializes the model; public, no privacy cost.
  init_from: Optional[str] = _flag(
      None, "A prior for the encoder (every layer before the logits): a folder written by python "
      "-m tfdp.pretrain (its prior/ or the run folder) or a shipped one such as "
      "priors/resnet20_randp. Made from random-process images only, it costs no privacy; its card "
      "goes into the metrics and model card. The head starts fresh.")
  precision: str = _flag(
      "float32", "float32, mixed_bfloat16 or mixed_float16: layers compute in 16 bits (float32 "
      "variables); per-example norms, clipping, the clipped sum, the noise and the update stay "
      "float32. mixed_bfloat16 is refused on a CPU without bfloat16 arithmetic (AVX512_BF16 or "
      "AMX) and was slower than float32 on the AVX512_BF16 CPUs measured (docs/speed.md); "
      "mixed_float16 is for GPUs and refused on a CPU.",
      choices=lambda: list(precision_lib.PRECISIONS))
  loss_scale: float = _flag(
      1.0, "With --precision=mixed_float16: a fixed, public loss scale S (a power of two). Each "
      "example's loss is multiplied by S before the float16 backward pass and its gradient divided "
      "by S after, in float32, so small gradients do not flush to zero; an example whose gradient "
      "overflows is dropped (it adds 0). Keras's dynamic loss scale is refused: it would follow "
      "the private data.")

  def __post_init__(self):
    models.check_name(self.name)
    models.registry.check_options(self.name, dict(self.options))
    losses.check_name(self.loss)
    precision_lib.check(self.precision)
    precision_lib.check_loss_scale(self.precision, self.loss_scale)

  @property
  def kwargs(self) -> Dict[str, Any]:
    return dict(self.options)


def _parse_clip_groups(text: Optional[str]) -> Optional[Union[int, str]]:
  """--clip_groups: None, 'layer' or a count; the count's range is PrivacyConfig's to check."""
  if text is None or text == "layer":
    return text
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"clip_groups must be a positive integer or 'layer', got {text!r}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
  epsilon: Optional[float] = _flag(None, "Target ε: the noise is calibrated to it.")
  delta: float = _flag(1e-5, "δ of the (ε, δ) guarantee; must be < 1/N.")
  noise_multiplier: Optional[float] = _flag(
      None, "σ (noise std / clip norm); without --epsilon, ε is only reported.")
  l2_norm_clip: float = _flag(1.0, "Per-example L2 clip norm C.")
  # "vectorized" is TF Privacy's engine, the reference the fast one is tested against.
  clipping: str = _flag(
      "fast", "Per-example gradient engine: fast (per-layer closed forms) or vectorized (TF "
      "Privacy's Jacobian, the slow reference).",
      choices=lambda: sorted(clipping_lib.CLIPPING_ENGINES))
  clip_groups: Optional[Union[int, str]] = _flag(
      None, "Grouped clipping: K (contiguous groups of layers) or 'layer'; each group is clipped "
      "to C/sqrt(groups), total sensitivity C.", parse=_parse_clip_groups)
  clipping_mode: str = _flag(
      "clip", "clip: g * min(1, C/||g||); normalize: g * C / (||g|| + gamma) (automatic "
      "clipping, Bu et al. 2022). Both have sensitivity C, so the accountant is the same.",
      choices=lambda: list(groups.SCALINGS))
  normalize_gamma: float = _flag(  # Bu et al. 2022's default.
      0.01, "gamma of --clipping_mode=normalize (> 0).")
  noise: str = _flag(
      "gaussian", "gaussian (float64 Box-Muller, radius capped at 12.13σ: its 2^-106 per "
      "coordinate is added to δ); discrete_gaussian: the clipped sum rounded to an integer grid "
      "plus discrete Gaussian noise, no float noise released (its sampler's distance from the "
      "ideal is added to δ), accounted by RDP with a general subsampling bound (a larger ε at the "
      "same σ); or laplace: per-example L1 clipping to --l1_norm_clip and Laplace noise per "
      "coordinate, accounted by PLD, not hardened (needs --clipping=vectorized).",
      choices=lambda: list(mechanisms.NOISES))
  l1_norm_clip: float = _flag(1.0, "Per-example L1 clip norm (--noise=laplace).")
  # 1% costs 1% more noise.
  discrete_rounding_inflation: float = _flag(
      0.01, "--noise=discrete_gaussian: grid step chosen so that rounding inflates the "
      "sensitivity by this fraction (the noise grows with it).")
  layer_noise: str = _flag(
      "uniform", "Noise std per clipping group: uniform, or depth_decay (group k ∝ 1/(k+1)); the "
      "accountant uses the effective σ = 1/sqrt(Σ C_k²/s_k²). Needs --clip_groups.",
      choices=lambda: list(mechanisms.LAYER_NOISE))
  adaptive_clip_quantile: Optional[float] = _flag(  # 0.5 clips to the median.
      None, "Adaptive clipping (Andrew et al. 2021) to this quantile of per-example norms, e.g. "
      "0.5; --l2_norm_clip is the initial clip.")
  adaptive_clip_learning_rate: float = _flag(  # Andrew et al.'s geometric-update rate.
      0.2, "Geometric learning rate of the adaptive clip.")
  adaptive_clip_count_stddev: Optional[float] = _flag(  # Andrew et al.'s expected batch / 20.
      None, "Noise std of the unclipped count; default batch_size/20.")
  noise_schedule: str = _flag(  # tfdp.privacy.schedules; σ changes at epoch boundaries.
      "constant", "σ per epoch, fixed before training; calibration scales the whole schedule to "
      "--epsilon.", choices=lambda: list(schedules.SCHEDULES))
  noise_schedule_end_factor: float = _flag(
      0.5, "linear_decay/cosine: last epoch's σ over the first's.")
  noise_schedule_step_epochs: int = _flag(1, "step schedule: epochs between steps.")
  noise_schedule_step_gamma: float = _flag(0.9, "step schedule: σ factor at each step.")
  # DiceSGD's C2 >= C1 = l2_norm_clip bounds the error of the summed gradient. None: C2 = C1.
  dice_error_clip: Optional[float] = _flag(
      None, "DiceSGD's error clip C2 >= --l2_norm_clip, on the error of the summed gradient (the "
      "paper's C2 times the batch size); default C2 = C1. DiceSGD has no proven DP guarantee: it "
      "takes --noise_multiplier, not --epsilon.")
  # σ_n of the DP feature statistics of normalization="statistics" (tfdp.dp.feature_statistics):
  # Tramèr & Boneh's 8 ("bn_noise_multiplier" of their CIFAR-10 runs). Two Gaussian releases at
  # q = 1, composed ahead of the steps.
  normalization_noise_multiplier: float = _flag(
      8.0, "σ of the DP per-map mean and variance that --model_kwargs=normalization=statistics "
      "(ScatterNet models) releases once before training; composed into ε.")

  def __post_init__(self):
    _require(self.epsilon is None or self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")
    _require(0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
    _require(self.noise_multiplier is None or self.noise_multiplier >= 0,
             f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
    _require(self.l2_norm_clip > 0, f"l2_norm_clip must be > 0, got {self.l2_norm_clip}")
    _require(self.normalization_noise_multiplier > 0,
             f"normalization_noise_multiplier must be > 0, got "
             f"{self.normalization_noise_multiplier}")
    clipping_lib.check_name(self.clipping)
    self.scaling  # pylint: disable=pointless-statement  (validates mode and gamma, naming them)
    _require(self.clip_groups is None or self.clip_groups == "layer"
             or (isinstance(self.clip_groups, int) and self.clip_groups >= 1),
             f"clip_groups must be a positive integer or 'layer', got {self.clip_groups!r}")
    _require(self.l1_norm_clip > 0, f"l1_norm_clip must be > 0, got {self.l1_norm_clip}")
    _require(self.noise_schedule in schedules.SCHEDULES,
             f"unknown noise_schedule {self.noise_schedule!r}; valid: "
             f"{', '.join(schedules.SCHEDULES)}")
    schedules.check_params(self.schedule_params)
    mechanisms.check(self.settings())  # The noise, its settings and their combinations.

  def settings(self, optimizer: Optional[str] = None, batch_size: int = 1,
               target_epsilon: Optional[float] = None) -> mechanisms.Settings:
    """These settings as the mechanisms read them (tfdp.privacy.mechanisms.Settings); the
    optimizer None when not known yet."""
    shared = {field.name: getattr(self, field.name)
              for field in dataclasses.fields(mechanisms.Settings) if hasattr(self, field.name)}
    return mechanisms.Settings(optimizer=optimizer, batch_size=batch_size,
                               target_epsilon=target_epsilon, **shared)

  @property
  def schedule_params(self) -> Dict[str, float]:
    return {"end_factor": self.noise_schedule_end_factor,
            "step_epochs": self.noise_schedule_step_epochs,
            "step_gamma": self.noise_schedule_step_gamma}

  @property
  def clip_norm(self) -> float:
    """The per-example bound of the chosen noise: L1 for Laplace, L2 otherwise."""
    return self.l1_norm_clip if self.noise == "laplace" else self.l2_norm_clip

  @property
  def norm(self) -> str:
    return "l1" if self.noise == "laplace" else "l2"

  @property
  def scaling(self):
    """The per-example rule (tfdp.dp.groups.Scaling): clip, or normalize with gamma."""
    return groups.Scaling(mode=self.clipping_mode, gamma=self.normalize_gamma)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
  name: str = _flag("dp_sgd", "Optimizer name.", name="optimizer",
                    choices=lambda: sorted(optimizers.OPTIMIZERS))
  learning_rate: Optional[float] = _flag(
      None, "Learning rate; default: the optimizer's usual one.")
  momentum: float = _flag(0.0, "Momentum (sgd and rmsprop variants).")
  # Keras keyword arguments of the update rule, e.g. (("epsilon", 1e-3),) for Adam: the dedicated
  # flags (--epsilon_adam, --beta_1, ...). Post-processing of the noised gradient: no privacy cost.
  hyperparameters: Tuple[Tuple[str, Any], ...] = ()
  lr_schedule: str = _flag("constant", "Learning-rate schedule over the planned steps.",
                           choices=lambda: list(lr_schedules.LR_SCHEDULES))
  end_learning_rate: float = _flag(0.0, "Where cosine schedules end (e.g. 9e-5).")  # The studies'.
  warmup_epochs: float = _flag(0.0, "warmup_cosine: linear warm-up epochs.")
  weight_decay: float = _flag(0.0, "λ·w added to the noised gradient (post-processing).")

  def __post_init__(self):
    lr_schedules.check_name(self.lr_schedule)
    _require(self.end_learning_rate >= 0,
             f"end_learning_rate must be >= 0, got {self.end_learning_rate}")
    _require(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
    _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
    optimizers.check_name(self.name)
    optimizers.check_hyperparameters(self.name, dict(self.hyperparameters))
    _require(self.learning_rate is None or self.learning_rate > 0,
             f"learning_rate must be > 0, got {self.learning_rate}")
    _require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")

  @property
  def private(self) -> bool:
    return optimizers.is_private(self.name)

  @property
  def step_size(self) -> float:
    return self.learning_rate or optimizers.default_learning_rate(self.name)

  @property
  def proven(self) -> bool:
    """False for a private optimizer whose reported ε no proof backs (DiceSGD)."""
    return not self.private or optimizers.has_privacy_proof(self.name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  batch_size: int = _flag(64, "Expected batch size (q = batch_size / N).")
  physical_batch_size: Optional[int] = _flag(  # None: DEFAULT_CHUNK.
      None, "Rows per compiled chunk (bounds memory); default min(batch_size, 64) (8 with "
      "--clipping=vectorized). Changes speed, never the mechanism.")
  epochs: int = _flag(1, "Epochs (steps per epoch = ceil(N / batch_size)).")
  seed: int = _flag(
      0, "Public seed: initialization, augmentation, the --train_examples subset and evaluation "
      "order only. The mechanism's sampling and noise never depend on it (they come from a secure "
      "random source) unless --reproducible_noise is given.")
  output_dir: str = _flag(
      "runs/default", "Run directory: checkpoints, metrics.json, TensorBoard, SavedModel. An "
      "existing run there is resumed.")
  export_dir: Optional[str] = _flag(
      None, "TF Serving base directory: each export is its next version <export_dir>/<N>/; "
      "default saved_models/<run name>.")
  # On by default; off for quick experiments, as export is slow.
  export: bool = _flag(True, "Write the SavedModel (and its copy).")
  jit_compile: bool = _flag(False, "Compile the per-chunk step with XLA.")
  ema_decay: Optional[float] = _flag(
      None, "EMA of the weights (warm-up min(decay, (1+t)/(10+t))), used for evaluation and "
      "export; e.g. 0.999.")
  reproducible_noise: bool = _flag(
      False, "Debugging only: derive Poisson sampling and noise from --seed so two runs repeat "
      "exactly. Such a run has NO differential-privacy guarantee against anyone who knows the "
      "seed, and its metrics and model card say so.")
  # Off: a private run releases nothing its guarantee does not cover.
  monitor_private_metrics: bool = _flag(
      False, "Private runs: also show and record the training batches' loss and accuracy. They "
      "are computed from the private data without noise, so the guarantee does not cover them; "
      "they are labelled NOT PRIVATE in the logs, TensorBoard, metrics.json and the model card. "
      "Off by default: a private run releases only what the guarantee covers.")
  distribution: str = _flag(
      "none", "Data parallelism: 'mirrored' deals each step's chunks out to every visible GPU (or "
      "--cpu_replicas CPU devices); 'multi_worker' runs one replica per process of the TF_CONFIG "
      "cluster, each drawing its shard. Clipped sums are all-reduced and the noise added once: "
      "same mechanism and ε.", choices=lambda: STRATEGY_NAMES)
  cpu_replicas: Optional[int] = _flag(
      None, "With --distribution=mirrored: this many logical CPU devices instead of the GPUs (for "
      "testing on a CPU machine).")
  # Evaluation reads only the test split, never the private training set: how often and on how
  # much changes speed and what is shown, never the privacy of the run.
  eval_every: int = _flag(
      1, "Evaluate on the test split every this many epochs (the last epoch always).")
  eval_examples: Optional[int] = _flag(  # None: the whole test split.
      None, "Evaluate on the first this many test examples; default: all. metrics.json records "
      "how many each evaluation used (test_examples).")
  recipe: str = _flag(
      "none", "auto: choose the model, batch size, epochs, learning rate, clip norm, noise split, "
      "augmentation and EMA from public facts alone (N, image shape, number of classes, "
      "ε, δ, --time_budget_minutes, the CPU kind) by the rule written in docs/recipes.md; the "
      "flags it chooses may not be given too. The card records it.",
      choices=lambda: list(recipes.RECIPES))
  time_budget_minutes: float = _flag(
      60.0, "--recipe=auto: the wall-clock minutes the whole run may take, estimated from "
      "speeds measured per CPU kind (docs/recipes.md).")
  # Set by tfdp.recipes.apply (no flag): the recipe's rule, facts and choices, for the card.
  recipe_record: Tuple[Tuple[str, Any], ...] = ()
  progress: str = _flag(
      "normal", "What the run prints. quiet: only the result; normal: one line per epoch and the "
      "privacy statement at the start and the end; verbose: also per-step progress, the full "
      "statement every epoch and TensorFlow's warnings.", choices=lambda: PROGRESS_LEVELS)

  @property
  def distributed(self) -> bool:
    return self.distribution != "none"

  def __post_init__(self):
    names.check("distribution", self.distribution, STRATEGY_NAMES)
    recipes.check_name(self.recipe)
    _require(self.time_budget_minutes > 0,
             f"time_budget_minutes must be > 0, got {self.time_budget_minutes}")
    _require(self.cpu_replicas is None or (self.distributed and self.cpu_replicas >= 1),
             f"cpu_replicas={self.cpu_replicas} needs --distribution=mirrored and a value >= 1")
    _require(not (self.distributed and self.jit_compile),
             "--jit_compile is not supported with --distribution yet: drop one")
    _require(self.ema_decay is None or 0 < self.ema_decay < 1,
             f"ema_decay must be in (0, 1), got {self.ema_decay}")
    _require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
    _require(self.physical_batch_size is None or self.physical_batch_size > 0,
             f"physical_batch_size must be > 0, got {self.physical_batch_size}")
    _require(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
    _require(bool(self.output_dir), "output_dir must not be empty")
    _require(self.eval_every >= 1, f"eval_every must be >= 1 (epochs), got {self.eval_every}")
    _require(self.eval_examples is None or self.eval_examples >= 1,
             f"eval_examples must be >= 1 (or unset: all), got {self.eval_examples}")
    names.check("progress", self.progress, PROGRESS_LEVELS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeConfig:
  """DP linear probing before the main steps (DP-RandP phase II, tfdp.training.linear_probe)."""
  steps: int = _flag(
      0, "DP-RandP phase II: DP steps on the head alone, on the frozen encoder's features, before "
      "the main steps train the whole network (0: none).", name="linear_probe_steps")
  batch_size: Optional[int] = _flag(  # None: q = 1.
      None, "The probe's expected batch; default: the whole set.", name="probe_batch_size")
  # Per step the head's logits move by about lr * |mean clipped gradient| * |features|, and a
  # GroupNorm + ReLU + pooling encoder gives features of norm about sqrt(width) (8 for ResNet-20,
  # measured on random-process images): lr 1 moves them by a few units. DP-RandP's 10-15 assumes
  # features of norm about 1.
  learning_rate: float = _flag(1.0, "The probe's DP-SGD learning rate.",
                               name="probe_learning_rate")
  # The main steps' σ makes probe + main spend the target exactly (to 1%).
  epsilon_fraction: float = _flag(
      0.1, "The share of --epsilon the probe alone spends (its σ is calibrated to it); the main "
      "steps' σ makes both together spend --epsilon.", name="probe_epsilon_fraction")
  noise_multiplier: Optional[float] = _flag(
      None, "The probe's σ, instead of --probe_epsilon_fraction.", name="probe_noise_multiplier")

  def __post_init__(self):
    _require(self.steps >= 0, f"linear_probe_steps must be >= 0, got {self.steps}")
    _require(self.batch_size is None or self.batch_size > 0,
             f"probe_batch_size must be > 0, got {self.batch_size}")
    _require(self.learning_rate > 0, f"probe_learning_rate must be > 0, got {self.learning_rate}")
    _require(0 < self.epsilon_fraction < 1,
             f"probe_epsilon_fraction must be in (0, 1), got {self.epsilon_fraction}")
    _require(self.noise_multiplier is None or self.noise_multiplier > 0,
             f"probe_noise_multiplier must be > 0, got {self.noise_multiplier}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
  """A whole training run."""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  privacy: PrivacyConfig = PrivacyConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  run: RunConfig = RunConfig()
  probe: ProbeConfig = ProbeConfig()

  @property
  def chunk_size(self) -> int:
    """Rows per compiled chunk: --physical_batch_size, else the engine's default."""
    default = DEFAULT_CHUNK[self.privacy.clipping] if self.optimizer.private else 64
    return self.run.physical_batch_size or min(self.run.batch_size, default)

  def __post_init__(self):
    _require(self.run.recipe == "none" or self.privacy.epsilon is not None,
             f"--recipe={self.run.recipe} plans a private run to a target: give --epsilon "
             "(and --delta)")
    if self.optimizer.private:
      _require(self.privacy.epsilon is not None or self.privacy.noise_multiplier is not None,
               f"optimizer {self.optimizer.name} needs --epsilon (calibrate the noise) or "
               "--noise_multiplier")
    else:
      _require(self.privacy.epsilon is None and self.privacy.noise_multiplier is None,
               f"optimizer {self.optimizer.name} is not private: --epsilon/--noise_multiplier "
               "need a dp_* optimizer")
    _require(self.optimizer.warmup_epochs < self.run.epochs,
             f"warmup_epochs ({self.optimizer.warmup_epochs}) must be shorter than the run "
             f"({self.run.epochs} epochs)")
    _require(self.run.distribution != "multi_worker" or self.data.sampling == "poisson",
             "--distribution=multi_worker draws each worker's shard by Poisson sampling: "
             "--sampling must be poisson")
    _require(not (self.run.distribution == "multi_worker" and self.data.local_dp != "none"),
             "--local_dp with --distribution=multi_worker would perturb the images once per "
             "worker (several releases): not supported")
    _require(not (self.run.distribution == "multi_worker" and self.data.audit_canaries),
             "--audit_canaries with --distribution=multi_worker would draw the canaries once "
             "per worker: not supported")
    _require(not (self.run.distributed and self.probe.steps),
             "--distribution does not support --linear_probe_steps yet")
    replicas = self.run.cpu_replicas or 1
    _require(-(-self.run.batch_size // self.chunk_size) >= replicas,
             f"batch_size {self.run.batch_size} in chunks of {self.chunk_size} gives fewer "
             f"chunks than the {replicas} replicas: lower --physical_batch_size to at most "
             f"{self.run.batch_size // replicas}")
    mechanisms.check(self.mechanism_settings)  # With the optimizer known (DiceSGD's checks).
    self._check_probe()
    self._check_statistics()

  def _check_statistics(self):
    if not scatter.uses_statistics(self.model.name, self.model.kwargs):
      return
    _require(self.run.distribution != "multi_worker",
             "normalization=statistics with --distribution=multi_worker would release the "
             "statistics once per worker: not supported")
    scatter_statistics.MECHANISM.check_run(
        private=self.optimizer.private, noise=self.privacy.noise, proven=self.optimizer.proven,
        optimizer=self.optimizer.name)

  def _check_probe(self):
    if not self.probe.steps:
      return
    linear_probe.MECHANISM.check_run(
        private=self.optimizer.private, proven=self.optimizer.proven, noise=self.privacy.noise,
        optimizer=self.optimizer.name, target_epsilon=self.privacy.epsilon,
        probe_noise_multiplier=self.probe.noise_multiplier)
    _require(self.model.name not in scatter.FRONT_MODELS,
             f"--model={self.model.name} already trains only a head on frozen features: "
             "--linear_probe_steps would add nothing")

  @property
  def mechanism_settings(self) -> mechanisms.Settings:
    """The steps' mechanism settings (tfdp.privacy.mechanisms.Settings) of this run."""
    return self.privacy.settings(self.optimizer.name, self.run.batch_size, self.privacy.epsilon)

  @property
  def adaptive_clip_count_stddev(self) -> float:
    """The unclipped count's noise std: as given, else expected batch / 20 (Andrew et al.)."""
    return self.privacy.adaptive_clip_count_stddev or self.run.batch_size / 20
