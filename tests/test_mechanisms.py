"""How each noise variant maps onto the accountant's σ: effective σ, adaptive split, schedules."""

import math

import numpy as np
import pytest

from tfdp.privacy import accounting
from tfdp.privacy import mechanisms
from tfdp.privacy import schedules


def _gaussian_epsilon(sensitivity_over_std, delta):
  from dp_accounting.pld import privacy_loss_distribution
  pld = privacy_loss_distribution.from_gaussian_mechanism(
      1.0, sensitivity=sensitivity_over_std, value_discretization_interval=1e-4)
  return pld.get_epsilon_for_delta(delta)


def test_effective_sigma_against_a_direct_worst_case_computation():
  """Per-group noise: the worst neighbouring shift, measured in units of each coordinate's std."""
  rng = np.random.default_rng(0)
  sizes, bounds = [5, 3, 8], [0.6, 0.3, 0.8]
  stds = mechanisms.group_noise_stddevs(1.3, bounds, "depth_decay")
  coordinate_std = np.concatenate([np.full(n, s) for n, s in zip(sizes, stds)])
  worst = 0.0
  for _ in range(200):  # Any shift with group norms at their bounds (the worst case).
    shift = np.concatenate([b * v / np.linalg.norm(v) for b, v in
                            zip(bounds, (rng.normal(size=n) for n in sizes))])
    worst = max(worst, float(np.linalg.norm(shift / coordinate_std)))
  assert worst == pytest.approx(1 / 1.3, rel=1e-9)
  assert mechanisms.effective_noise_multiplier(bounds, stds) == pytest.approx(1.3, rel=1e-12)
  # The heteroscedastic release is exactly as private as one Gaussian with σ_eff.
  assert _gaussian_epsilon(worst, 1e-5) == pytest.approx(
      accounting.epsilon(1.3, 1.0, 1, 1e-5, "pld"), rel=2e-2)


def test_depth_decay_puts_less_noise_on_deeper_groups_and_uniform_is_plain_dp_sgd():
  bounds = [1 / math.sqrt(4)] * 4
  decay = mechanisms.group_noise_stddevs(2.0, bounds, "depth_decay")
  assert decay == sorted(decay, reverse=True)
  assert decay[0] / decay[3] == pytest.approx(4.0)
  uniform = mechanisms.group_noise_stddevs(2.0, bounds, "uniform")
  assert uniform == pytest.approx([2.0] * 4)  # σ C with C = 1: what flat DP-SGD adds.
  # The studies' rule without this correction: stds σC/(k+1) spend far more than σ says.
  naive = [2.0 / (k + 1) for k in range(4)]
  assert mechanisms.effective_noise_multiplier(bounds, naive) < 0.75 * 2.0


def test_adaptive_split_is_the_papers_formula_and_one_joint_gaussian():
  sigma, count_std = 1.1, 64 / 20
  split = mechanisms.adaptive_gradient_noise_multiplier(sigma, count_std)
  assert split == pytest.approx((sigma ** -2 - (2 * count_std) ** -2) ** -0.5, rel=1e-12)
  # Sum (sensitivity C, std split*C) and count (sensitivity 1/2, std count_std) as one vector.
  joint = math.sqrt((1 / split) ** 2 + (0.5 / count_std) ** 2)
  assert 1 / joint == pytest.approx(sigma, rel=1e-12)
  with pytest.raises(ValueError, match="count"):
    mechanisms.adaptive_gradient_noise_multiplier(8.0, 2.0)


def test_dice_noise_factor():
  assert mechanisms.dice_noise_factor(1.0, 1.0) == pytest.approx(math.sqrt(3))
  with pytest.raises(ValueError, match="C2 >= clip C1"):
    mechanisms.dice_noise_factor(1.0, 0.5)


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_schedules_start_at_one_and_stay_positive(name):
  factors = schedules.epoch_factors(name, 6)
  assert factors[0] == 1.0 and all(f > 0 for f in factors) and len(factors) == 6


def test_schedule_errors_name_the_problem():
  with pytest.raises(ValueError, match="noise_schedule"):
    schedules.epoch_factors("sawtooth", 3)
  with pytest.raises(ValueError, match="end_factor"):
    schedules.epoch_factors("cosine", 3, {"end_factor": 0.0})
