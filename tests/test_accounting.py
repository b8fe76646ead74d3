"""The accountant against dp_accounting and TF Privacy, pinned values, and calibration."""

import math

import dp_accounting
import pytest

from tfdp.privacy import accounting


def _direct(sigma, q, steps, delta, accountant):
  fresh = {"rdp": dp_accounting.rdp.RdpAccountant,
           "pld": lambda: dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)}
  acc = fresh[accountant]()
  acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
  return acc.get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize("sigma,q,steps", [(1.1, 256 / 60000, 14063), (0.8, 0.01, 500),
                                           (3.0, 0.1, 50)])
def test_epsilon_equals_direct_dp_accounting_composition(accountant, sigma, q, steps):
  ours = accounting.epsilon(sigma, q, steps, 1e-5, accountant)
  assert ours == pytest.approx(_direct(sigma, q, steps, 1e-5, accountant), rel=1e-9)


def test_mnist_setting_agrees_with_tf_privacy_and_is_pinned():
  from tfdp.compat.tf_privacy import compute_dp_sgd_privacy_lib
  tf_privacy_eps, _ = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy(
      n=60000, batch_size=256, noise_multiplier=1.1, epochs=60, delta=1e-5)
  steps = math.ceil(60 * 60000 / 256)
  ours = accounting.epsilon(1.1, 256 / 60000, steps, 1e-5)
  assert ours == pytest.approx(tf_privacy_eps, rel=2e-3)  # Their order grid is coarser.
  assert ours == pytest.approx(2.597, abs=2e-3)  # Pinned: dp_accounting 0.4.3.
  assert accounting.epsilon(1.1, 256 / 60000, steps, 1e-5, "pld") == pytest.approx(2.39, abs=0.01)


def test_pld_is_tighter_than_rdp():
  assert (accounting.epsilon(1.0, 0.01, 1000, 1e-5, "pld")
          < accounting.epsilon(1.0, 0.01, 1000, 1e-5, "rdp"))


@pytest.mark.parametrize("target,q,steps", [(3.0, 64 / 1437, 23 * 20), (1.0, 0.004, 10000),
                                            (8.0, 0.1, 100)])
def test_calibration_lands_within_one_percent_below_target(target, q, steps):
  sigma = accounting.calibrate_noise_multiplier(target, 1e-5, q, steps)
  eps = accounting.epsilon(sigma, q, steps, 1e-5)
  assert 0.99 * target <= eps <= target


def test_max_steps_is_the_last_step_within_budget():
  sigma, q, delta, target = 1.0, 0.02, 1e-5, 2.0
  n = accounting.max_steps(sigma, q, delta, target)
  assert accounting.epsilon(sigma, q, n, delta) <= target
  assert accounting.epsilon(sigma, q, n + 1, delta) > target


def test_edge_cases_and_errors():
  assert accounting.epsilon(1.0, 0.1, 0, 1e-5) == 0.0
  assert accounting.epsilon(0.0, 0.1, 1, 1e-5) == math.inf
  with pytest.raises(ValueError, match="delta"):
    accounting.epsilon(1.0, 0.1, 10, 1.5)
  with pytest.raises(ValueError, match="sampling_probability"):
    accounting.epsilon(1.0, 1.5, 10, 1e-5)
  with pytest.raises(ValueError, match="accountant"):
    accounting.epsilon(1.0, 0.1, 10, 1e-5, "moments")
  with pytest.raises(ValueError, match="epsilon"):
    accounting.calibrate_noise_multiplier(0.0, 1e-5, 0.1, 10)


def test_noise_schedule_epsilon_is_the_composition_of_its_steps():
  """A heterogeneous schedule against dp_accounting composing each step on its own."""
  q, delta = 0.05, 1e-5
  sigmas = [2.0, 1.6, 1.6, 1.2, 0.9]
  segments = [(s, 30) for s in sigmas]
  for accountant, fresh in [
      ("rdp", dp_accounting.rdp.RdpAccountant),
      ("pld", lambda: dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3))]:
    direct = fresh()
    for sigma in sigmas:
      for _ in range(30):  # One step at a time: no self-composition shortcut.
        direct.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
    ours = accounting.composed_epsilon(segments, q, delta, accountant)
    assert ours == pytest.approx(direct.get_epsilon(delta), rel=1e-6 if accountant == "rdp" else 1e-3)
  # A schedule is not its mean σ: the low-noise steps dominate.
  mean_sigma = sum(sigmas) / len(sigmas)
  assert accounting.composed_epsilon(segments, q, delta) > accounting.epsilon(mean_sigma, q, 150, delta)


def test_schedule_calibration_scales_the_whole_schedule():
  shape = [(1.0, 40), (0.8, 40), (0.6, 40)]
  base = accounting.calibrate_schedule(2.0, 1e-5, 0.02, shape)
  eps = accounting.composed_epsilon([(base * f, n) for f, n in shape], 0.02, 1e-5)
  assert 0.99 * 2.0 <= eps <= 2.0


def test_laplace_one_step_matches_dp_accountings_own_laplace_pld():
  from dp_accounting.pld import privacy_loss_distribution
  scale_ratio, q, delta = 2.0, 0.1, 1e-5  # b / L1 sensitivity.
  pld = privacy_loss_distribution.from_laplace_mechanism(
      scale_ratio, sensitivity=1.0, value_discretization_interval=1e-3, sampling_prob=q)
  ours = accounting.epsilon(scale_ratio, q, 1, delta, "pld", noise="laplace")
  assert ours == pytest.approx(pld.get_epsilon_for_delta(delta), rel=1e-6)
  # Without subsampling, one Laplace step is (1 / ratio)-DP: the PLD may not report more.
  assert accounting.epsilon(scale_ratio, 1.0, 1, delta, "pld", noise="laplace") <= 0.5 + 1e-3


def test_laplace_calibration_and_refusal_of_rdp():
  ratio = accounting.calibrate_noise_multiplier(3.0, 1e-5, 0.05, 60, "pld", noise="laplace")
  assert 0.99 * 3.0 <= accounting.epsilon(ratio, 0.05, 60, 1e-5, "pld", noise="laplace") <= 3.0
  with pytest.raises(ValueError, match="PLD"):
    accounting.epsilon(ratio, 0.05, 60, 1e-5, "rdp", noise="laplace")
  with pytest.raises(ValueError, match="noise"):
    accounting.epsilon(1.0, 0.05, 60, 1e-5, noise="cauchy")


def test_max_steps_within_stops_at_upper():
  assert accounting.max_steps_within(lambda n: 0.0, 1.0, upper=37) == 37
  assert accounting.max_steps_within(lambda n: n / 10, 1.0) == 10


@pytest.mark.parametrize("module", ["accounting", "schedules", "mechanisms", "planner"])
def test_docstring_examples(module):
  import doctest
  import importlib
  result = doctest.testmod(importlib.import_module(f"tfdp.privacy.{module}"))
  assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("sigma", [0.3, 0.15])
def test_the_pld_grid_widens_below_sigma_half_and_only_over_reports(sigma):
  q, steps, delta = 0.1, 20, 1e-5
  assert accounting.pld_discretization(0.5) == accounting.pld_discretization(2.0)
  assert accounting.pld_discretization(sigma) > accounting.pld_discretization(0.5)
  fine = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
  fine.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
  coarse = accounting.epsilon(sigma, q, steps, delta, "pld")
  assert fine.get_epsilon(delta) <= coarse <= 1.1 * fine.get_epsilon(delta)
