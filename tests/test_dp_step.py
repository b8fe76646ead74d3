"""The private step against brute force: clipped sum, sensitivity, masking, noise, every DP optimizer."""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.dp import randomness
from tfdp import optimizers
from tfdp.training import steps

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

# DiceSGD also needs the unclipped sum and has its own tests (tests/test_dice_sgd.py).
DP_OPTIMIZERS = sorted(n for n in optimizers.OPTIMIZERS
                       if optimizers.is_private(n) and n != "dice_sgd")


def _vectorized(model, images, labels, mask, clip, use_function=False):
  fn = clipping.vectorized_clipped_sum
  if use_function:
    fn = tf.function(fn)
  sums, _, _ = fn(model, clipping.per_example_loss, tf.constant(images), tf.constant(labels),
                  tf.constant(mask), clip)
  return [s.numpy() for s in sums]


def _assert_sums_close(actual, expected):
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [0.05, 1e3])  # Every example clipped; none clipped.
@pytest.mark.parametrize("use_function", [False, True])
def test_clipped_sum_equals_brute_force(clip, use_function):
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 0, 1, 1, 0], np.float32)
  norms = [ref.global_norm(ref.per_example_gradient(model, images[i], labels[i]))
           for i in range(len(images))]
  assert (min(norms) > clip) if clip < 1 else (max(norms) < clip)  # The case is what it says.
  _assert_sums_close(_vectorized(model, images, labels, mask, clip, use_function),
                     ref.clipped_sum(model, images, labels, mask, clip))


def test_masked_rows_change_nothing():
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 0, 1, 0, 1, 1], np.float32)
  other_images, other_labels = images.copy(), labels.copy()
  other_images[mask == 0] = 100.0
  other_labels[mask == 0] = (labels[mask == 0] + 1) % 3
  a = _vectorized(model, images, labels, mask, 0.5)
  b = _vectorized(model, other_images, other_labels, mask, 0.5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_replacing_one_example_moves_the_sum_by_at_most_the_clip():
  model = ref.small_conv_model()
  images, labels = ref.batch(scale=10.0)
  mask = np.ones(len(images), np.float32)
  clip = 0.3
  base = _vectorized(model, images, labels, mask, clip)
  for i in range(len(images)):
    changed_images, changed_labels = images.copy(), labels.copy()
    changed_images[i] = -images[i] * 5
    changed_labels[i] = (labels[i] + 1) % 3
    moved = ref.global_norm([a - b for a, b in zip(
        _vectorized(model, changed_images, changed_labels, mask, clip), base)])
    assert moved <= 2 * clip + 1e-5  # Replace-one: remove (<= C) then add (<= C).
    removed = mask.copy()
    removed[i] = 0
    moved = ref.global_norm([a - b for a, b in zip(
        _vectorized(model, images, labels, removed, clip), base)])
    assert moved <= clip + 1e-5  # Add/remove-one, the adjacency the accountant uses.
    assert moved >= clip - 1e-4  # Every example here is clipped, so the bound is attained.


@pytest.mark.parametrize("name", DP_OPTIMIZERS)
def test_each_dp_optimizer_without_noise_returns_brute_force_mean(name):
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 1, 0, 1, 1], np.float32)
  expected = ref.clipped_sum(model, images, labels, mask, 0.5)
  optimizer = optimizers.build_optimizer(name, 0.1, l2_norm_clip=0.5, noise_multiplier=0.0)
  sums = _vectorized(model, images, labels, mask, 0.5)
  _assert_sums_close(optimizer.noised_mean([tf.constant(s) for s in sums], 8.0,
                                           noise_seed=ref.noise_key()),
                     [e / 8.0 for e in expected])
  assert optimizer.noise_multiplier == 0.0 and optimizer.l2_norm_clip == 0.5


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
@pytest.mark.parametrize("name", DP_OPTIMIZERS)
def test_each_dp_optimizer_step_through_train_step(name, engine):
  """A whole TrainStep with σ = 0 (two chunks) changes weights as the brute-force gradient says."""
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.ones(len(images), np.float32)
  expected = [e / 4.0 for e in ref.clipped_sum(model, images, labels, mask, 0.5)]
  optimizer = optimizers.build_optimizer(name, 0.01, l2_norm_clip=0.5, noise_multiplier=0.0)
  reference = optimizers.build_optimizer(name.removeprefix("dp_"), 0.01)
  twin = tf.keras.models.clone_model(model)
  twin.set_weights(model.get_weights())
  step = steps.TrainStep(model, optimizer, tf.identity, private=True,
                         expected_batch_size=4.0, engine=engine)
  step([(images[:4], labels[:4], mask[:4]), (images[4:], labels[4:], mask[4:])])
  reference.apply_gradients(zip([tf.constant(e, tf.float32) for e in expected],
                                twin.trainable_variables))
  _assert_sums_close([v.numpy() for v in model.trainable_variables],
                     [v.numpy() for v in twin.trainable_variables])


def test_a_step_that_fails_part_way_leaves_nothing_to_the_next():
  """The first chunk's clipped sum is accumulated, the second fails: the next step must not see it."""
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.ones(len(images), np.float32)
  expected = [e / 4.0 for e in ref.clipped_sum(model, images, labels, mask, 0.5)]
  optimizer = optimizers.build_optimizer("dp_sgd", 0.01, l2_norm_clip=0.5, noise_multiplier=0.0)
  reference = optimizers.build_optimizer("sgd", 0.01)
  twin = tf.keras.models.clone_model(model)
  twin.set_weights(model.get_weights())
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=4.0)
  wrong_shape = (images[:2, :-1], labels[:2], mask[:2])
  with pytest.raises(Exception):  # pylint: disable=broad-exception-caught
    step([(images[:4], labels[:4], mask[:4]), wrong_shape])
  step([(images, labels, mask)])
  reference.apply_gradients(zip([tf.constant(e, tf.float32) for e in expected],
                                twin.trainable_variables))
  _assert_sums_close([v.numpy() for v in model.trainable_variables],
                     [v.numpy() for v in twin.trainable_variables])


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
def test_chunked_step_equals_one_chunk(engine):
  model = ref.small_conv_model()
  images, labels = ref.batch(size=8)
  mask = np.ones(8, np.float32)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.5, noise_multiplier=0.0)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True,
                         engine=engine)
  whole, _, _, count = step.clipped_sum([(images, labels, mask)])
  padded_images = np.concatenate([images[5:], np.zeros_like(images[:2])])
  padded_labels = np.concatenate([labels[5:], np.zeros_like(labels[:2])])
  padded_mask = np.array([1, 1, 1, 0, 0], np.float32)
  chunked, _, _, chunked_count = step.clipped_sum(
      [(images[:5], labels[:5], mask[:5]), (padded_images, padded_labels, padded_mask)])
  assert count == chunked_count == 8
  _assert_sums_close([c.numpy() for c in chunked], [w.numpy() for w in whole])


@pytest.mark.parametrize("name", DP_OPTIMIZERS)
def test_noise_has_the_std_the_accountant_assumes(name):
  sigma, clip, size = 1.3, 0.7, 800_000
  optimizer = optimizers.build_optimizer(name, 0.1, l2_norm_clip=clip, noise_multiplier=sigma)
  noise = optimizer.noised_mean([tf.zeros([size])], 1.0, noise_seed=ref.noise_key())[0].numpy()
  # The sample std of 800k normals has relative standard error 1/sqrt(2 * 800k) = 0.079%, so 0.5%
  # is 6.3 standard errors (a false failure once in 3e9 runs); a wrong scale (e.g. σ instead of σC,
  # or 1% too much noise) is far off.
  assert np.std(noise) == pytest.approx(sigma * clip, rel=0.005)
  assert abs(np.mean(noise)) < 5 * sigma * clip / np.sqrt(size)
  again = optimizer.noised_mean([tf.zeros([size])], 1.0, noise_seed=ref.noise_key())[0].numpy()
  assert not np.allclose(noise, again)  # Fresh noise every step.


def test_matches_tf_privacys_own_compute_gradients():
  """With σ = 0 and every row real, TF Privacy's own path gives clipped sum / batch size."""
  model = ref.small_conv_model()
  images, labels = ref.batch()
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.5, noise_multiplier=0.0)
  with tf.GradientTape() as tape:
    losses = clipping.per_example_loss(labels, model(images, training=True))
  with randomness.keyed_noise(ref.noise_key()):  # Its noise too comes from our keyed samplers.
    theirs = optimizer._compute_gradients(losses, model.trainable_variables, tape=tape)
  ours = _vectorized(model, images, labels, np.ones(len(images), np.float32), 0.5)
  _assert_sums_close([g.numpy() for g, _ in theirs], [o / len(images) for o in ours])
