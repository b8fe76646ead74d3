"""(ε, δ) accounting for DP-SGD with Poisson-subsampled Gaussian steps.

Pure functions over dp_accounting events; no TensorFlow. One DP-SGD step with sampling probability q and
noise multiplier σ is the event PoissonSampled(q, Gaussian(σ)) under add/remove-one adjacency; a run of
T steps is that event self-composed T times.

>>> round(epsilon(noise_multiplier=1.1, sampling_probability=256 / 60000, steps=14063, delta=1e-5), 2)
2.6
>>> sigma = calibrate_noise_multiplier(3.0, 1e-5, sampling_probability=0.01, steps=1000)
>>> 2.97 <= epsilon(sigma, 0.01, 1000, 1e-5) <= 3.0
True
"""

import functools
import math
from typing import Callable, Dict

import dp_accounting
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

ACCOUNTANTS = ("rdp", "pld")
_PLD_DISCRETIZATION = 1e-3  # Interval of the PLD's privacy-loss grid; finer costs time, not safety:
# the PLD accountant rounds pessimistically, so a coarser grid only over-reports ε slightly.


def dp_sgd_event(noise_multiplier: float, sampling_probability: float,
                 steps: int) -> dp_accounting.DpEvent:
  """The DpEvent of `steps` Poisson-subsampled Gaussian steps."""
  step = dp_accounting.PoissonSampledDpEvent(sampling_probability,
                                             dp_accounting.GaussianDpEvent(noise_multiplier))
  return dp_accounting.SelfComposedDpEvent(step, steps)


@functools.lru_cache(maxsize=64)
def _rdp_of_one_step(noise_multiplier: float, sampling_probability: float) -> np.ndarray:
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_sgd_event(noise_multiplier, sampling_probability, 1))
  return np.array(accountant._rdp)  # pylint: disable=protected-access  (RDP is linear in steps)


def _epsilon_rdp(noise_multiplier: float, sampling_probability: float, steps: int,
                 delta: float) -> float:
  rdp = steps * _rdp_of_one_step(noise_multiplier, sampling_probability)
  orders = dp_accounting.rdp.RdpAccountant()._orders  # pylint: disable=protected-access
  return float(rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)[0])


def _epsilon_pld(noise_multiplier: float, sampling_probability: float, steps: int,
                 delta: float) -> float:
  accountant = dp_accounting.pld.PLDAccountant(
      value_discretization_interval=_PLD_DISCRETIZATION)
  accountant.compose(dp_sgd_event(noise_multiplier, sampling_probability, steps))
  return float(accountant.get_epsilon(delta))


_EPSILON_FNS: Dict[str, Callable[[float, float, int, float], float]] = {
    "rdp": _epsilon_rdp,
    "pld": _epsilon_pld,
}


def _check(noise_multiplier: float, sampling_probability: float, steps: int, delta: float):
  if noise_multiplier < 0:
    raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
  if not 0 < sampling_probability <= 1:
    raise ValueError(f"sampling_probability must be in (0, 1], got {sampling_probability}")
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}")
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float,
            accountant: str = "rdp") -> float:
  """ε spent by `steps` DP-SGD steps (Poisson sampling, add/remove-one adjacency).

  Args:
    noise_multiplier: σ, the noise std divided by the L2 clip norm (sensitivity).
    sampling_probability: q, each example's inclusion probability per step.
    steps: number of noisy steps taken.
    delta: the δ at which ε is reported.
    accountant: 'rdp' (Rényi DP, as TF Privacy) or 'pld' (privacy loss distributions, tighter).

  Returns:
    ε; `inf` when σ = 0 and steps > 0.
  """
  _check(noise_multiplier, sampling_probability, steps, delta)
  if accountant not in _EPSILON_FNS:
    raise ValueError(f"unknown accountant {accountant!r}; valid: {sorted(_EPSILON_FNS)}")
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  return _EPSILON_FNS[accountant](noise_multiplier, sampling_probability, steps, delta)


def calibrate_noise_multiplier(target_epsilon: float, delta: float, sampling_probability: float,
                               steps: int, accountant: str = "rdp",
                               rel_tol: float = 0.01) -> float:
  """The smallest σ (to `rel_tol` in ε) whose ε after `steps` steps is at most `target_epsilon`.

  The returned σ satisfies (1 - rel_tol) * target <= ε(σ) <= target.
  """
  if target_epsilon <= 0:
    raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")
  eps = lambda sigma: epsilon(sigma, sampling_probability, steps, delta, accountant)
  low, high = 0.0, 1.0
  while eps(high) > target_epsilon:
    low, high = high, 2 * high
    if high > 1e4:
      raise ValueError(f"no noise multiplier up to 1e4 reaches ε = {target_epsilon} "
                       f"at δ = {delta} over {steps} steps")
  while eps(high) < (1 - rel_tol) * target_epsilon and high - low > 1e-9:
    middle = (low + high) / 2
    if eps(middle) > target_epsilon:
      low = middle
    else:
      high = middle
  return high


def max_steps(noise_multiplier: float, sampling_probability: float, delta: float,
              target_epsilon: float, upper: int = 10**8) -> int:
  """The largest number of steps whose RDP ε stays at most `target_epsilon`."""
  if epsilon(noise_multiplier, sampling_probability, 1, delta) > target_epsilon:
    return 0
  low, high = 1, 2
  while high < upper and epsilon(noise_multiplier, sampling_probability, high,
                                 delta) <= target_epsilon:
    low, high = high, 2 * high
  while high - low > 1:
    middle = (low + high) // 2
    if epsilon(noise_multiplier, sampling_probability, middle, delta) <= target_epsilon:
      low = middle
    else:
      high = middle
  return low
