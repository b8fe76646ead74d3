"""Augmentation multiplicity: an example's gradient is the mean over its copies, clipped as one."""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.models import layers as model_layers
from tfdp import optimizers
from tfdp.training import steps

K = 3


def _copies(images, seed=5):
  """K distinct 'augmented' copies of each example, example-major: [B * K, ...]."""
  rng = np.random.default_rng(seed)
  rows = np.repeat(images, K, axis=0)
  return (rows + rng.normal(size=rows.shape)).astype(np.float32)


def _brute_force(model, rows, labels, mask, clip):
  total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
  for i in np.flatnonzero(mask):
    grads = [ref.per_example_gradient(model, rows[i * K + k], labels[i]) for k in range(K)]
    mean = [sum(parts) / K for parts in zip(*grads)]
    scale = min(1.0, clip / ref.global_norm(mean))
    total = [t + scale * m for t, m in zip(total, mean)]
  return total


def _engine_sum(engine, model, rows, labels, mask, clip, groups=None):
  call = clipping.make_engine(engine, model, groups, augmult=K)
  sums, _, _, norms = call(clipping.per_example_loss, tf.constant(rows),
                           tf.constant(np.repeat(labels, K)), tf.constant(mask), clip)
  return [s.numpy() for s in sums], norms.numpy()


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_clipped_sum_equals_mean_of_copies_then_clip(engine, clip):
  model = ref.small_conv_model()
  images, labels = ref.batch(size=4)
  rows, mask = _copies(images), np.array([1, 0, 1, 1], np.float32)
  sums, norms = _engine_sum(engine, model, rows, labels, mask, clip)
  for actual, wanted in zip(sums, _brute_force(model, rows, labels, mask, clip)):
    np.testing.assert_allclose(actual, wanted, rtol=2e-4, atol=1e-5)
  assert norms.shape == (4,)
  # The copies' mean has a smaller norm than the copies: it is not the per-row clip.
  row_norms = [ref.global_norm(ref.per_example_gradient(model, rows[k], labels[0]))
               for k in range(K)]
  assert norms[0] < np.mean(row_norms)


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
def test_removing_one_example_and_its_copies_moves_the_sum_by_at_most_the_clip(engine):
  model = ref.small_conv_model()
  images, labels = ref.batch(size=4, scale=10.0)
  rows, mask = _copies(images), np.ones(4, np.float32)
  base, _ = _engine_sum(engine, model, rows, labels, mask, 0.2)
  for i in range(4):
    removed = mask.copy()
    removed[i] = 0
    other, _ = _engine_sum(engine, model, rows, labels, removed, 0.2)
    moved = ref.global_norm([a - b for a, b in zip(base, other)])
    assert 0.2 * (1 - 1e-4) <= moved <= 0.2 * (1 + 1e-5)


def test_train_step_tiles_each_example_into_augmented_copies():
  """Through TrainStep, a deterministic 'augmentation' that ignores the copy gives plain clipping."""
  model = ref.small_conv_model()
  images, labels = ref.batch(size=4)
  mask = np.ones(4, np.float32)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.3, noise_multiplier=0.0)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, augmult=K)
  total, _, loss_sum, correct, count = step.accumulate([(images, labels, mask)])
  for actual, wanted in zip(total, ref.clipped_sum(model, images, labels, mask, 0.3)):
    np.testing.assert_allclose(actual.numpy(), wanted, rtol=2e-4, atol=1e-5)
  assert count == 4 and 0 <= correct <= 4
  per_example = clipping.per_example_loss(labels, model(images))
  assert loss_sum == pytest.approx(float(tf.reduce_sum(per_example)), rel=1e-5)


def _conv_model(conv_class, input_shape, filters, seed=0):
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(input_shape)
  x = conv_class(filters, 3, padding="same", name="tested")(inputs)
  x = tf.keras.layers.Activation("tanh")(x)
  outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x))
  return tf.keras.Model(inputs, outputs)


# name: (input shape, filters): K copies of T positions each; the rule takes Gram matrices of the
# K * T positions (ghost) when (K T)^2 < kernel size, else per-example kernel gradients.
CONV_PATHS = {"ghost": ((4, 4, 16), 32), "materialized": ((6, 6, 2), 4)}


@pytest.mark.newest_stack
@pytest.mark.parametrize("path", sorted(CONV_PATHS))
@pytest.mark.parametrize("conv_class", [tf.keras.layers.Conv2D, model_layers.WSConv2D],
                         ids=["conv", "ws_conv"])
def test_conv_norms_of_copies_match_brute_force_on_both_paths(path, conv_class):
  """The fast engine's Conv2D norms of the copies' summed gradient (all copies' positions as one
  example's), on the Gram path and the materialized one, against one-row-at-a-time gradients."""
  input_shape, filters = CONV_PATHS[path]
  model = _conv_model(conv_class, input_shape, filters)
  layer = model.get_layer("tested")
  positions = K * input_shape[0] * input_shape[1]
  assert (positions ** 2 < np.prod(layer.kernel.shape)) == (path == "ghost")
  images, labels = ref.batch(size=4, input_shape=input_shape)
  rows, mask = _copies(images), np.array([1, 1, 0, 1], np.float32)
  wanted = _brute_force(model, rows, labels, mask, 0.05)
  sums, norms = _engine_sum("fast", model, rows, labels, mask, 0.05)
  for actual, expected in zip(sums, wanted):
    np.testing.assert_allclose(actual, expected, rtol=5e-4, atol=1e-6)
  for i in np.flatnonzero(mask):
    grads = [ref.per_example_gradient(model, rows[i * K + k], labels[i]) for k in range(K)]
    mean = [sum(parts) / K for parts in zip(*grads)]
    assert norms[i] == pytest.approx(ref.global_norm(mean), rel=1e-3)
    assert norms[i] > 0.05  # The clip binds, so the norms decide the sum.
