"""(ε, δ) accounting for DP-SGD with Poisson-subsampled Gaussian steps.

Pure functions over dp_accounting events; no TensorFlow. One DP-SGD step with sampling probability q and
noise multiplier σ is the event PoissonSampled(q, Gaussian(σ)) under add/remove-one adjacency; a run of
T steps is that event self-composed T times. A noise schedule is a heterogeneous composition of such
steps; Laplace noise replaces Gaussian(σ) by Laplace(b / L1 sensitivity), accounted by PLD.

The discrete Gaussian (tfdp.dp.noise.DiscreteGaussianSumQuery) has no dp_accounting event. Its
unsampled release is (α, α / (2σ²))-RDP for every α > 1 (Canonne, Kamath & Steinke 2020: the
multivariate discrete Gaussian with L2 sensitivity-to-scale ratio 1/σ), the same curve as the
continuous Gaussian, but the exact subsampled-Gaussian analysis relies on the continuous mixture. So
its Poisson subsampling is bounded by Zhu & Wang 2019 (Theorem 6, "general upper bound", valid for
any mechanism under add/remove adjacency) at integer orders α:
  (α-1) ε_q(α) <= log[(1-q)^(α-1) (αq - q + 1) + C(α,2) q² (1-q)^(α-2) e^ε(2)
                      + 3 Σ_{l=3..α} C(α,l) (1-q)^(α-l) q^l e^((l-1) ε(l))]
taken together with the variant of the tail terms C(α,l) (1-q)^(α-l) q^l e^(l ε(l+1)) without the
factor 3 (the larger of the two is used, so either bound alone suffices), and converted to (ε, δ)
by dp_accounting's RDP conversion.

>>> round(epsilon(noise_multiplier=1.1, sampling_probability=256 / 60000, steps=14063, delta=1e-5), 2)
2.6
>>> sigma = calibrate_noise_multiplier(3.0, 1e-5, sampling_probability=0.01, steps=1000)
>>> 2.97 <= epsilon(sigma, 0.01, 1000, 1e-5) <= 3.0
True
"""

import functools
import math
from typing import Callable, Dict, List, Sequence, Tuple, Union

import dp_accounting
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

ACCOUNTANTS = ("rdp", "pld")
_PLD_DISCRETIZATION = 1e-3  # Interval of the PLD's privacy-loss grid; finer costs time, not safety:
# the PLD accountant rounds pessimistically, so a coarser grid only over-reports ε slightly.


NOISES = ("gaussian", "laplace", "discrete_gaussian")
ACCOUNTANTS_OF_NOISE = {"gaussian": ("rdp", "pld"), "laplace": ("pld",),
                        "discrete_gaussian": ("rdp",)}  # The first one enforces the budget.
_INTEGER_ORDERS = tuple(range(2, 257))  # The general subsampling bound holds at integer orders.
# A run as (noise multiplier, number of steps) segments, composed in order, each optionally with its
# own sampling probability as a third element, (σ, steps, q): a phase with another batch size (the
# linear probe before fine-tuning). Gaussian: σ = noise std / L2 sensitivity. Laplace: σ = b / L1
# sensitivity (b the per-coordinate scale), dp_accounting's convention for LaplaceDpEvent.
Segments = Sequence[Union[Tuple[float, int], Tuple[float, int, float]]]
_BASE_EVENTS = {"gaussian": dp_accounting.GaussianDpEvent, "laplace": dp_accounting.LaplaceDpEvent}


def step_event(noise_multiplier: float, sampling_probability: float,
               noise: str = "gaussian") -> dp_accounting.DpEvent:
  """One Poisson-subsampled noisy step."""
  if noise not in _BASE_EVENTS:
    raise ValueError(f"noise {noise!r} has no dp_accounting event; events exist for: "
                     f"{', '.join(_BASE_EVENTS)}")
  return dp_accounting.PoissonSampledDpEvent(sampling_probability,
                                             _BASE_EVENTS[noise](noise_multiplier))


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


@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(noise_multiplier: float, sampling_probability: float) -> np.ndarray:
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(step_event(noise_multiplier, sampling_probability))
  return np.array(accountant._rdp)  # pylint: disable=protected-access  (RDP is linear in steps)


def _log_binomial(n: int, k: np.ndarray) -> np.ndarray:
  return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def subsampled_rdp_any_mechanism(rdp_of: Callable[[int], float], sampling_probability: float,
                                 order: int) -> float:
  """Zhu & Wang 2019's general bound on the RDP at integer `order` >= 2 of a Poisson-subsampled
  mechanism whose own RDP at order a is rdp_of(a) (see the module docstring)."""
  q, alpha = sampling_probability, order
  if q == 1.0:
    return rdp_of(alpha)
  log_q, log_p = math.log(q), math.log1p(-q)
  head = [(alpha - 1) * log_p + math.log(alpha * q - q + 1),
          float(_log_binomial(alpha, np.array(2))) + 2 * log_q + (alpha - 2) * log_p + rdp_of(2)]
  tails = np.arange(3, alpha + 1)
  common = _log_binomial(alpha, tails) + (alpha - tails) * log_p + tails * log_q
  with_three = math.log(3) + special.logsumexp(
      common + np.array([(l - 1) * rdp_of(l) for l in tails])) if len(tails) else -math.inf
  without = special.logsumexp(
      common + np.array([l * rdp_of(l + 1) for l in tails])) if len(tails) else -math.inf
  bounds = [special.logsumexp(head + [tail]) for tail in (with_three, without)]
  return float(max(bounds)) / (alpha - 1)


@functools.lru_cache(maxsize=256)
def _rdp_of_one_discrete_step(noise_multiplier: float, sampling_probability: float) -> np.ndarray:
  unsampled = lambda order: order / (2.0 * noise_multiplier ** 2)
  return np.array([subsampled_rdp_any_mechanism(unsampled, sampling_probability, order)
                   for order in _INTEGER_ORDERS])


def _epsilon_rdp(segments: Segments, sampling_probability: float, delta: float,
                 noise: str) -> float:
  if noise == "gaussian":
    rdp = sum(count * _rdp_of_one_step(sigma, q) for sigma, count, q in segments)
    orders = dp_accounting.rdp.RdpAccountant()._orders  # pylint: disable=protected-access
  elif noise == "discrete_gaussian":
    rdp = sum(count * _rdp_of_one_discrete_step(sigma, q) for sigma, count, q in segments)
    orders = _INTEGER_ORDERS
  else:
    raise ValueError(f"the RDP accountant has no bound for Poisson-subsampled {noise} noise; "
                     "use the PLD accountant")
  return float(rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)[0])


def _epsilon_pld(segments: Segments, sampling_probability: float, delta: float,
                 noise: str) -> float:
  if noise not in _BASE_EVENTS:
    raise ValueError(f"the PLD accountant has no {noise} mechanism; use the RDP accountant")
  accountant = dp_accounting.pld.PLDAccountant(
      value_discretization_interval=pld_discretization(min(s[0] for s in segments)))
  for sigma, count, q in segments:
    accountant.compose(step_event(sigma, q, noise), count)
  return float(accountant.get_epsilon(delta))


def pld_discretization(noise_multiplier: float) -> float:
  """The PLD grid's interval for a run whose smallest σ is `noise_multiplier`.

  A step's privacy losses span about 1/σ² (Gaussian), so below σ = 0.5 the fixed grid would hold
  millions of points (σ = 0.01: minutes per ε). The grid widens as 1/σ² there; the accountant
  rounds pessimistically, so a coarser grid only over-reports an ε that is enormous anyway.
  """
  return _PLD_DISCRETIZATION * max(1.0, (0.5 / noise_multiplier) ** 2)


_EPSILON_FNS: Dict[str, Callable[[Segments, float, float, str], float]] = {
    "rdp": _epsilon_rdp,
    "pld": _epsilon_pld,
}


def _check(segments: Segments, sampling_probability: float, delta: float, accountant: str):
  for sigma, count, q in _with_probability(segments, sampling_probability):
    if sigma < 0:
      raise ValueError(f"noise_multiplier must be >= 0, got {sigma}")
    if count < 0:
      raise ValueError(f"steps must be >= 0, got {count}")
    if not 0 < q <= 1:
      raise ValueError(f"sampling_probability must be in (0, 1], got {q}")
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta}")
  if accountant not in _EPSILON_FNS:
    raise ValueError(f"unknown accountant {accountant!r}; valid: {sorted(_EPSILON_FNS)}")


def composed_epsilon(segments: Segments, sampling_probability: float, delta: float,
                     accountant: str = "rdp", noise: str = "gaussian") -> float:
  """ε of a run whose steps have different noise multipliers (a noise schedule).

  Args:
    segments: (noise multiplier, steps) pairs, composed in order (adaptively: a segment may
      depend on the releases before it); a triple (σ, steps, q') samples with its own q'.
    sampling_probability: q of the segments that do not give their own.
    delta: the δ at which ε is reported.
    accountant: 'rdp' or 'pld' (ACCOUNTANTS_OF_NOISE says which apply to each noise).
    noise: a NOISES name.

  Returns:
    ε of the composition; 0 without steps, `inf` when a taken step has no noise.
  """
  _check(segments, sampling_probability, delta, accountant)
  taken = [s for s in _with_probability(segments, sampling_probability) if s[1] > 0]
  if not taken:
    return 0.0
  if any(sigma == 0 for sigma, _, _ in taken):
    return math.inf
  return _EPSILON_FNS[accountant](taken, sampling_probability, delta, noise)


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
