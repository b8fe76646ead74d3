"""--noise=discrete_gaussian: the integer-grid mechanism, its sampler and its accounting.

The argument under test (tfdp.dp.noise.DiscreteGaussianSumQuery): rounding neighbouring sums to the
grid moves them at most C/γ + sqrt(d) apart; the sampler draws N_Z(0, scale²); the noise in gradient
units has std σ C (1 + ρ); and the accountant's general subsampling bound never undercuts the exact
bound of the continuous Gaussian, which it must dominate because it holds for every mechanism.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from dp_accounting.rdp import rdp_privacy_accountant
from tfdp.compat.tf_privacy import discrete_gaussian_utils

from tests import dp_reference as ref
from tfdp.dp import noise
from tfdp.dp import randomness
from tfdp import optimizers
from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms

DRAWS = 200_000


def _exact_pmf(scale, support):
  weights = np.exp(-support.astype(float) ** 2 / (2 * scale**2))
  wide = np.arange(-40 * scale, 40 * scale + 1)
  return weights / np.exp(-wide.astype(float) ** 2 / (2 * scale**2)).sum()


def test_sampler_draws_the_discrete_gaussian():
  scale = 3
  with randomness.keyed_noise(ref.noise_key()):
    draws = randomness.discrete_gaussian([DRAWS], tf.constant(scale, tf.int64)).numpy()
  assert draws.dtype == np.int64
  support = np.arange(-12, 13)
  expected = _exact_pmf(scale, support)
  observed = np.array([np.mean(draws == k) for k in support])
  # Each frequency within 5 binomial standard deviations of the exact probability.
  assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / DRAWS))


def test_sampler_agrees_with_tf_privacys_sampler():
  scale = 5
  with randomness.keyed_noise(ref.noise_key()):
    ours = randomness.discrete_gaussian([DRAWS], tf.constant(scale, tf.int64)).numpy()
  theirs = discrete_gaussian_utils.sample_discrete_gaussian(scale, [DRAWS], tf.int64).numpy()
  assert np.var(ours) == pytest.approx(np.var(theirs), rel=0.02)
  for k in (0, 3, 7, 12):  # P(|Y| >= k) in both, within 5 standard deviations of their difference.
    p_ours, p_theirs = np.mean(np.abs(ours) >= k), np.mean(np.abs(theirs) >= k)
    spread = math.sqrt(2 * max(p_ours, 1e-6) * (1 - p_ours) / DRAWS)
    assert abs(p_ours - p_theirs) < 5 * spread + 1e-9


@pytest.mark.parametrize("coordinates", [1, 17, 4000])
def test_rounding_moves_neighbouring_sums_at_most_the_grid_sensitivity(coordinates):
  clip, inflation = 0.7, 0.05
  query = noise.DiscreteGaussianSumQuery(clip, 1.0, coordinates, inflation)
  grid = query.grid
  assert grid * query.grid_sensitivity == pytest.approx(clip * (1 + inflation))
  rng = np.random.default_rng(0)
  worst = 0.0
  for _ in range(200):
    base = rng.normal(size=coordinates) * 10
    direction = rng.normal(size=coordinates)
    # Coordinates next to rounding boundaries, where rounding hurts most; one example added.
    base = (np.floor(base / grid) + 0.5 - 1e-9) * grid
    neighbour = base + clip * direction / np.linalg.norm(direction)
    moved = np.linalg.norm(np.round(base / grid) - np.round(neighbour / grid))
    worst = max(worst, moved)
  assert worst <= query.grid_sensitivity


def test_release_is_on_the_grid_with_the_planned_noise():
  clip, sigma, inflation = 0.5, 1.3, 0.01
  optimizer = optimizers.build_optimizer(
      "dp_sgd", 0.1, dp_query=noise.DiscreteGaussianSumQuery(clip, sigma, DRAWS, inflation))
  grid = optimizer._dp_sum_query.grid  # pylint: disable=protected-access
  total = tf.fill([DRAWS], 0.123)
  released = optimizer.noised_mean([total], 1.0, noise_seed=ref.noise_key())[0].numpy()
  on_grid = released / grid
  np.testing.assert_allclose(on_grid, np.round(on_grid), atol=1e-2)  # float32 of grid multiples.
  noise_part = released - round(0.123 / grid) * grid
  assert np.std(noise_part) == pytest.approx(sigma * clip * (1 + inflation), rel=0.01)
  assert optimizer.l2_norm_clip == clip  # The engines clip to C, not to the inflated bound.


def test_general_subsampling_bound_dominates_the_exact_gaussian_one():
  sigma = 1.1
  for q in (0.001, 0.05, 0.5):
    exact = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(  # pylint: disable=protected-access
        q, sigma, list(range(2, 65)))
    general = [accounting.subsampled_rdp_any_mechanism(lambda a: a / (2 * sigma**2), q, order)
               for order in range(2, 65)]
    assert np.all(np.array(general) >= np.array(exact) * (1 - 1e-9))
  unsampled = accounting.subsampled_rdp_any_mechanism(lambda a: a / (2 * sigma**2), 1.0, 5)
  assert unsampled == pytest.approx(5 / (2 * sigma**2))


def test_discrete_gaussian_costs_more_epsilon_than_gaussian_at_the_same_sigma():
  for sigma, q, steps in ((1.1, 256 / 60000, 1000), (2.0, 0.02, 2000)):
    gaussian = accounting.epsilon(sigma, q, steps, 1e-5)
    discrete = accounting.epsilon(sigma, q, steps, 1e-5, noise="discrete_gaussian")
    assert gaussian < discrete < 1.6 * gaussian
  with pytest.raises(ValueError, match="PLD accountant has no discrete_gaussian"):
    accounting.epsilon(1.0, 0.01, 10, 1e-5, accountant="pld", noise="discrete_gaussian")


@pytest.mark.parametrize("scale", [1, 2, 5, 100, 10_000])
def test_a_round_of_the_ideal_sampler_ends_often_enough_for_the_stated_bound(scale):
  """E[rounds] <= mechanisms.DISCRETE_GAUSSIAN_ROUNDS, computed here by exact sums over the
  proposal's support, not by the bound's argument."""
  t = scale
  p_d = np.mean(np.exp(-np.arange(t) / t))  # P(D = 1), U uniform on {0..t-1}.
  p_zero = (1 / t) / p_d * (1 - math.exp(-1))  # P(X = 0 | D = 1): U = 0 and V = 0.
  y = np.arange(0, 60 * t + 1, dtype=float)
  laplace = (1 - math.exp(-1 / t)) / (1 + math.exp(-1 / t)) * np.exp(-y / t)
  laplace[1:] *= 2  # ±y.
  accept = np.sum(laplace * np.exp(-(y - t) ** 2 / (2 * t * t)))
  per_round = p_d * (1 - p_zero / 2) * accept
  assert 1 / per_round <= mechanisms.DISCRETE_GAUSSIAN_ROUNDS


def test_sampler_at_a_large_scale_has_the_discrete_gaussians_spread():
  """At t = 1000 the proposal's uniform part spans {0..999}: variance and tails as N_Z(0, t²)."""
  scale = 1000
  with randomness.keyed_noise(ref.noise_key()):
    draws = randomness.discrete_gaussian([DRAWS], tf.constant(scale, tf.int64)).numpy()
  # Var of N_Z(0, t²) equals t² to within e^(-2π² t²); its sample variance has std t² sqrt(2/n).
  assert abs(np.var(draws) / scale ** 2 - 1) < 6 * math.sqrt(2 / DRAWS)
  for k in (0.5, 1.0, 2.0, 3.0):
    expected = math.erfc(k / math.sqrt(2))  # P(|Y| >= k t), continuous to within 1e-3 here.
    observed = np.mean(np.abs(draws) >= k * scale)
    assert abs(observed - expected) < 6 * math.sqrt(expected * (1 - expected) / DRAWS) + 2e-3


def test_the_statement_no_longer_calls_the_sampler_exact():
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=4.25, sampling_probability=128 / 1437,
                                    delta=1e-5, noise="discrete_gaussian", steps=180,
                                    coordinates=650,
                                    mechanism={"discrete_rounding_inflation": 0.01})
  assert "exact" not in ledger.statement()
  assert ledger.grid_scale() == math.ceil(4.25 * (math.sqrt(650) / 0.01 + math.sqrt(650)))
  assert 0 < ledger.float_tail_delta() < 1e-6 and "float32" in ledger.statement()
