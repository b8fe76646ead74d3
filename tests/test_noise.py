"""The noise queries: per-group Gaussian, Laplace with L1 clipping, schedules, adaptive clipping.

Each is checked against brute force (per-example gradients one at a time) before noise, for its
sensitivity, and for the noise std the accountant assumes.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.dp import noise
from tfdp.dp import randomness
from tfdp import optimizers
from tfdp.privacy import mechanisms
from tfdp.training import steps

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

SIZE = 200_000  # Sample std of 200k draws: relative error ~0.16% (Gaussian), ~0.3% (Laplace).


def _noise_of(optimizer, shapes):
  return [n.numpy() for n in optimizer.noised_mean([tf.zeros(s) for s in shapes], 1.0,
                                                   noise_seed=ref.noise_key())]


def test_per_group_noise_has_each_groups_std_and_the_effective_sigma():
  groups, clip, sigma = [0, 0, 1, 2], 1.5, 1.2
  optimizer = optimizers.build_optimizer(
      "dp_sgd", 0.1, dp_query=noise.gaussian(clip, sigma, groups, "depth_decay"))
  drawn = _noise_of(optimizer, [[SIZE]] * 4)
  stds = noise.group_stddevs(clip, sigma, groups, "depth_decay")
  for variable, group in enumerate(groups):
    assert np.std(drawn[variable]) == pytest.approx(stds[group], rel=0.01)
  bounds = noise.group_bounds(clip, groups)
  assert math.sqrt(sum(b * b for b in bounds)) == pytest.approx(clip)  # Total sensitivity C.
  assert mechanisms.effective_noise_multiplier(bounds, stds) == pytest.approx(sigma)


def test_noise_schedule_factor_scales_the_std():
  optimizer = optimizers.build_optimizer("dp_adam", 0.1, l2_norm_clip=0.5, noise_multiplier=2.0)
  optimizer.noise_scale.assign(0.25)
  assert np.std(_noise_of(optimizer, [[SIZE]])[0]) == pytest.approx(0.25 * 2.0 * 0.5, rel=0.01)
  laplace = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.LaplaceSumQuery(2.0, 3.0))
  laplace.noise_scale.assign(0.5)
  assert np.mean(np.abs(_noise_of(laplace, [[SIZE]])[0])) == pytest.approx(1.5, rel=0.01)


def test_laplace_noise_has_scale_b_per_coordinate():
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.LaplaceSumQuery(2.0, 3.0))
  drawn = _noise_of(optimizer, [[SIZE // 2], [SIZE // 2]])
  values = np.concatenate(drawn)
  assert np.mean(np.abs(values)) == pytest.approx(3.0, rel=0.01)  # E|X| = b.
  assert np.std(values) == pytest.approx(math.sqrt(2) * 3.0, rel=0.01)  # Var = 2 b².
  assert abs(np.median(values)) < 0.05
  with randomness.keyed_noise(ref.noise_key()):
    _, _, event = noise.LaplaceSumQuery(2.0, 3.0).get_noised_result(
        [tf.zeros([3])], noise.LaplaceSumQuery(2.0, 3.0).initial_global_state())
  assert float(event.noise_multiplier) == pytest.approx(1.5)  # b / L1 sensitivity.


def _l1_sums(model, images, labels, mask, clip):
  engine = clipping.make_engine("vectorized", model, norm="l1")
  sums, *_ = engine(clipping.per_example_loss, tf.constant(images), tf.constant(labels),
                    tf.constant(mask), clip)
  return [s.numpy() for s in sums]


@pytest.mark.parametrize("clip", [0.2, 1e4])  # Every example clipped; none clipped.
def test_l1_clipped_sum_equals_brute_force_and_moves_by_at_most_the_clip(clip):
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
  sums = _l1_sums(model, images, labels, mask, clip)
  for actual, wanted in zip(sums, ref.l1_clipped_sum(model, images, labels, mask, clip)):
    np.testing.assert_allclose(actual, wanted, rtol=1e-4, atol=1e-5)
  for i in np.flatnonzero(mask):
    removed = mask.copy()
    removed[i] = 0
    moved = ref.l1_norm([a - b for a, b in zip(_l1_sums(model, images, labels, removed, clip),
                                               sums)])
    assert moved <= clip * (1 + 1e-5)
    if clip < 1:
      assert moved >= clip * (1 - 1e-4)  # Clipped examples attain the bound.


def test_fast_engine_refuses_l1():
  with pytest.raises(ValueError, match="vectorized"):
    clipping.make_engine("fast", ref.small_conv_model(), norm="l1")


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
def test_adaptive_clipping_sum_and_clip_update_against_brute_force(engine):
  """σ = 0 and no count noise: the sum is the brute-force clipped sum, the clip moves geometrically
  towards the target quantile by Andrew et al.'s rule, and the next step clips at the new bound."""
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 0, 1, 1, 0], np.float32)
  norms = [ref.global_norm(ref.per_example_gradient(model, images[i], labels[i]))
           for i in range(len(images))]
  real = sorted(n for n, m in zip(norms, mask) if m)
  clip = (real[2] + real[3]) / 2  # 3 of 4 unclipped: the clip must shrink.
  initial = clip
  query = noise.SecretAdaptiveClipSumQuery(
      clip, noise_multiplier=0.0, target_unclipped_quantile=0.5, learning_rate=0.2,
      clipped_count_stddev=0.0, expected_num_records=4.0, geometric_update=True)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=query)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=4.0,
                         engine=engine)
  for _ in range(2):
    total, extras, *_ = step.accumulate([(images, labels, mask)])
    wanted = ref.clipped_sum(model, images, labels, mask, clip)
    for actual, expected in zip(total, wanted):
      np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-5)
    mean = optimizer.noised_mean(total, 4.0, noise_seed=ref.noise_key(), **extras)
    np.testing.assert_allclose(mean[0].numpy(), wanted[0] / 4.0, rtol=1e-4, atol=1e-6)
    unclipped = sum(1 for n, m in zip(norms, mask) if m and n <= clip)
    clip *= math.exp(-0.2 * (unclipped / 4.0 - 0.5))
    assert optimizer.l2_norm_clip == pytest.approx(clip, rel=1e-5)
  assert clip < 0.97 * initial


def test_adaptive_query_splits_the_noise():
  query = noise.adaptive(1.0, noise_multiplier=1.5, target_quantile=0.5, learning_rate=0.2,
                         count_stddev=3.2, expected_batch_size=64)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=query)
  drawn = optimizer.noised_mean([tf.zeros([SIZE])], 1.0, noise_seed=ref.noise_key(),
                                centered_unclipped_count=tf.constant(0.0))[0].numpy()
  expected = mechanisms.adaptive_gradient_noise_multiplier(1.5, 3.2) * 1.0
  assert np.std(drawn) == pytest.approx(expected, rel=0.01)
