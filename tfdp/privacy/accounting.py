"""(ε, δ) accounting for DP-SGD with Poisson-subsampled Gaussian steps.

Pure functions over dp_accounting events; no TensorFlow. One DP-SGD step with sampling probability q and
noise multiplier σ is the event PoissonSampled(q, Gaussian(σ)) under add/remove-one adjacency; a run of
T steps is that event self-composed T times. A noise schedule is a heterogeneous composition of such
steps; Laplace noise replaces Gaussian(σ) by Laplace(b / L1 sensitivity), accounted by PLD.

Which events and curves a noise has is its mechanism's (tfdp.privacy.mechanisms): the Gaussian
and Laplace mechanisms give dp_accounting events; the discrete Gaussian has none, and gives its
Rényi curve at integer orders under the general subsampling bound (tfdp.privacy.subsampling).

>>> round(epsilon(noise_multiplier=1.1, sampling_probability=256 / 60000, steps=14063, delta=1e-5), 2)
2.6
>>> sigma = calibrate_noise_multiplier(3.0, 1e-5, sampling_probability=0.01, steps=1000)
>>> 2.97 <= epsilon(sigma, 0.01, 1000, 1e-5) <= 3.0
True
"""

import math
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple, Union

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant

from tfdp.privacy import mechanisms
from tfdp.privacy import subsampling

ACCOUNTANTS = ("rdp", "pld")
_PLD_DISCRETIZATION = 1e-3  # Interval of the PLD's privacy-loss grid; finer costs time, not safety:
# the PLD accountant rounds pessimistically, so a coarser grid only over-reports ε slightly.


NOISES = mechanisms.NOISES
subsampled_rdp_any_mechanism = subsampling.subsampled_rdp_any_mechanism
# A run as (noise multiplier, number of steps) segments, composed in order, each optionally with its
# own sampling probability as a third element, (σ, steps, q): a phase with another batch size (the
# linear probe before fine-tuning). Gaussian: σ = noise std / L2 sensitivity. Laplace: σ = b / L1
# sensitivity (b the per-coordinate scale), dp_accounting's convention for LaplaceDpEvent.
Segments = Sequence[Union[Tuple[float, int], Tuple[float, int, float]]]


def step_event(noise_multiplier: float, sampling_probability: float,
               noise: str = "gaussian") -> dp_accounting.DpEvent:
  """One Poisson-subsampled noisy step, as its mechanism (tfdp.privacy.mechanisms) gives it."""
  return mechanisms.of_noise(noise).dp_event(noise_multiplier, sampling_probability)


def dp_sgd_event(noise_multiplier: float, sampling_probability: float,
                 steps: int) -> dp_accounting.DpEvent:
  """The DpEvent of `steps` Poisson-subsampled Gaussian steps."""
  return dp_accounting.SelfComposedDpEvent(step_event(noise_multiplier, sampling_probability), steps)


def composed_event(segments: Segments, sampling_probability: float,
                   noise: str = "gaussian") -> dp_accounting.DpEvent:
  """The heterogeneous composition of `segments`, each a self-composed step event."""
  return dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(step_event(sigma, q, noise), count)
      for sigma, count, q in _with_probability(segments, sampling_probability) if count > 0])


def _with_probability(segments: Segments, sampling_probability: float) -> List[Tuple[float, int,
                                                                                    float]]:
  """Every segment as (σ, steps, q), q defaulting to `sampling_probability`."""
  return [(float(s[0]), int(s[1]), float(s[2]) if len(s) > 2 else sampling_probability)
          for s in segments]


class Release(NamedTuple):
  """`count` releases of one noisy step each: PoissonSampled(q, noise(σ)) of the mechanism of
  `noise` (tfdp.privacy.mechanisms.NOISES); a run is a list of them, composed in order."""
  noise: str
  noise_multiplier: float
  count: int
  sampling_probability: float

  def dp_event(self) -> dp_accounting.DpEvent:
    step = mechanisms.of_noise(self.noise).dp_event(self.noise_multiplier,
                                                    self.sampling_probability)
    return dp_accounting.SelfComposedDpEvent(step, self.count)


def _epsilon_rdp(releases: Sequence[Release], delta: float) -> float:
  kinds = [mechanisms.of_noise(r.noise) for r in releases]
  for kind in kinds:
    if "rdp" not in kind.accountants:
      raise ValueError(f"the RDP accountant has no bound for Poisson-subsampled {kind.family} "
                       "noise; use the PLD accountant")
  orders = {kind.rdp_orders() for kind in kinds}
  if len(orders) > 1:
    raise ValueError(f"the RDP accountant cannot compose {sorted({r.noise for r in releases})} "
                     "releases: their Rényi curves are at different orders")
  rdp = sum(r.count * kind.rdp_of_step(r.noise_multiplier, r.sampling_probability)
            for r, kind in zip(releases, kinds))
  return float(rdp_privacy_accountant.compute_epsilon(orders.pop(), rdp, delta)[0])


def _epsilon_pld(releases: Sequence[Release], delta: float) -> float:
  events = [r.dp_event() for r in releases]
  accountant = dp_accounting.pld.PLDAccountant(
      value_discretization_interval=pld_discretization(min(r.noise_multiplier
                                                           for r in releases)))
  try:
    for event in events:
      accountant.compose(event)
    return float(accountant.get_epsilon(delta))
  except OverflowError:  # dp_accounting's Laplace losses overflow for tiny σ: ε is unbounded.
    return math.inf


def pld_discretization(noise_multiplier: float) -> float:
  """The PLD grid's interval for a run whose smallest σ is `noise_multiplier`.

  A step's privacy losses span about 1/σ² (Gaussian), so below σ = 0.5 the fixed grid would hold
  millions of points (σ = 0.01: minutes per ε). The grid widens as 1/σ² there; the accountant
  rounds pessimistically, so a coarser grid only over-reports an ε that is enormous anyway.
  """
  return _PLD_DISCRETIZATION * max(1.0, (0.5 / noise_multiplier) ** 2)


_EPSILON_FNS: Dict[str, Callable[[Sequence[Release], float], float]] = {
    "rdp": _epsilon_rdp,
    "pld": _epsilon_pld,
}


def _check(releases: Sequence[Release], delta: float, accountant: str):
  for release in releases:
    if release.noise_multiplier < 0:
      raise ValueError(f"noise_multiplier must be >= 0, got {release.noise_multiplier}")
    if release.count < 0:
      raise ValueError(f"steps must be >= 0, got {release.count}")
    if not 0 < release.sampling_probability <= 1:
      raise ValueError(f"sampling_probability must be in (0, 1], got "
                       f"{release.sampling_probability}")
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta}")
  if accountant not in _EPSILON_FNS:
    raise ValueError(f"unknown accountant {accountant!r}; valid: {sorted(_EPSILON_FNS)}")


def releases_epsilon(releases: Sequence[Release], delta: float, accountant: str = "rdp") -> float:
  """ε of a run released as `releases`, composed in order (adaptively: a release may depend on
  the ones before it), by `accountant` ('rdp' or 'pld'; each noise's mechanism lists the ones
  that apply). 0 without releases, `inf` when a taken release has no noise."""
  _check(releases, delta, accountant)
  taken = [release for release in releases if release.count > 0]
  if not taken:
    return 0.0
  if any(release.noise_multiplier == 0 for release in taken):
    return math.inf
  return _EPSILON_FNS[accountant](taken, delta)


def as_releases(segments: Segments, sampling_probability: float,
                noise: str = "gaussian") -> List[Release]:
  """Segments of one noise as releases (q defaulting to `sampling_probability`)."""
  return [Release(noise, sigma, count, q)
          for sigma, count, q in _with_probability(segments, sampling_probability)]


def composed_epsilon(segments: Segments, sampling_probability: float, delta: float,
                     accountant: str = "rdp", noise: str = "gaussian") -> float:
  """ε of a run whose steps have different noise multipliers (a noise schedule).

  Args:
    segments: (noise multiplier, steps) pairs, composed in order (adaptively: a segment may
      depend on the releases before it); a triple (σ, steps, q') samples with its own q'.
    sampling_probability: q of the segments that do not give their own.
    delta: the δ at which ε is reported.
    accountant: 'rdp' or 'pld' (a noise's mechanism lists the ones that apply).
    noise: a NOISES name.

  Returns:
    ε of the composition; 0 without steps, `inf` when a taken step has no noise.
  """
  return releases_epsilon(as_releases(segments, sampling_probability, noise), delta, accountant)


def epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float,
            accountant: str = "rdp", noise: str = "gaussian") -> float:
  """ε spent by `steps` DP-SGD steps (Poisson sampling, add/remove-one adjacency).

  Args:
    noise_multiplier: σ, the noise std divided by the L2 clip norm (sensitivity); for Laplace
      noise, the per-coordinate scale b divided by the L1 clip norm.
    sampling_probability: q, each example's inclusion probability per step.
    steps: number of noisy steps taken.
    delta: the δ at which ε is reported.
    accountant: 'rdp' (Rényi DP, as TF Privacy) or 'pld' (privacy loss distributions, tighter).
    noise: 'gaussian' or 'laplace'.

  Returns:
    ε; `inf` when σ = 0 and steps > 0.
  """
  return composed_epsilon([(noise_multiplier, steps)], sampling_probability, delta, accountant,
                          noise)


def calibrate_scale(epsilon_of: Callable[[float], float], target_epsilon: float,
                    rel_tol: float = 0.01, what: str = "noise multiplier") -> float:
  """The smallest scale s (to `rel_tol` in ε) with epsilon_of(s) <= target; ε must fall with s.

  The returned s satisfies (1 - rel_tol) * target <= epsilon_of(s) <= target.
  """
  if target_epsilon <= 0:
    raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")
  low, high = 0.0, 1.0
  while epsilon_of(high) > target_epsilon:
    low, high = high, 2 * high
    if high > 1e4:
      raise ValueError(f"no {what} up to 1e4 reaches ε = {target_epsilon}")
  while epsilon_of(high) < (1 - rel_tol) * target_epsilon and high - low > 1e-9:
    middle = (low + high) / 2
    if epsilon_of(middle) > target_epsilon:
      low = middle
    else:
      high = middle
  return high


def calibrate_noise_multiplier(target_epsilon: float, delta: float, sampling_probability: float,
                               steps: int, accountant: str = "rdp", rel_tol: float = 0.01,
                               noise: str = "gaussian") -> float:
  """The smallest σ (to `rel_tol` in ε) whose ε after `steps` steps is at most `target_epsilon`.

  The returned σ satisfies (1 - rel_tol) * target <= ε(σ) <= target.
  """
  return calibrate_schedule(target_epsilon, delta, sampling_probability, [(1.0, steps)],
                            accountant, rel_tol, noise)


def calibrate_schedule(target_epsilon: float, delta: float, sampling_probability: float,
                       shape: Segments, accountant: str = "rdp", rel_tol: float = 0.01,
                       noise: str = "gaussian", before: Segments = ()) -> float:
  """The smallest base σ such that the schedule σ * factor over `shape` spends at most the target.

  Args:
    shape: (factor, steps) pairs: the schedule's relative noise and how many steps use it.
    before: segments with a fixed σ composed ahead of the schedule (a linear probe), which the
      target must also cover.

  Returns:
    σ_base; step i of segment k then uses noise multiplier σ_base * factor_k.
  """
  fixed = list(before)
  eps = lambda base: composed_epsilon(fixed + [(base * f, n) for f, n in shape],
                                      sampling_probability, delta, accountant, noise)
  return calibrate_scale(eps, target_epsilon, rel_tol)


def max_steps_within(epsilon_after: Callable[[int], float], target_epsilon: float,
                     upper: int = 10**8) -> int:
  """The largest n with epsilon_after(n) <= target (ε must grow with n), at most `upper`."""
  if epsilon_after(1) > target_epsilon:
    return 0
  low, high = 1, 2
  while high <= upper and epsilon_after(high) <= target_epsilon:
    low, high = high, 2 * high
  high = min(high, upper + 1)
  while high - low > 1:
    middle = (low + high) // 2
    if epsilon_after(middle) <= target_epsilon:
      low = middle
    else:
      high = middle
  return low


def max_steps(noise_multiplier: float, sampling_probability: float, delta: float,
              target_epsilon: float, upper: int = 10**8) -> int:
  """The largest number of steps whose RDP ε stays at most `target_epsilon`."""
  return max_steps_within(
      lambda n: epsilon(noise_multiplier, sampling_probability, n, delta), target_epsilon, upper)
