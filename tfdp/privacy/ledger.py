"""The privacy ledger: what a run has spent, saved beside every checkpoint.

The ledger is the single source of truth for ε. It records the mechanism (noise multiplier σ, noise
distribution, noise schedule, sampling probability q, sampling scheme), the budget (target ε, δ), the
number of noisy steps taken, and a history of changes (start, resume). Because the schedule lives here, a
resumed run continues it where it stopped. The training loop asks it before every step whether that step fits the budget.
No TensorFlow here.
"""

import dataclasses
import json
import math
from typing import List, Optional, Tuple

from tfdp import atomic
from tfdp.privacy import accounting

SAMPLING_NOTES = {
    "poisson": "batches drawn by Poisson sampling, as the accountant assumes",
    "shuffle": ("batches drawn by shuffling, NOT Poisson sampling: this ε assumes Poisson "
                "subsampling, the customary approximation for shuffled batches, not a proof"),
}


@dataclasses.dataclass
class PrivacyLedger:
  """The privacy spent by one training run.

  Attributes:
    noise_multiplier: σ of the first epoch, as the accountant sees it: noise std / L2 sensitivity
      (the effective σ for per-layer noise and adaptive clipping), or for Laplace noise the scale b /
      L1 sensitivity.
    sampling_probability: q = expected batch size / N.
    delta: δ of the guarantee.
    sampling: 'poisson' or 'shuffle' (how batches were actually drawn).
    target_epsilon: the budget; None when the run has no budget (σ given, ε only reported).
    steps: noisy steps taken so far.
    history: one dict per change (start, resume), in order.
    noise: 'gaussian' or 'laplace'.
    schedule: the noise schedule's name (tfdp.privacy.schedules).
    epoch_factors: σ of epoch e is noise_multiplier * epoch_factors[e] (the last factor continues
      past the planned epochs); empty for a constant σ.
    steps_per_epoch: steps in one epoch (used with epoch_factors).
    notes: how σ maps onto the mechanism, one sentence each (per-layer noise, adaptive clipping).
  """
  noise_multiplier: float
  sampling_probability: float
  delta: float
  sampling: str = "poisson"
  target_epsilon: Optional[float] = None
  steps: int = 0
  history: List[dict] = dataclasses.field(default_factory=list)
  noise: str = "gaussian"
  schedule: str = "constant"
  epoch_factors: List[float] = dataclasses.field(default_factory=list)
  steps_per_epoch: int = 0
  notes: List[str] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.sampling not in SAMPLING_NOTES:
      raise ValueError(f"unknown sampling {self.sampling!r}; valid: {sorted(SAMPLING_NOTES)}")
    if self.epoch_factors and self.steps_per_epoch < 1:
      raise ValueError("a noise schedule needs steps_per_epoch >= 1")
    accounting.epsilon(self.noise_multiplier, self.sampling_probability, 0, self.delta,
                       noise=self.noise)

  @property
  def accountant(self) -> str:
    """The accountant that enforces the budget: RDP for Gaussian noise, PLD for Laplace."""
    return "rdp" if self.noise == "gaussian" else "pld"

  def noise_multiplier_at(self, step: int) -> float:
    """σ of step `step` (0-based) under the schedule."""
    if not self.epoch_factors:
      return self.noise_multiplier
    epoch = min(step // self.steps_per_epoch, len(self.epoch_factors) - 1)
    return self.noise_multiplier * self.epoch_factors[epoch]

  def segments(self, steps: int) -> List[Tuple[float, int]]:
    """The first `steps` steps as (σ, count) runs of equal noise, in order."""
    if not self.epoch_factors:
      return [(self.noise_multiplier, steps)]
    runs, start = [], 0
    for epoch in range(len(self.epoch_factors)):
      end = steps if epoch == len(self.epoch_factors) - 1 else min(
          steps, (epoch + 1) * self.steps_per_epoch)
      if end > start:
        runs.append((self.noise_multiplier * self.epoch_factors[epoch], end - start))
      start = max(start, end)
    return runs

  @property
  def private(self) -> bool:
    return self.noise_multiplier > 0

  def epsilon(self, accountant: Optional[str] = None, steps: Optional[int] = None) -> float:
    """ε spent after `steps` (default: the steps taken) by `accountant` (default: self.accountant)."""
    steps = self.steps if steps is None else steps
    return accounting.composed_epsilon(self.segments(steps), self.sampling_probability, self.delta,
                                       accountant or self.accountant, self.noise)

  def max_steps(self) -> Optional[int]:
    """Steps the budget allows (by self.accountant), or None without a budget."""
    if self.target_epsilon is None:
      return None
    if not self.private:
      return 0
    return accounting.max_steps_within(lambda n: self.epsilon(steps=n), self.target_epsilon)

  def record(self, event: str, **details) -> None:
    self.history.append({"event": event, "step": self.steps, **details})

  def describe(self) -> str:
    """One line saying what ε this is and how it was computed."""
    if not self.private:
      return "non-private training: no privacy guarantee (ε = ∞)"
    if self.noise == "gaussian":
      accountants = f"ε = {self.epsilon('rdp'):.3f} (RDP accountant; PLD: {self.epsilon('pld'):.3f})"
      mechanism = f"Gaussian noise, σ = {self.noise_multiplier:.4f}"
    else:
      accountants = f"ε = {self.epsilon('pld'):.3f} (PLD accountant)"
      mechanism = f"Laplace noise, b / L1 clip = {self.noise_multiplier:.4f}"
    if self.epoch_factors:
      mechanism += (f" in epoch 1 on a {self.schedule} schedule (σ now "
                    f"{self.noise_multiplier_at(max(self.steps - 1, 0)):.4f})")
    return (f"{accountants} at δ = {self.delta:g} after {self.steps} steps, {mechanism}, q = "
            f"{self.sampling_probability:.5f}; {SAMPLING_NOTES[self.sampling]}")

  def statement(self) -> str:
    """describe() plus the notes on how σ maps onto the mechanism: the run's privacy statement."""
    return self.describe() + "".join(f"; {note}" for note in self.notes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "PrivacyLedger":
    return cls(**json.loads(text))

  def save(self, path: str) -> None:
    atomic.write_text(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> "PrivacyLedger":
    with open(path) as f:
      return cls.from_json(f.read())

  def same_mechanism(self, other: "PrivacyLedger") -> bool:
    """Whether `other` describes the same mechanism and budget (so a resume may continue it)."""
    keys = ("noise_multiplier", "sampling_probability", "delta", "sampling", "target_epsilon",
            "noise", "schedule", "epoch_factors", "steps_per_epoch")
    return all(_close(getattr(self, k), getattr(other, k)) for k in keys)


def _close(a, b) -> bool:
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
  if isinstance(a, float) and isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-9)
  return a == b
