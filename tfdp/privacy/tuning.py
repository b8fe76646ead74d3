"""The privacy cost of choosing the best of several DP-SGD runs on the same data. No TensorFlow.

Looking at K runs' results on the same private data and keeping the best leaks more than one run:
the choice depends on all K. Papernot & Steinke (ICLR 2022, "Hyperparameter tuning with Rényi
differential privacy", Theorem 2) bound it when the number of runs is itself random:

  Let Q be a randomized algorithm whose outputs are totally ordered (by a score that is part of the
  output), satisfying (λ, ε)-RDP and (λ̂, ε̂)-RDP, with λ > 1 and λ̂ >= 1. Let K follow the
  truncated negative binomial distribution with shape η > -1 and γ in (0, 1):
    P[K = k] = (1 - γ)^k / (γ^-η - 1) · Π_{l=0}^{k-1} (l + η) / (l + 1)   for k >= 1, η != 0,
    P[K = k] = (1 - γ)^k / (k · log(1/γ))                                 for k >= 1, η = 0,
  (η = 1 is the geometric distribution, η = 0 the logarithmic one). Let A run Q independently K
  times on the same data and release only the best output. Then A is (λ, ε')-RDP with
    ε' = ε + (1 + η)(1 - 1/λ̂) ε̂ + (1 + η) log(1/γ) / λ̂ + log(E[K]) / (λ - 1).

`selection_epsilon` applies it over dp_accounting's RDP orders (its implementation of this theorem;
shapes η >= 0 only) and converts to (ε, δ). For the theorem to describe a tuning procedure:
- Q is one whole training run *including the random choice of its hyperparameters* from a fixed,
  public distribution (e.g. a uniform draw from a grid). Its RDP curve must bound every candidate
  at every order: a mixture over public weights is at most the largest of its components' RDP at
  each order (quasi-convexity of Rényi divergence), so Q's curve is the *pointwise maximum* of the
  candidates' curves. No single candidate's curve will do: the one with the largest ε can have
  the smaller RDP at the orders that the theorem's constant term uses. At q = 0.01 and E[K] = 10,
  candidates (σ 0.6, 5 steps; ε 3.39 alone) and (σ 2.5, 20,000 steps; ε 2.62 alone): the larger
  ε's curve alone gives 5.54, the pointwise maximum 6.51;
- K is drawn at random (`draw_number_of_runs`, from a secure source) and kept secret, and only the
  selected run is released: not the others, not their scores, not K;
- the score that picks the best run is part of Q's private output: computed from public data, or
  privatized itself. A score from a private validation set is not covered.
A fixed grid looked at in full (tfdp.experiments.sweep) satisfies none of this: its selected run's ε is not
bounded by this module.

>>> round(accounting.epsilon(1.0, 0.01, 100, 1e-5), 2)  # One run.
1.21
>>> round(selection_epsilon([[(1.0, 100)]], 0.01, 1e-5, mean_runs=10.0), 2)  # The best of K ~ 10.
2.24
>>> round(selection_epsilon([[(0.6, 5)], [(2.5, 20_000)]], 0.01, 1e-5, mean_runs=10.0), 2)
6.51
"""

import math
import secrets
from typing import Optional, Sequence

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant
import numpy as np

from tfdp.privacy import accounting


def _check(mean_runs: float, shape: float) -> None:
  if not (math.isfinite(mean_runs) and mean_runs >= 1):
    raise ValueError(f"mean_runs must be a finite number >= 1, got {mean_runs}")
  if not (math.isfinite(shape) and shape >= 0):
    raise ValueError(f"shape (η) must be finite and >= 0 (0: logarithmic, 1: geometric), got "
                     f"{shape}")


def selection_epsilon(candidates: Sequence[accounting.Segments], sampling_probability: float,
                      delta: float, mean_runs: float, shape: float = 1.0) -> float:
  """ε at δ of releasing the best of K DP-SGD runs, K truncated negative binomial (Theorem 2 above).

  Args:
    candidates: every hyperparameter setting a run may draw, each as its (noise multiplier,
      steps[, q]) segments (accounting.composed_epsilon's form; Gaussian noise). Q's RDP is their
      pointwise maximum over orders.
    sampling_probability: q of the segments that do not give their own.
    delta: the δ at which ε is reported.
    mean_runs: E[K] >= 1; γ is derived from it and `shape`.
    shape: η >= 0: 1 is geometric (the usual choice), 0 logarithmic; larger η concentrates K.

  Returns:
    ε of the selected run, by the RDP accountant; 0 without noisy steps, inf with a noiseless one.
  """
  _check(mean_runs, shape)
  if not candidates:
    raise ValueError("candidates is empty: give every setting a run may draw")
  if any(segment[1] > 0 and segment[0] == 0 for candidate in candidates for segment in candidate):
    return math.inf
  curves = [_rdp_curve(candidate, sampling_probability, delta) for candidate in candidates]
  orders = np.array(_ORDERS, dtype=np.float64)
  # pylint: disable-next=protected-access
  selected = rdp_privacy_accountant._compute_rdp_repeat_and_select(
      orders, np.max(curves, axis=0), mean_runs, shape)
  return float(rdp_privacy_accountant.compute_epsilon(orders, selected, delta)[0])


_ORDERS = dp_accounting.rdp.RdpAccountant()._orders  # pylint: disable=protected-access


def _rdp_curve(segments: accounting.Segments, sampling_probability: float,
               delta: float) -> np.ndarray:
  """One candidate's RDP at every order of _ORDERS."""
  accounting.composed_epsilon(segments, sampling_probability, delta)  # Validates the arguments.
  accountant = dp_accounting.rdp.RdpAccountant(_ORDERS)
  accountant.compose(accounting.composed_event(segments, sampling_probability))
  return np.array(accountant._rdp)  # pylint: disable=protected-access


def draw_number_of_runs(mean_runs: float, shape: float = 1.0,
                        rng: Optional[np.random.Generator] = None) -> int:
  """K >= 1 from the truncated negative binomial with E[K] = mean_runs (Theorem 2 above).

  Args:
    mean_runs: E[K] >= 1.
    shape: η >= 0 (0: logarithmic, 1: geometric).
    rng: the random source; default one keyed by 128 bits from the operating system's CSPRNG,
      since K must stay secret (pass a seeded one only to test).
  """
  _check(mean_runs, shape)
  if mean_runs == 1:
    return 1
  rng = rng or np.random.default_rng(secrets.randbits(128))
  # γ with E[K] = mean_runs, by the inversion the accountant itself uses.
  # pylint: disable-next=protected-access
  gamma = rdp_privacy_accountant._gamma_truncated_negative_binomial(shape, mean_runs)
  if shape == 0:
    return int(rng.logseries(1 - gamma))
  while True:  # The negative binomial (failures before η successes), conditioned on K >= 1.
    k = int(rng.negative_binomial(shape, gamma))
    if k >= 1:
      return k
