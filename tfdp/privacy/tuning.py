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

`selection_epsilon` applies it over dp_accounting's RDP orders (its RepeatAndSelectDpEvent, which
implements this theorem; shapes η >= 0 only) and converts to (ε, δ). For the theorem to describe a
tuning procedure:
- Q is one whole training run *including the random choice of its hyperparameters* from a fixed,
  public distribution (e.g. a uniform draw from a grid), and its ε is that of the candidate that
  spends most, so every candidate is at most (λ, ε)-RDP;
- K is drawn at random (`draw_number_of_runs`, from a secure source) and kept secret, and only the
  selected run is released: not the others, not their scores, not K;
- the score that picks the best run is part of Q's private output: computed from public data, or
  privatized itself. A score from a private validation set is not covered.
A fixed grid looked at in full (tfdp.experiments.sweep) satisfies none of this: its selected run's ε is not
bounded by this module.

>>> round(accounting.epsilon(1.0, 0.01, 100, 1e-5), 2)  # One run.
1.21
>>> round(selection_epsilon([(1.0, 100)], 0.01, 1e-5, mean_runs=10.0), 2)  # The best of K ~ 10.
2.24
"""

import math
import secrets
from typing import Optional

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


def selection_epsilon(segments: accounting.Segments, sampling_probability: float, delta: float,
                      mean_runs: float, shape: float = 1.0) -> float:
  """ε at δ of releasing the best of K DP-SGD runs, K truncated negative binomial (Theorem 2 above).

  Args:
    segments: every candidate run's (noise multiplier, steps), as accounting.composed_epsilon
      takes them (Gaussian noise; use the candidate that spends most).
    sampling_probability: q of every candidate.
    delta: the δ at which ε is reported.
    mean_runs: E[K] >= 1; γ is derived from it and `shape`.
    shape: η >= 0: 1 is geometric (the usual choice), 0 logarithmic; larger η concentrates K.

  Returns:
    ε of the selected run, by the RDP accountant; 0 without noisy steps, inf with a noiseless one.
  """
  _check(mean_runs, shape)
  if any(count > 0 and sigma == 0 for sigma, count in segments):
    return math.inf
  accounting.composed_epsilon(segments, sampling_probability, delta)  # Validates the arguments.
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.dp_event.RepeatAndSelectDpEvent(
      accounting.composed_event(segments, sampling_probability), mean_runs, shape))
  return float(accountant.get_epsilon(delta))


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
