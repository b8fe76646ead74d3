"""What every DP mechanism owns, in one object: the contract of tfdp.privacy.mechanisms. No TensorFlow.

A mechanism object knows, for the settings a front door was given (`Settings`, public values):
  - whether it is the one those settings select (`applies`) and whether they are valid for it
    (`check`, ValueError naming the value and the fix);
  - the DPQuery it noises the clipped sum with (`make_query`, from the primitives of
    tfdp.dp.noise, passed in so that this package imports no TensorFlow), drawing from the
    run's secret coins;
  - one noisy step's DpEvent for the accountant (`dp_event`) and its Rényi curve (`rdp_of_step`);
  - how far its float64 sampler is from the ideal noise per coordinate (`float_tail`);
  - the text of the privacy statement (`describe`, `epsilon_text`, `float_note`, `notes`), its
    guarantee (`proven`: whether a proof backs the ε) and the theorem the accountant applies;
  - the settings a resumed run must match (`resume_fields`).
σ is always the one noise multiplier the accountant composes (`family` names whose events it is).
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """What a front door was asked for, beyond σ and the budget: which mechanism runs, and how.

  Attributes mirror tfdp.config.PrivacyConfig (same names, same units) plus the optimizer's name,
  the expected batch size and, where σ is calibrated, the target ε.
  """
  optimizer: str = "dp_sgd"
  noise: str = "gaussian"
  l2_norm_clip: float = 1.0
  l1_norm_clip: float = 1.0
  clipping: str = "fast"
  clip_groups: Optional[Union[int, str]] = None
  clipping_mode: str = "clip"
  normalize_gamma: float = 0.01
  layer_noise: str = "uniform"
  adaptive_clip_quantile: Optional[float] = None
  adaptive_clip_learning_rate: float = 0.2
  adaptive_clip_count_stddev: Optional[float] = None  # None: expected batch / 20.
  discrete_rounding_inflation: float = 0.01
  dice_error_clip: Optional[float] = None  # None: C2 = C1.
  noise_schedule: str = "constant"
  batch_size: int = 1  # Expected batch size q N.
  target_epsilon: Optional[float] = None

  @property
  def count_stddev(self) -> float:
    """Adaptive clipping's unclipped-count noise std: as given, else expected batch / 20."""
    return self.adaptive_clip_count_stddev or self.batch_size / 20

  @property
  def error_clip(self) -> float:
    """DiceSGD's C2: as given, else C1."""
    return self.dice_error_clip or self.l2_norm_clip


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


class Mechanism:
  """The defaults of a mechanism; each mechanism module subclasses it (see the module docstring)."""
  name: str = ""
  family: str = ""  # The noise whose events the accountant composes: the ledger's `noise`.
  accountants: Tuple[str, ...] = ()  # The first one enforces the budget.
  proven: bool = True
  theorem: str = ""

  def applies(self, settings: Settings) -> bool:
    raise NotImplementedError

  def check(self, settings: Settings) -> None:
    """Raises ValueError when `settings` select this mechanism in a way it cannot run."""

  def notes(self, settings: Settings, sigma: float) -> List[str]:
    """What σ means for this mechanism, one sentence each (the statement's notes)."""
    return []

  def resume_fields(self, settings: Settings) -> Dict[str, Any]:
    """This mechanism's settings that a resume must match (JSON values)."""
    return {}

  def make_query(self, settings: Settings, sigma: float, *, groups, coordinates: int, queries):
    """The DPQuery noising the clipped sums at σ; `queries` is tfdp.dp.noise, `groups` the
    clipping group of every trainable variable, `coordinates` their number of entries."""
    raise NotImplementedError

  # Accounting: one Poisson-subsampled step of noise multiplier σ.
  def dp_event(self, sigma: float, sampling_probability: float):
    raise NotImplementedError

  def rdp_orders(self) -> Tuple[float, ...]:
    raise NotImplementedError

  def rdp_of_step(self, sigma: float, sampling_probability: float) -> np.ndarray:
    """One step's RDP at rdp_orders(); only for mechanisms whose accountants include 'rdp'."""
    raise NotImplementedError

  def float_tail(self, grid_scale: Optional[int] = None) -> float:
    raise NotImplementedError

  # The statement.
  def describe(self, sigma: float) -> str:
    raise NotImplementedError

  def epsilon_text(self, epsilon_by: Callable[[str], float]) -> str:
    raise NotImplementedError

  def float_note(self, extra_delta: float, coordinates: int, grid_scale: Optional[int]) -> str:
    raise NotImplementedError
