"""Privacy amplification by Poisson subsampling for any mechanism, at integer Rényi orders.

No TensorFlow. Zhu & Wang 2019 (Theorem 6, "general upper bound", valid for any mechanism under
add/remove adjacency) at integer orders α:
  (α-1) ε_q(α) <= log[(1-q)^(α-1) (αq - q + 1) + C(α,2) q² (1-q)^(α-2) e^ε(2)
                      + 3 Σ_{l=3..α} C(α,l) (1-q)^(α-l) q^l e^((l-1) ε(l))]
taken together with the variant of the tail terms C(α,l) (1-q)^(α-l) q^l e^(l ε(l+1)) without the
factor 3 (the larger of the two is used, so either bound alone suffices).
"""

import math
from typing import Callable

import numpy as np
from scipy import special

INTEGER_ORDERS = tuple(range(2, 257))  # The general subsampling bound holds at integer orders.


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
