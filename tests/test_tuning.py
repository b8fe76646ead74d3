"""The ε of releasing the best of a random number of runs (Papernot & Steinke 2022, Theorem 2)."""

import math

import dp_accounting
import numpy as np
import pytest

from tfdp.privacy import accounting
from tfdp.privacy import tuning

CANDIDATES, Q, DELTA = [[(1.0, 100)]], 0.01, 1e-5
# Two settings where the one with the larger ε alone has the smaller RDP at low orders.
SHORT_LOUD, LONG_QUIET = [(0.6, 5)], [(2.5, 20_000)]


def _theorem_2(mean_runs, shape, candidates=CANDIDATES):
  """Theorem 2 by hand over the RDP orders, on the pointwise maximum of the candidates' curves,
  the best λ̂ for each λ, then the RDP-to-(ε, δ) bound."""
  curves = []
  for candidate in candidates:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(accounting.composed_event(candidate, Q))
    curves.append(accountant._rdp)  # pylint: disable=protected-access
  # pylint: disable=protected-access
  orders, rdp = np.array(accountant._orders), np.max(curves, axis=0)
  rdp_lib = dp_accounting.rdp.rdp_privacy_accountant
  gamma = rdp_lib._gamma_truncated_negative_binomial(shape, mean_runs)
  # pylint: enable=protected-access
  if shape == 1:
    expected = 1 / gamma
  else:
    expected = shape * (1 / gamma - 1) / (1 - gamma ** shape)
  assert expected == pytest.approx(mean_runs, rel=1e-6)
  constant = (1 + shape) * min((1 - 1 / lh) * eh + math.log(1 / gamma) / lh
                               for lh, eh in zip(orders, rdp))
  selected = rdp + constant + math.log(expected) / (orders - 1)
  selected = np.minimum.accumulate(selected[::-1])[::-1]  # RDP is monotone in the order.
  return rdp_lib.compute_epsilon(orders, selected, DELTA)[0]


@pytest.mark.parametrize("mean_runs,shape", [(10.0, 1.0), (5.0, 2.0), (30.0, 0.5)])
def test_selection_epsilon_is_theorem_2(mean_runs, shape):
  ours = tuning.selection_epsilon(CANDIDATES, Q, DELTA, mean_runs, shape)
  assert ours == pytest.approx(_theorem_2(mean_runs, shape), rel=1e-9)


def test_choosing_costs_more_than_one_run_and_more_with_more_runs():
  one = accounting.epsilon(1.0, Q, 100, DELTA)
  costs = [tuning.selection_epsilon(CANDIDATES, Q, DELTA, mean) for mean in (2.0, 10.0, 100.0)]
  assert one < costs[0] < costs[1] < costs[2]
  assert costs[1] == pytest.approx(2.24, abs=0.01)  # Pinned: dp_accounting 0.4.3.


def test_every_candidate_counts_through_the_pointwise_maximum_of_their_curves():
  alone = {name: accounting.composed_epsilon(c, Q, DELTA) for name, c in
           (("short_loud", SHORT_LOUD), ("long_quiet", LONG_QUIET))}
  assert alone["short_loud"] > alone["long_quiet"]  # 3.39 > 2.62: the "most expensive" one.
  both = tuning.selection_epsilon([SHORT_LOUD, LONG_QUIET], Q, DELTA, 10.0)
  assert both == pytest.approx(_theorem_2(10.0, 1.0, [SHORT_LOUD, LONG_QUIET]), rel=1e-9)
  for candidate in (SHORT_LOUD, LONG_QUIET):  # No single candidate's curve bounds Q.
    assert both > tuning.selection_epsilon([candidate], Q, DELTA, 10.0) + 0.5


@pytest.mark.parametrize("mean_runs,shape,message", [
    (0.5, 1.0, "mean_runs must be a finite number >= 1, got 0.5"),
    (5.0, math.inf, "shape"),
    (5.0, -0.5, "shape"),
])
def test_bad_parameters_are_refused_naming_them(mean_runs, shape, message):
  with pytest.raises(ValueError, match=message):
    tuning.selection_epsilon(CANDIDATES, Q, DELTA, mean_runs, shape)


@pytest.mark.parametrize("shape", [0.0, 1.0, 3.0])
def test_the_number_of_runs_has_the_requested_mean(shape):
  rng = np.random.default_rng(0)
  draws = np.array([tuning.draw_number_of_runs(6.0, shape, rng) for _ in range(20000)])
  assert draws.min() >= 1
  assert draws.mean() == pytest.approx(6.0, rel=0.03)
  assert tuning.draw_number_of_runs(1.0, shape) == 1
