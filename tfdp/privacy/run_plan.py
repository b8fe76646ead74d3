"""The one privacy planner behind every front door: σ, the schedule and the ledger, before any step.

No TensorFlow. `tfdp.train` (tfdp.training.planning), `tfdp.keras.make_private` (tfdp.keras.plan)
and `python -m tfdp.privacy` describe their run as a RunPlan; its `ledger()` decides σ by one rule:
given, or the smallest σ (to 1% in ε) whose whole run (the earlier phases, the feature statistics,
the probe, then the planned steps at ceil(N / B) per epoch on the noise schedule) spends at most
the target ε, by the first accountant of the steps' mechanism (tfdp.privacy.mechanisms), at
q = B / N. The ledger it returns records the mechanism, the schedule, the one-off releases and the
settings a resume must match.
"""

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms
from tfdp.privacy import schedules
from tfdp.privacy.mechanisms import scatter_statistics


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeSpec:
  """The DP linear probe ahead of the steps (tfdp.training.linear_probe); see ProbeConfig."""
  steps: int
  batch_size: Optional[int] = None  # None: the whole training set (q = 1).
  epsilon_fraction: float = 0.1
  noise_multiplier: Optional[float] = None
  learning_rate: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunPlan:
  """A run's privacy, as any front door describes it (all public values).

  Attributes:
    train_size: N. batch_size: the expected batch q N. epochs: planned epochs.
    delta: δ. target_epsilon / noise_multiplier: the budget, or σ given (ε only reported).
    settings: the steps' mechanism settings (tfdp.privacy.mechanisms.Settings).
    private: False for a non-private baseline (σ = 0, no guarantee).
    sampling, randomness: how batches and coins are drawn (tfdp.privacy.ledger).
    noise_schedule, schedule_params: σ per epoch (tfdp.privacy.schedules).
    probe: the linear probe ahead of the steps, or None.
    statistics_noise_multiplier: σ_n of the ScatterNet statistics when the model uses them.
    augmult: augmented copies per example (a setting a resume must match).
    prior_phases: earlier phases that produced the starting weights, composed first.
    run_id: the ledger's name ('' for none).
    accountant: the accountant σ is calibrated by; None: the mechanism's first, which enforces
      the budget.
  """
  train_size: int
  batch_size: int
  epochs: int
  delta: float
  settings: mechanisms.Settings
  target_epsilon: Optional[float] = None
  noise_multiplier: Optional[float] = None
  private: bool = True
  sampling: str = "poisson"
  randomness: str = "secret"
  noise_schedule: str = "constant"
  schedule_params: Tuple[Tuple[str, float], ...] = ()
  probe: Optional[ProbeSpec] = None
  statistics_noise_multiplier: Optional[float] = None
  augmult: int = 1
  prior_phases: Tuple[Dict[str, Any], ...] = ()
  run_id: str = ""
  accountant: Optional[str] = None  # Calibrates σ; None: the mechanism's first (its budget's).

  @property
  def sampling_probability(self) -> float:
    return self.batch_size / self.train_size

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.train_size / self.batch_size)

  @property
  def planned_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  @property
  def mechanism(self) -> mechanisms.Mechanism:
    return mechanisms.select(self.settings)

  def epoch_factors(self) -> Tuple[float, ...]:
    if self.noise_schedule == "constant":
      return ()
    return tuple(schedules.epoch_factors(self.noise_schedule, self.epochs,
                                         dict(self.schedule_params)))

  def statistics(self) -> Dict[str, Any]:
    """The feature statistics' σ_n and release count ({} without them or when not private);
    refused when they alone spend the target."""
    if not (self.private and self.statistics_noise_multiplier is not None):
      return {}
    planned = scatter_statistics.MECHANISM.planned(self.statistics_noise_multiplier)
    if self.target_epsilon is not None:
      alone = accounting.composed_epsilon(scatter_statistics.MECHANISM.segments(planned), 1.0,
                                          self.delta)
      if alone >= self.target_epsilon:
        raise ValueError(f"the DP feature statistics alone spend ε = {alone:.3f} of the target "
                         f"{self.target_epsilon}: raise --normalization_noise_multiplier "
                         f"({self.statistics_noise_multiplier:g})")
    return planned

  def probe_plan(self) -> Dict[str, Any]:
    """The probe's σ, q and steps ({} without one): σ given, else the smallest σ whose probe
    alone spends epsilon_fraction of the target (RDP); refused when it alone spends the target."""
    probe = self.probe
    if probe is None or not probe.steps:
      return {}
    batch_size = probe.batch_size or self.train_size
    if batch_size > self.train_size:
      raise ValueError(f"probe_batch_size {batch_size} is larger than the training set "
                       f"({self.train_size})")
    q = batch_size / self.train_size
    sigma = probe.noise_multiplier or accounting.calibrate_noise_multiplier(
        probe.epsilon_fraction * self.target_epsilon, self.delta, q, probe.steps)
    if self.target_epsilon is not None:
      alone = accounting.epsilon(sigma, q, probe.steps, self.delta)
      if alone >= self.target_epsilon:
        raise ValueError(f"the linear probe alone spends ε = {alone:.3f} of the target "
                         f"{self.target_epsilon}: raise --probe_noise_multiplier ({sigma:g}) or "
                         "lower --linear_probe_steps")
    return {"noise_multiplier": sigma, "sampling_probability": q, "steps": probe.steps}

  def sigma(self, before: accounting.Segments = ()) -> float:
    """σ of the steps: 0 when not private, as given, or calibrated to the target with `before`
    (σ, steps, q) segments composed ahead."""
    if not self.private:
      return 0.0
    if self.noise_multiplier is not None:
      return self.noise_multiplier
    factors = self.epoch_factors()
    shape = [(f, self.steps_per_epoch) for f in factors] or [(1.0, self.planned_steps)]
    mechanism = self.mechanism
    return accounting.calibrate_schedule(self.target_epsilon, self.delta,
                                         self.sampling_probability, shape,
                                         self.accountant or mechanism.accountants[0],
                                         noise=mechanism.family,
                                         before=before)

  def resume_fields(self) -> Dict[str, Any]:
    fields = mechanisms.resume_fields(self.settings)
    fields["augmult"] = self.augmult
    fields["probe_learning_rate"] = (self.probe.learning_rate if self.probe and self.probe.steps
                                     else None)
    return fields

  def notes(self, sigma: float):
    """What σ means for the mechanism (raises ValueError when it cannot be built at σ)."""
    return self.mechanism.notes(self.settings, sigma) if self.private else []

  def ledger(self) -> ledger_lib.PrivacyLedger:
    """A fresh ledger: σ decided, the schedule, the one-off releases and the resume fields."""
    mechanism = self.mechanism
    statistics, probe = self.statistics(), self.probe_plan()
    before = (ledger_lib.phase_segments(list(self.prior_phases))
              + scatter_statistics.MECHANISM.segments(statistics)
              + ([(probe["noise_multiplier"], probe["steps"], probe["sampling_probability"])]
                 if probe else []))
    sigma = self.sigma(before)
    factors = self.epoch_factors()
    ledger = ledger_lib.PrivacyLedger(
        noise_multiplier=sigma, sampling_probability=self.sampling_probability, delta=self.delta,
        sampling=self.sampling, target_epsilon=self.target_epsilon, noise=mechanism.family,
        schedule=self.noise_schedule, epoch_factors=list(factors),
        steps_per_epoch=self.steps_per_epoch if factors else 0, notes=self.notes(sigma),
        randomness=self.randomness, proven=not self.private or mechanism.proven,
        mechanism=self.resume_fields(), probe=probe, normalization=statistics,
        prior_phases=[dict(phase) for phase in self.prior_phases], run_id=self.run_id)
    ledger.record("start", planned_steps=self.planned_steps,
                  calibrated=self.noise_multiplier is None and self.private)
    return ledger

