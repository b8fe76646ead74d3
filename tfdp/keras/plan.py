"""What `make_private` decides before the first step: σ, the steps the budget allows, the ledger.

No TensorFlow here. σ is calibrated by the one planner `tfdp.train` also uses
(tfdp.privacy.run_plan): the smallest σ whose planned steps, ceil(N / B) per epoch, spend at
most the target ε by RDP, at q = B / N under Poisson sampling. Weights trained privately before
(tfdp.keras.weights_ledger) bring their phases, composed ahead: the target then covers them and the
new phase together.
"""

import dataclasses
import uuid
from typing import Any, Dict, Optional, Sequence

from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms
from tfdp.privacy import run_plan as run_plan_lib


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

  def check_prior(self, phases: Sequence[Dict[str, Any]]) -> None:
    """Refuses earlier phases this plan cannot compose with: another δ (the ε would be at two
    δs), another sampling scheme, or randomness other than secret (no guarantee to add to)."""
    for phase in phases:
      for key, ours in (("delta", self.target_delta), ("sampling", self.sampling),
                        ("randomness", "secret")):
        theirs = phase.get(key, ours)
        if theirs != ours:
          raise ValueError(
              f"these weights were trained privately before with {key} = {theirs!r}, but this "
              f"plan has {key} = {ours!r}: the phases do not compose into one guarantee. Make "
              f"the model with {key}={theirs!r}, or start from weights no private training "
              "produced")

  def run_plan(self, settings: mechanisms.Settings, privacy, augmult: int = 1,
               prior_phases: Sequence[Dict[str, Any]] = ()) -> run_plan_lib.RunPlan:
    """This plan as the one planner's RunPlan (tfdp.privacy.run_plan); `privacy`: the
    tfdp.config.PrivacyConfig of the same settings (its noise schedule)."""
    return run_plan_lib.RunPlan(
        train_size=self.train_size, batch_size=self.batch_size, epochs=self.epochs,
        delta=self.target_delta, settings=settings, target_epsilon=self.target_epsilon,
        noise_multiplier=self.noise_multiplier, sampling=self.sampling, randomness="secret",
        noise_schedule=privacy.noise_schedule,
        schedule_params=tuple(sorted(privacy.schedule_params.items())), augmult=augmult,
        prior_phases=tuple(dict(phase) for phase in prior_phases), run_id=uuid.uuid4().hex)

  def ledger(self, settings: mechanisms.Settings, privacy, augmult: int = 1,
             prior_phases: Sequence[Dict[str, Any]] = ()) -> ledger_lib.PrivacyLedger:
    """A fresh ledger for this plan: σ given or calibrated (RunPlan.ledger) with the earlier
    phases that produced the starting weights composed ahead.

    Raises:
      ValueError: when the earlier phases leave the target no room for one step, or σ spends
        the target in a single step.
    """
    prior_segments = ledger_lib.phase_segments(list(prior_phases))
    if self.noise_multiplier is None:
      self._check_room(prior_segments)
    try:
      ledger = self.run_plan(settings, privacy, augmult, prior_phases).ledger()
    except ValueError as error:  # No σ up to 1e4 fits: the earlier phases spent nearly all.
      if not prior_phases or "no noise multiplier up to" not in str(error):
        raise
      raise ValueError(self._no_room(prior_segments)) from error
    if ledger.max_steps() == 0:
      if prior_phases:
        raise ValueError(self._no_room(ledger.prior_segments()))
      raise ValueError(f"noise_multiplier {ledger.noise_multiplier} spends more than "
                       f"target_epsilon {self.target_epsilon} in a single step")
    return ledger

  def _check_room(self, prior_segments: accounting.Segments) -> None:
    if prior_segments and self._spent(prior_segments) >= self.target_epsilon:
      raise ValueError(self._no_room(prior_segments))

  def _spent(self, prior_segments: accounting.Segments) -> float:
    return accounting.composed_epsilon(prior_segments, self.sampling_probability,
                                       self.target_delta)

  def _no_room(self, prior_segments: accounting.Segments) -> str:
    steps = sum(int(segment[1]) for segment in prior_segments)
    return (f"these weights already spent ε = {self._spent(prior_segments):.3f} at δ = "
            f"{self.target_delta:g} in {steps} earlier private steps, which leaves "
            f"target_epsilon = {self.target_epsilon} no room for a step of the new phase: the "
            "target covers both. Raise target_epsilon (the total), or start from weights no "
            "private training produced")
