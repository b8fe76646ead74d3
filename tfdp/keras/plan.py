"""What `make_private` decides before the first step: σ, the steps the budget allows, the ledger.

No TensorFlow here. σ is calibrated by the same accountant call as `tfdp.train`'s
(tfdp.training.planning.plan_privacy): the smallest σ whose planned steps, ceil(N / B) per epoch, spend at
most the target ε by RDP, at q = B / N under Poisson sampling.
"""

import dataclasses
import math
from typing import Optional

from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyPlan:
  """The mechanism and budget of a private `fit`.

  Attributes:
    l2_norm_clip: C, the L2 bound on each example's gradient (the clipped sum's sensitivity).
    target_delta: δ, below 1 / train_size.
    epochs: planned epochs of ceil(train_size / batch_size) steps each.
    train_size: N, the number of private training examples (public, as is customary).
    batch_size: the expected batch size q N.
    target_epsilon: the budget ε; σ is calibrated to spend at most this over the planned steps,
      and no step past it is taken. Give it or noise_multiplier.
    noise_multiplier: σ, noise std / C; ε is then only reported. Give it or target_epsilon.
    sampling: 'poisson' (what the accountant assumes: tfdp.data.poisson_dataset) or 'shuffle'
      (fixed-size shuffled batches; the ε is the customary approximation, and says so).
  """
  l2_norm_clip: float
  target_delta: float
  epochs: int
  train_size: int
  batch_size: int
  target_epsilon: Optional[float] = None
  noise_multiplier: Optional[float] = None
  sampling: str = "poisson"

  def __post_init__(self):
    if (self.target_epsilon is None) == (self.noise_multiplier is None):
      raise ValueError("give exactly one of target_epsilon (σ is calibrated to it) and "
                       f"noise_multiplier (ε is reported); got target_epsilon="
                       f"{self.target_epsilon}, noise_multiplier={self.noise_multiplier}")
    if self.target_epsilon is not None and not self.target_epsilon > 0:
      raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
    if self.noise_multiplier is not None and not self.noise_multiplier > 0:
      raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
    if not self.l2_norm_clip > 0:
      raise ValueError(f"l2_norm_clip must be > 0, got {self.l2_norm_clip}")
    if self.train_size < 1 or not 1 <= self.batch_size <= self.train_size:
      raise ValueError(f"batch_size {self.batch_size} must be between 1 and train_size "
                       f"{self.train_size}")
    if not 0 < self.target_delta < 1 / self.train_size:
      raise ValueError(f"target_delta {self.target_delta:g} must be in (0, 1/N = "
                       f"{1 / self.train_size:.3g}) for N = {self.train_size} examples")
    if self.epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {self.epochs}")
    if self.sampling not in ledger_lib.SAMPLING_NOTES:
      raise ValueError(f"unknown sampling {self.sampling!r}; valid: "
                       f"{sorted(ledger_lib.SAMPLING_NOTES)}")

  @property
  def sampling_probability(self) -> float:
    return self.batch_size / self.train_size

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.train_size / self.batch_size)

  @property
  def planned_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  def sigma(self) -> float:
    """σ: as given, or calibrated to the target over the planned steps (RDP, as tfdp.train)."""
    if self.noise_multiplier is not None:
      return self.noise_multiplier
    return accounting.calibrate_schedule(self.target_epsilon, self.target_delta,
                                         self.sampling_probability, [(1.0, self.planned_steps)],
                                         "rdp")

  def ledger(self, sigma: float, randomness: str, mechanism: dict) -> ledger_lib.PrivacyLedger:
    """A fresh ledger for this plan at σ; `mechanism`: the settings a resume must match."""
    ledger = ledger_lib.PrivacyLedger(
        noise_multiplier=sigma, sampling_probability=self.sampling_probability,
        delta=self.target_delta, sampling=self.sampling, target_epsilon=self.target_epsilon,
        randomness=randomness, mechanism=mechanism)
    ledger.record("start", planned_steps=self.planned_steps,
                  calibrated=self.noise_multiplier is None)
    if ledger.max_steps() == 0:
      raise ValueError(f"noise_multiplier {sigma} spends more than target_epsilon "
                       f"{self.target_epsilon} in a single step")
    return ledger
