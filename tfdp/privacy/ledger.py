"""The privacy ledger: what a run has spent, saved beside every checkpoint.

The ledger is the single source of truth for ε. It records the mechanism (noise multiplier σ, sampling
probability q, sampling scheme), the budget (target ε, δ), the number of noisy steps taken, and a history
of changes (start, resume). The training loop asks it before every step whether that step fits the budget.
No TensorFlow here.
"""

import dataclasses
import json
import math
from typing import List, Optional

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
    noise_multiplier: σ, noise std / L2 clip norm.
    sampling_probability: q = expected batch size / N.
    delta: δ of the guarantee.
    sampling: 'poisson' or 'shuffle' (how batches were actually drawn).
    target_epsilon: the budget; None when the run has no budget (σ given, ε only reported).
    steps: noisy steps taken so far.
    history: one dict per change (start, resume), in order.
  """
  noise_multiplier: float
  sampling_probability: float
  delta: float
  sampling: str = "poisson"
  target_epsilon: Optional[float] = None
  steps: int = 0
  history: List[dict] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.sampling not in SAMPLING_NOTES:
      raise ValueError(f"unknown sampling {self.sampling!r}; valid: {sorted(SAMPLING_NOTES)}")
    accounting.epsilon(self.noise_multiplier, self.sampling_probability, 0, self.delta)

  @property
  def private(self) -> bool:
    return self.noise_multiplier > 0

  def epsilon(self, accountant: str = "rdp", steps: Optional[int] = None) -> float:
    """ε spent after `steps` (default: the steps taken) by `accountant` ('rdp' or 'pld')."""
    steps = self.steps if steps is None else steps
    return accounting.epsilon(self.noise_multiplier, self.sampling_probability, steps,
                              self.delta, accountant)

  def max_steps(self) -> Optional[int]:
    """Steps the budget allows (RDP accountant), or None without a budget."""
    if self.target_epsilon is None:
      return None
    if not self.private:
      return 0
    return accounting.max_steps(self.noise_multiplier, self.sampling_probability, self.delta,
                                self.target_epsilon)

  def record(self, event: str, **details) -> None:
    self.history.append({"event": event, "step": self.steps, **details})

  def describe(self) -> str:
    """One line saying what ε this is and how it was computed."""
    if not self.private:
      return "non-private training: no privacy guarantee (ε = ∞)"
    eps, eps_pld = self.epsilon("rdp"), self.epsilon("pld")
    return (f"ε = {eps:.3f} (RDP accountant; PLD: {eps_pld:.3f}) at δ = {self.delta:g} after "
            f"{self.steps} steps, σ = {self.noise_multiplier:.4f}, q = "
            f"{self.sampling_probability:.5f}; {SAMPLING_NOTES[self.sampling]}")

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
    keys = ("noise_multiplier", "sampling_probability", "delta", "sampling", "target_epsilon")
    return all(_close(getattr(self, k), getattr(other, k)) for k in keys)


def _close(a, b) -> bool:
  if isinstance(a, float) and isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-9)
  return a == b
