"""The privacy ledger: what a run has spent, saved beside every checkpoint.

The ledger is the single source of truth for ε. It records the mechanism (noise multiplier σ, noise
distribution, noise schedule, sampling probability q, sampling scheme), the budget (target ε, δ), the
number of noisy steps taken, and a history of changes (start, resume). Because the schedule lives here, a
resumed run continues it where it stopped. Earlier private phases that produced the starting
weights (`prior_phases`: a Keras model trained privately before, tfdp.keras.weights_ledger) are
composed ahead of everything else, so ε covers them too. The training loop asks it before every
step whether that step fits the budget. No TensorFlow here.
"""

import dataclasses
import json
import math
from typing import Any, Dict, List, Optional, Tuple

from tfdp import atomic
from tfdp.privacy import accounting
from tfdp.privacy import mechanisms
from tfdp.privacy.mechanisms import linear_probe
from tfdp.privacy.mechanisms import scatter_statistics

SAMPLING_NOTES = {
    "poisson": "batches drawn by Poisson sampling, as the accountant assumes",
    "shuffle": ("batches drawn by shuffling, NOT Poisson sampling: this ε assumes Poisson "
                "subsampling, the customary approximation for shuffled batches, not a proof"),
}

RANDOMNESS_NOTES = {
    "secret": ("sampling and noise drawn from a secure random source and never released, as the "
               "guarantee assumes"),
    "reproducible": ("REPRODUCIBLE NOISE (--reproducible_noise): sampling and noise follow from the "
                     "published seed, so this run has no DP guarantee against anyone who knows it"),
}

UNPROVEN_NOTE = ("NO PROVEN DP GUARANTEE (the mechanism has no privacy proof; the ε below is "
                 "DP-SGD's at the same σ, for comparison only)")
GUARANTEES = ("proven", "shuffle", "reproducible", "unproven", "none")  # PrivacyLedger.guarantee()


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
    randomness: 'secret' (sampling and noise from a secure source, never released: the default and
      what the guarantee assumes) or 'reproducible' (--reproducible_noise: both follow from the
      public seed, so the run has no DP guarantee against anyone who knows it).
    coordinates: d, the number of noised coordinates (trainable parameters); with the steps it
      sizes what the float64 noise samplers add to δ (float_tail_delta).
    proven: whether the mechanism has a proof for the ε the accountant computes. False for DiceSGD,
      whose ε is DP-SGD's at the same σ, reported for comparison only (guarantee() == 'unproven').
    mechanism: every other setting that changes what the noisy steps release (optimizer, clip
      norms and groups, scaling, per-group noise, adaptive clipping, augmult), as JSON values
      (tfdp.privacy.mechanisms.resume_fields); a resume must match it. Empty in ledgers written before it
      was recorded, which therefore cannot be resumed.
    probe: the linear probe planned before the main steps (tfdp.training.linear_probe), with keys
      noise_multiplier, sampling_probability and steps; empty without one. Its steps are Gaussian
      steps of their own q and σ, composed ahead of the main ones.
    probe_steps: probe steps taken (the main steps start once all of them are).
    normalization: the DP feature statistics planned before any step
      (tfdp.dp.feature_statistics), with keys noise_multiplier and releases; empty without them.
      They are Gaussian releases at q = 1, composed ahead of the probe and the main steps.
    normalization_released: whether they were released (they are, once, before the first step).
    prior_phases: earlier DP-SGD phases on the same data that produced the starting weights, in
      order, each a dict with keys noise_multiplier, sampling_probability, steps (Gaussian,
      Poisson-sampled steps), delta, sampling, randomness (what they were accounted under) and
      run_id (the ledger they come from).
      Composed ahead of the statistics, the probe and the main steps; empty for weights that no
      private training produced (and in ledgers written before it was recorded).
    run_id: a random name for this ledger (tfdp.keras), so that one phase seen twice, as a
      snapshot in a later ledger's prior_phases and live, counts once; empty when unnamed.
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
  randomness: str = "secret"
  proven: bool = True
  coordinates: int = 0
  mechanism: Dict[str, Any] = dataclasses.field(default_factory=dict)
  probe: Dict[str, Any] = dataclasses.field(default_factory=dict)
  probe_steps: int = 0
  normalization: Dict[str, Any] = dataclasses.field(default_factory=dict)
  normalization_released: bool = False
  prior_phases: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  run_id: str = ""

  def __post_init__(self):
    if self.randomness not in RANDOMNESS_NOTES:
      raise ValueError(f"unknown randomness {self.randomness!r}; valid: {sorted(RANDOMNESS_NOTES)}")
    if self.sampling not in SAMPLING_NOTES:
      raise ValueError(f"unknown sampling {self.sampling!r}; valid: {sorted(SAMPLING_NOTES)}")
    if self.epoch_factors and self.steps_per_epoch < 1:
      raise ValueError("a noise schedule needs steps_per_epoch >= 1")
    accounting.epsilon(self.noise_multiplier, self.sampling_probability, 0, self.delta,
                       noise=self.noise)
    if self.probe and self.noise != "gaussian":
      raise ValueError(f"a linear probe is accounted as Gaussian steps; noise is {self.noise!r}")
    if self.normalization and self.noise != "gaussian":
      raise ValueError("DP feature statistics are accounted as Gaussian releases; noise is "
                       f"{self.noise!r}")
    if self.prior_phases and self.noise != "gaussian":
      raise ValueError(f"earlier phases are accounted as Gaussian steps; noise is {self.noise!r}")
    for phase in self.prior_phases:
      _check_phase(phase)

  @property
  def accountant(self) -> str:
    """The accountant that enforces the budget: RDP for (discrete) Gaussian noise, PLD for Laplace."""
    return self.accountants[0]

  @property
  def accountants(self) -> Tuple[str, ...]:
    """Every accountant that has a bound for this noise."""
    return self.noise_mechanism.accountants

  @property
  def noise_mechanism(self) -> mechanisms.Mechanism:
    """The mechanism of this ledger's noise (tfdp.privacy.mechanisms): its events and text."""
    return mechanisms.of_noise(self.noise)

  def float_tail_delta(self, steps: Optional[int] = None) -> float:
    """What the float64 noise samplers add to δ after `steps` (tfdp.privacy.mechanisms); the
    probe's steps count as if they noised every coordinate (they noise the head's only)."""
    steps = self.steps if steps is None else steps
    releases = self.normalization.get("releases", 0) if self.normalization_released else 0
    return mechanisms.float_tail_delta(self.epsilon(steps=steps),
                                       self.prior_steps + steps + self.probe_steps + releases,
                                       self.coordinates, self.noise, self.grid_scale())

  def grid_scale(self) -> Optional[int]:
    """The discrete Gaussian sampler's largest integer scale over the schedule; None otherwise."""
    if self.noise != "discrete_gaussian" or not self.coordinates:
      return None
    largest = self.noise_multiplier * max(self.epoch_factors or [1.0])
    return mechanisms.discrete_gaussian_scale(
        largest, self.coordinates, self.mechanism["discrete_rounding_inflation"])

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

  def guarantee(self) -> str:
    """What the run's ε stands for, one of GUARANTEES.

    'proven': Poisson sampling, secret randomness and a mechanism with a proof; 'shuffle': the
    Poisson formula applied to shuffled batches (an approximation, not a proof); 'reproducible': no
    guarantee against anyone who knows the seed; 'unproven': no proof for the mechanism (DiceSGD);
    'none': non-private training.
    """
    if not self.private:
      return "none"
    if self.randomness == "reproducible":
      return "reproducible"
    if not self.proven:
      return "unproven"
    return "shuffle" if self.sampling == "shuffle" else "proven"

  @property
  def prior_steps(self) -> int:
    """Steps of the earlier phases that produced the starting weights."""
    return sum(int(phase["steps"]) for phase in self.prior_phases)

  def prior_segments(self) -> List[Tuple[float, int, float]]:
    """The earlier phases as (σ, steps, q) segments, in order."""
    return phase_segments(self.prior_phases)

  def phases(self) -> List[Dict[str, Any]]:
    """This ledger's whole spending as phases a later ledger can take as its `prior_phases`:
    its own prior phases, then its steps (when it took any).

    Raises:
      ValueError: when the spending is not a sequence of constant-σ Gaussian Poisson-sampled
        DP-SGD phases (a noise schedule, another noise, a linear probe, DP feature statistics, or
        a mechanism without a proof): no phase list would account for it.
    """
    reasons = [reason for reason, applies in (
        (f"a {self.schedule} noise schedule", bool(self.epoch_factors)),
        (f"{self.noise} noise", self.noise != "gaussian"),
        ("a linear probe", bool(self.probe)),
        ("DP feature statistics", bool(self.normalization)),
        ("a mechanism without a privacy proof", not self.proven)) if applies]
    if reasons:
      raise ValueError(f"this ledger's spending includes {' and '.join(reasons)}, which cannot "
                       "be expressed as constant-σ Gaussian DP-SGD phases; continue that run "
                       "with the tool that started it (python -m tfdp.train) instead")
    own = [] if not self.steps else [{
        "noise_multiplier": self.noise_multiplier, "sampling_probability":
        self.sampling_probability, "steps": self.steps, "delta": self.delta,
        "sampling": self.sampling, "randomness": self.randomness, "run_id": self.run_id}]
    return [dict(phase) for phase in self.prior_phases] + own

  def probe_segments(self, probe_steps: Optional[int] = None) -> List[Tuple[float, int, float]]:
    """The probe's first `probe_steps` (default: those taken) as one (σ, count, q) segment."""
    count = self.probe_steps if probe_steps is None else probe_steps
    return linear_probe.MECHANISM.segments(self.probe, count)

  def normalization_segments(self, released: Optional[bool] = None
                             ) -> List[Tuple[float, int, float]]:
    """The feature statistics' releases as one (σ_n, releases, 1.0) segment, when `released`
    (default: whether they were)."""
    released = self.normalization_released if released is None else released
    return scatter_statistics.MECHANISM.segments(self.normalization) if released else []

  def epsilon(self, accountant: Optional[str] = None, steps: Optional[int] = None,
              probe_steps: Optional[int] = None, normalized: Optional[bool] = None) -> float:
    """ε spent by the feature statistics (if `normalized`), the probe's `probe_steps` then
    `steps` main steps (defaults: what was released), by `accountant` (default:
    self.accountant)."""
    return accounting.releases_epsilon(self.releases(steps, probe_steps, normalized),
                                       self.delta, accountant or self.accountant)

  def releases(self, steps: Optional[int] = None, probe_steps: Optional[int] = None,
               normalized: Optional[bool] = None) -> List[accounting.Release]:
    """What the run released, in order, as the accountant composes it: the earlier phases, the
    feature statistics (if `normalized`), the probe's `probe_steps`, then `steps` main steps
    (defaults: what was released). The one-off releases are Gaussian; the steps are `noise`."""
    steps = self.steps if steps is None else steps
    gaussian = (self.prior_segments() + self.normalization_segments(normalized)
                + self.probe_segments(probe_steps))
    return (accounting.as_releases(gaussian, self.sampling_probability)
            + accounting.as_releases(self.segments(steps), self.sampling_probability, self.noise))

  def planned_epsilon(self, steps: int) -> float:
    """ε after the whole planned probe and `steps` main steps."""
    return self.epsilon(steps=steps, probe_steps=self.probe.get("steps", 0), normalized=True)

  def epsilon_by(self, accountant: str) -> Optional[float]:
    """ε by `accountant` after the steps taken, or None when it has no bound for this noise."""
    return self.epsilon(accountant) if self.private and accountant in self.accountants else None

  def epsilon_fields(self) -> dict:
    """The ε a run releases, by key: `epsilon` (the budget's accountant) and `epsilon_pld` when a
    proof backs them, else `epsilon_if_dp_sgd` (DP-SGD's ε at the same σ, no guarantee); None
    where a key does not apply (non-private runs: all three)."""
    proven = self.private and self.proven
    return {"epsilon": self.epsilon() if proven else None,
            "epsilon_pld": self.epsilon_by("pld") if proven else None,
            "epsilon_if_dp_sgd": self.epsilon() if self.private and not self.proven else None}

  def mechanism_report(self) -> Dict[str, Any]:
    """The privacy fields a run releases in its metrics and model card, from this ledger alone
    (so every front door reports a mechanism alike); None where a field does not apply."""
    private, settings = self.private, self.mechanism
    setting = lambda key: settings.get(key) if private else None
    return {
        **self.epsilon_fields(),
        "target_epsilon": self.target_epsilon,
        "delta": self.delta if private else None,
        # What the float64 noise's truncated tail adds to δ (0 for the discrete Gaussian).
        "delta_float_tail": self.float_tail_delta() if private else None,
        "noise_multiplier": self.noise_multiplier,
        "l2_norm_clip": setting("l2_norm_clip"),
        "l1_norm_clip": setting("l1_norm_clip"),
        "sampling": self.sampling,
        "sampling_probability": self.sampling_probability,
        "accountant": self.accountant if private else None,
        "noise": self.noise if private else None,
        "noise_schedule": self.schedule if private else None,
        "noise_multipliers_per_epoch": ([self.noise_multiplier * f for f in self.epoch_factors]
                                        or None) if private else None,
        "layer_noise": setting("layer_noise"),
        "adaptive_clip_quantile": setting("adaptive_clip_quantile"),
        "clip_groups": setting("clip_groups"),
        "clipping_mode": setting("clipping_mode"),
        "dice_error_clip": settings.get("dice_error_clip"),
        "privacy_statement": self.statement(),
        "steps": self.steps,
        "dp_guarantee": self.guarantee(),
        "randomness": self.randomness,
    }

  def max_steps(self) -> Optional[int]:
    """Main steps the budget allows after the planned probe (by self.accountant), or None without
    a budget."""
    if self.target_epsilon is None:
      return None
    if not self.private:
      return 0
    # Main steps follow the statistics and the whole planned probe, so they are counted after.
    probe_steps = self.probe.get("steps", 0)
    return accounting.max_steps_within(
        lambda n: self.epsilon(steps=n, probe_steps=probe_steps, normalized=True),
        self.target_epsilon)

  def record(self, event: str, **details) -> None:
    self.history.append({"event": event, "step": self.steps, **details})

  def describe(self) -> str:
    """One line saying what ε this is and how it was computed."""
    if not self.private:
      return "non-private training: no privacy guarantee (ε = ∞)"
    prefix = "" if self.proven else UNPROVEN_NOTE + ": "
    accountants = self.noise_mechanism.epsilon_text(self.epsilon)
    mechanism = self.noise_mechanism.describe(self.noise_multiplier)
    if self.epoch_factors:
      mechanism += (f" in epoch 1 on a {self.schedule} schedule (σ now "
                    f"{self.noise_multiplier_at(max(self.steps - 1, 0)):.4f})")
    return (f"{prefix}{accountants} at δ = {self.delta:g} after {self._prior_text()}"
            f"{self._normalization_text()}{self._probe_text()}{self.steps} steps, {mechanism}, "
            f"q = {self.sampling_probability:.5f}; {SAMPLING_NOTES[self.sampling]}; "
            f"{RANDOMNESS_NOTES[self.randomness]}; {self._float_note()}")

  def _prior_text(self) -> str:
    if not self.prior_phases:
      return ""
    count = len(self.prior_phases)
    return f"{count} earlier phase{'s' if count > 1 else ''} ({self.prior_steps} steps) and "

  def _normalization_text(self) -> str:
    if not self.normalization or not self.normalization_released:
      return ""
    return scatter_statistics.MECHANISM.text(self.normalization)

  def _probe_text(self) -> str:
    if not self.probe:
      return ""
    return linear_probe.MECHANISM.text(self.probe, self.probe_steps)

  def _float_note(self) -> str:
    return self.noise_mechanism.float_note(self.float_tail_delta(), self.coordinates,
                                           self.grid_scale())

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
    return not self.mechanism_changes(other)

  def mechanism_changes(self, other: "PrivacyLedger") -> List[str]:
    """What differs from `other` in the mechanism and budget, one 'name: ours -> theirs' each."""
    keys = ("noise_multiplier", "sampling_probability", "delta", "sampling", "target_epsilon",
            "noise", "schedule", "epoch_factors", "steps_per_epoch", "randomness", "probe",
            "normalization", "prior_phases")
    changes = [f"{k}: {getattr(self, k)!r} -> {getattr(other, k)!r}" for k in keys
               if not _close(getattr(self, k), getattr(other, k))]
    return changes + _setting_changes(self.mechanism, other.mechanism)


_PHASE_KEYS = ("noise_multiplier", "sampling_probability", "steps")


def phase_segments(phases: List[Dict[str, Any]]) -> List[Tuple[float, int, float]]:
  """Phases (PrivacyLedger.prior_phases) as (σ, steps, q) segments for the accountant."""
  return [(float(p["noise_multiplier"]), int(p["steps"]), float(p["sampling_probability"]))
          for p in phases]


def _check_phase(phase: Dict[str, Any]) -> None:
  missing = [key for key in _PHASE_KEYS if key not in phase]
  if missing:
    raise ValueError(f"an earlier phase needs the keys {list(_PHASE_KEYS)}; {phase!r} lacks "
                     f"{missing}")
  if not phase["noise_multiplier"] > 0 or not 0 < phase["sampling_probability"] <= 1 or \
      int(phase["steps"]) < 0:
    raise ValueError(f"an earlier phase needs noise_multiplier > 0, sampling_probability in "
                     f"(0, 1] and steps >= 0; got {phase!r}")


_ABSENT = object()


def _setting_changes(ours: Dict[str, Any], theirs: Dict[str, Any]) -> List[str]:
  """'key: ours -> theirs' per differing mechanism setting; none recorded (older ledger) differs."""
  if not ours and theirs:
    return [f"mechanism settings: not recorded (a ledger from an older tfdp) -> {theirs!r}"]
  changes = []
  for key in sorted(set(ours) | set(theirs)):
    a, b = ours.get(key, _ABSENT), theirs.get(key, _ABSENT)
    if a is _ABSENT or b is _ABSENT or not _close(a, b):
      changes.append(f"{key}: {_shown(a)} -> {_shown(b)}")
  return changes


def _shown(value) -> str:
  return "(absent)" if value is _ABSENT else repr(value)


def _close(a, b) -> bool:
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
  if isinstance(a, float) and isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-9)
  return a == b
