"""Frozen, self-validating configs. Flags are parsed into these once, at the entry point.

Every check raises ValueError with a message that names the offending value and the valid range, so
that a bad command line fails before any work is done.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

SAMPLINGS = ("poisson", "shuffle")
# Rows per compiled chunk when --physical_batch_size is not given, per clipping engine. TF Privacy's
# vectorized per-example gradients cost superlinearly in the chunk size on conv nets (pfor falls back
# to a loop for the filter gradient): ResNet-20 measured 124, 107, 66, 31, 16 examples/s at chunks of
# 4, 8, 16, 32, 64. The fast engine is linear in the chunk size; larger chunks amortize overhead.
DEFAULT_CHUNK = {"vectorized": 8, "fast": 64}
ACCOUNTANTS = ("rdp", "pld")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  dataset: str = "digits"
  data_dir: Optional[str] = None
  train_examples: Optional[int] = None  # Seeded subset of the training split; None keeps all.
  sampling: str = "poisson"  # What the accountant assumes; 'shuffle' is reported as such.
  augment: Optional[str] = None  # None: the dataset's default.
  augmult: int = 1  # Augmented copies per example, averaged before clipping (De et al. 2022).
  # Local DP (tfdp.data.local_dp): every training image perturbed once before training.
  local_dp: str = "none"  # 'none' or a key of tfdp.data.local_dp.MECHANISMS ('laplace').
  local_dp_scale: Optional[float] = None  # β, in pixel values of the 0..255 range.
  # The one-run audit (tfdp.privacy.audit): canaries (tfdp.data.canaries), each trained on with
  # probability 1/2 by the auditor's coins; 0 turns it off.
  audit_canaries: int = 0
  audit_canary_type: str = "mislabeled"  # 'mislabeled' training images or 'noise' images.
  audit_seed: Optional[int] = None  # None: the auditor's coins come from a secure source.

  def __post_init__(self):
    from tfdp import data  # Deferred: the registry imports TensorFlow.
    from tfdp.data import local_dp  # pylint: disable=import-outside-toplevel
    _require(self.local_dp == "none" or self.local_dp in local_dp.MECHANISMS,
             f"unknown local_dp {self.local_dp!r}; valid: none, "
             f"{', '.join(sorted(local_dp.MECHANISMS))}")
    _require((self.local_dp == "none") == (self.local_dp_scale is None),
             "--local_dp_scale goes with --local_dp (and --local_dp with a scale)")
    _require(self.local_dp_scale is None or self.local_dp_scale > 0,
             f"local_dp_scale must be > 0, got {self.local_dp_scale}")
    _require(self.augment is None or self.augment in data.AUGMENTATIONS,
             f"unknown augment {self.augment!r}; valid: {', '.join(sorted(data.AUGMENTATIONS))}")
    _require(self.augmult >= 1, f"augmult must be >= 1, got {self.augmult}")
    from tfdp.data import canaries  # pylint: disable=import-outside-toplevel
    _require(self.audit_canaries == 0 or self.audit_canaries >= 2,
             f"audit_canaries must be 0 (no audit) or >= 2, got {self.audit_canaries}")
    _require(self.audit_canary_type in canaries.KINDS,
             f"unknown audit_canary_type {self.audit_canary_type!r}; valid: "
             f"{', '.join(canaries.KINDS)}")
    _require(self.dataset in data.DATASETS,
             f"unknown dataset {self.dataset!r}; valid: {', '.join(sorted(data.DATASETS))}")
    _require(self.sampling in SAMPLINGS,
             f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")
    _require(self.train_examples is None or self.train_examples > 0,
             f"train_examples must be > 0, got {self.train_examples}")


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
  name: str = "cnn"
  options: Tuple[Tuple[str, Any], ...] = ()  # Builder keyword options, e.g. (("depth", 40),).
  loss: str = "cross_entropy"  # "hinge" with the linear model is a linear SVM.
  # A prior (tfdp.pretrain's output) whose encoder initializes the model; public, no privacy cost.
  init_from: Optional[str] = None

  def __post_init__(self):
    from tfdp.dp import losses
    from tfdp import models
    _require(self.name in models.MODELS,
             f"unknown model {self.name!r}; valid: {', '.join(sorted(models.MODELS))}")
    models.registry.check_options(self.name, dict(self.options))
    _require(self.loss in losses.LOSSES,
             f"unknown loss {self.loss!r}; valid: {', '.join(sorted(losses.LOSSES))}")

  @property
  def kwargs(self) -> Dict[str, Any]:
    return dict(self.options)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
  epsilon: Optional[float] = None  # Target ε: calibrate σ to it, and never exceed it.
  delta: float = 1e-5
  noise_multiplier: Optional[float] = None  # Given σ: report the resulting ε instead.
  l2_norm_clip: float = 1.0
  clipping: str = "fast"  # Per-example gradient engine; "vectorized" is TF Privacy's, the reference.
  clip_groups: Optional[Union[int, str]] = None  # None: flat; K or "layer": each group to C/sqrt(G).
  clipping_mode: str = "clip"  # "normalize": g * C / (||g|| + gamma), automatic clipping.
  normalize_gamma: float = 0.01  # Bu et al. 2022's default.
  noise: str = "gaussian"  # "laplace": L1 clipping to l1_norm_clip, Laplace noise, PLD accountant.
  l1_norm_clip: float = 1.0  # Per-example L1 clip norm (noise="laplace" only).
  # noise="discrete_gaussian": the integer grid is fine enough that rounding the clipped sum
  # inflates its sensitivity by this fraction (1% costs 1% more noise).
  discrete_rounding_inflation: float = 0.01
  layer_noise: str = "uniform"  # "depth_decay": group k's noise std ∝ 1/(k+1); needs clip_groups.
  adaptive_clip_quantile: Optional[float] = None  # Andrew et al. 2021; 0.5 clips to the median.
  adaptive_clip_learning_rate: float = 0.2  # Andrew et al.'s geometric-update rate.
  adaptive_clip_count_stddev: Optional[float] = None  # None: expected batch / 20 (Andrew et al.).
  noise_schedule: str = "constant"  # tfdp.privacy.schedules; σ changes at epoch boundaries.
  noise_schedule_end_factor: float = 0.5  # linear_decay/cosine: last epoch's σ over the first's.
  noise_schedule_step_epochs: int = 1  # step: epochs between two steps.
  noise_schedule_step_gamma: float = 0.9  # step: σ factor at each step.
  # DiceSGD's C2 >= C1 = l2_norm_clip, bounding the error of the summed gradient: the paper's C2
  # (on the averaged error) times the batch size. None: C2 = C1.
  dice_error_clip: Optional[float] = None
  # σ_n of the DP feature statistics of normalization="statistics" (tfdp.dp.feature_statistics):
  # Tramèr & Boneh's 8 ("bn_noise_multiplier" of their CIFAR-10 runs). Two Gaussian releases at
  # q = 1, composed ahead of the steps.
  normalization_noise_multiplier: float = 8.0

  def __post_init__(self):
    from tfdp.dp import clipping
    from tfdp.privacy import accounting
    from tfdp.privacy import mechanisms
    from tfdp.privacy import schedules
    _require(self.epsilon is None or self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")
    _require(0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
    _require(self.noise_multiplier is None or self.noise_multiplier >= 0,
             f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
    _require(self.l2_norm_clip > 0, f"l2_norm_clip must be > 0, got {self.l2_norm_clip}")
    _require(self.normalization_noise_multiplier > 0,
             f"normalization_noise_multiplier must be > 0, got "
             f"{self.normalization_noise_multiplier}")
    _require(self.clipping in clipping.CLIPPING_ENGINES,
             f"unknown clipping {self.clipping!r}; valid: "
             f"{', '.join(sorted(clipping.CLIPPING_ENGINES))}")
    self.scaling  # pylint: disable=pointless-statement  (validates mode and gamma, naming them)
    _require(self.clip_groups is None or self.clip_groups == "layer"
             or (isinstance(self.clip_groups, int) and self.clip_groups >= 1),
             f"clip_groups must be a positive integer or 'layer', got {self.clip_groups!r}")
    _require(self.noise in accounting.NOISES,
             f"unknown noise {self.noise!r}; valid: {', '.join(accounting.NOISES)}")
    _require(self.l1_norm_clip > 0, f"l1_norm_clip must be > 0, got {self.l1_norm_clip}")
    _require(0 < self.discrete_rounding_inflation <= 1,
             f"discrete_rounding_inflation must be in (0, 1], got "
             f"{self.discrete_rounding_inflation}")
    _require(self.layer_noise in mechanisms.LAYER_NOISE,
             f"unknown layer_noise {self.layer_noise!r}; valid: "
             f"{', '.join(mechanisms.LAYER_NOISE)}")
    _require(self.noise_schedule in schedules.SCHEDULES,
             f"unknown noise_schedule {self.noise_schedule!r}; valid: "
             f"{', '.join(schedules.SCHEDULES)}")
    schedules.check_params(self.schedule_params)
    self._check_combinations()

  def _check_combinations(self):
    """Refuses combinations whose noise or accounting tfdp does not implement."""
    laplace, adaptive = self.noise == "laplace", self.adaptive_clip_quantile is not None
    _require(not laplace or self.clipping == "vectorized",
             "--noise=laplace clips per-example L1 norms, which need the materialized per-example "
             "gradients of --clipping=vectorized")
    _require(self.layer_noise == "uniform" or (self.clip_groups is not None and not laplace),
             f"--layer_noise={self.layer_noise} scales the Gaussian noise per clipping group: it "
             "needs --clip_groups (K or layer) and --noise=gaussian")
    _require(self.noise != "discrete_gaussian" or (self.layer_noise == "uniform" and not adaptive),
             "--noise=discrete_gaussian adds one integer-grid noise scale to the whole clipped "
             "sum: it cannot be combined with --layer_noise or --adaptive_clip_quantile")
    if adaptive:
      _require(0 < self.adaptive_clip_quantile < 1,
               f"adaptive_clip_quantile must be in (0, 1), got {self.adaptive_clip_quantile}")
      _require(self.adaptive_clip_learning_rate > 0,
               f"adaptive_clip_learning_rate must be > 0, got {self.adaptive_clip_learning_rate}")
      _require(self.adaptive_clip_count_stddev is None or self.adaptive_clip_count_stddev > 0,
               f"adaptive_clip_count_stddev must be > 0, got {self.adaptive_clip_count_stddev}")
      _require(not laplace and self.clip_groups is None and self.clipping_mode == "clip"
               and self.layer_noise == "uniform" and self.noise_schedule == "constant",
               "--adaptive_clip_quantile adapts one flat L2 clip bound with constant Gaussian "
               "noise: it cannot be combined with --noise=laplace, --clip_groups, "
               "--clipping_mode=normalize, --layer_noise or --noise_schedule")
    _require(self.dice_error_clip is None or self.dice_error_clip >= self.l2_norm_clip,
             f"dice_error_clip (C2) must be >= l2_norm_clip (C1) = {self.l2_norm_clip}, got "
             f"{self.dice_error_clip}")

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
    from tfdp.dp import groups
    return groups.Scaling(mode=self.clipping_mode, gamma=self.normalize_gamma)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
  name: str = "dp_sgd"
  learning_rate: Optional[float] = None  # None: the optimizer's usual default.
  momentum: float = 0.0
  # Keras keyword arguments of the update rule, e.g. (("epsilon", 1e-3),) for Adam. Post-processing
  # of the noised gradient: they cost no privacy.
  hyperparameters: Tuple[Tuple[str, Any], ...] = ()
  lr_schedule: str = "constant"  # tfdp.training.lr_schedules: constant, cosine, warmup_cosine.
  end_learning_rate: float = 0.0  # Where cosine schedules end (the studies: 9e-5).
  warmup_epochs: float = 0.0  # warmup_cosine: linear warm-up length.
  weight_decay: float = 0.0  # λ·w added to the noised gradient (post-processing).

  def __post_init__(self):
    from tfdp.training import lr_schedules
    from tfdp import optimizers
    _require(self.lr_schedule in lr_schedules.LR_SCHEDULES,
             f"unknown lr_schedule {self.lr_schedule!r}; valid: "
             f"{', '.join(lr_schedules.LR_SCHEDULES)}")
    _require(self.end_learning_rate >= 0,
             f"end_learning_rate must be >= 0, got {self.end_learning_rate}")
    _require(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
    _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
    _require(self.name in optimizers.OPTIMIZERS,
             f"unknown optimizer {self.name!r}; valid: {', '.join(sorted(optimizers.OPTIMIZERS))}")
    optimizers.check_hyperparameters(self.name, dict(self.hyperparameters))
    _require(self.learning_rate is None or self.learning_rate > 0,
             f"learning_rate must be > 0, got {self.learning_rate}")
    _require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")

  @property
  def private(self) -> bool:
    from tfdp import optimizers
    return optimizers.is_private(self.name)

  @property
  def step_size(self) -> float:
    from tfdp import optimizers
    return self.learning_rate or optimizers.default_learning_rate(self.name)

  @property
  def proven(self) -> bool:
    """False for a private optimizer whose reported ε no proof backs (DiceSGD)."""
    from tfdp import optimizers
    return not self.private or optimizers.has_privacy_proof(self.name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  batch_size: int = 64  # Expected (Poisson) batch size: q = batch_size / N.
  physical_batch_size: Optional[int] = None  # Rows per compiled chunk; None: DEFAULT_CHUNK.
  epochs: int = 1
  seed: int = 0
  output_dir: str = "runs/default"
  export_dir: Optional[str] = None  # None: saved_models/<basename of output_dir>.
  export: bool = True  # Write the SavedModels (off for quick experiments: export is slow).
  jit_compile: bool = False
  ema_decay: Optional[float] = None  # EMA of the weights for evaluation and export; None: off.
  # Draw sampling and noise from the public seed instead of a secure source: for tests and
  # debugging only, such a run has no DP guarantee against anyone who knows the seed.
  reproducible_noise: bool = False
  # Private runs: also release the training batches' loss and accuracy, computed from the private
  # data without noise and labelled as not private wherever they appear. Off: nothing uncovered.
  monitor_private_metrics: bool = False
  # Data parallelism (tfdp.training.distribution): 'none', or 'mirrored' over every visible GPU.
  distribution: str = "none"
  cpu_replicas: Optional[int] = None  # 'mirrored' over this many logical CPU devices (testing).

  @property
  def distributed(self) -> bool:
    return self.distribution != "none"

  def __post_init__(self):
    from tfdp.training import distribution  # pylint: disable=import-outside-toplevel
    _require(self.distribution in distribution.STRATEGIES,
             f"unknown distribution {self.distribution!r}; valid: "
             f"{', '.join(sorted(distribution.STRATEGIES))}")
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeConfig:
  """DP linear probing before the main steps (DP-RandP phase II, tfdp.priors.linear_probe)."""
  steps: int = 0  # 0: no probe.
  batch_size: Optional[int] = None  # Expected batch; None: the whole training set (q = 1).
  # Per step the head's logits move by about lr * |mean clipped gradient| * |features|, and a
  # GroupNorm + ReLU + pooling encoder gives features of norm about sqrt(width) (8 for ResNet-20,
  # measured on random-process images): lr 1 moves them by a few units. DP-RandP's 10-15 assumes
  # features of norm about 1.
  learning_rate: float = 1.0
  # Calibration rule: the probe alone spends this fraction of the target ε; the main steps' σ
  # then makes probe + main spend the target exactly (to 1%).
  epsilon_fraction: float = 0.1
  noise_multiplier: Optional[float] = None  # Given σ of the probe instead of the fraction rule.

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
    dice = self.optimizer.name == "dice_sgd"
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
    _require(self.privacy.dice_error_clip is None or dice,
             "--dice_error_clip is DiceSGD's error clip: it needs --optimizer=dice_sgd")
    _require(not dice or (self.privacy.noise == "gaussian"
                          and self.privacy.adaptive_clip_quantile is None),
             "--optimizer=dice_sgd uses Gaussian noise with a fixed clip: it cannot be combined "
             "with --noise=laplace or --adaptive_clip_quantile")
    _require(not dice or self.privacy.epsilon is None,
             f"--optimizer=dice_sgd cannot take --epsilon={self.privacy.epsilon}: DiceSGD has no "
             "proven DP guarantee (its hidden error re-releases the unclipped part of earlier "
             "gradients at later steps, unamplified by sampling, so no finite ε holds for "
             "unbounded gradients). Give --noise_multiplier instead; the run then reports DP-SGD's "
             "ε at that σ for comparison only, not as a guarantee")

    self._check_probe()
    self._check_statistics()

  def _check_statistics(self):
    from tfdp.models import scatter
    if not scatter.uses_statistics(self.model.name, self.model.kwargs):
      return
    _require(self.run.distribution != "multi_worker",
             "normalization=statistics with --distribution=multi_worker would release the "
             "statistics once per worker: not supported")
    _require(not self.optimizer.private or (self.privacy.noise == "gaussian"
                                            and self.optimizer.proven),
             "normalization=statistics is accounted as Gaussian releases composed with the "
             f"steps: it needs --noise=gaussian and a proven optimizer, not "
             f"--noise={self.privacy.noise} with {self.optimizer.name}")

  def _check_probe(self):
    if not self.probe.steps:
      return
    from tfdp.models import scatter
    _require(self.optimizer.private,
             f"--linear_probe_steps trains the head with DP before the main steps: it needs a "
             f"dp_* optimizer, not {self.optimizer.name}")
    _require(self.optimizer.proven, "--linear_probe_steps cannot precede --optimizer=dice_sgd, "
             "whose ε no proof backs")
    _require(self.privacy.noise == "gaussian",
             f"--linear_probe_steps is accounted as Gaussian steps: it needs --noise=gaussian, "
             f"not {self.privacy.noise}")
    _require(self.model.name not in scatter.FRONT_MODELS,
             f"--model={self.model.name} already trains only a head on frozen features: "
             "--linear_probe_steps would add nothing")
    _require(self.privacy.epsilon is not None or self.probe.noise_multiplier is not None,
             "--linear_probe_steps without --epsilon needs --probe_noise_multiplier (there is no "
             "target ε to split)")

  @property
  def adaptive_clip_count_stddev(self) -> float:
    """The unclipped count's noise std: as given, else expected batch / 20 (Andrew et al.)."""
    return self.privacy.adaptive_clip_count_stddev or self.run.batch_size / 20
