"""One example whose loss or gradient is inf or NaN must not poison any step.

Such an example is dropped when sampled (weight 0: it contributes nothing, within the clip), and it
is never computed on steps that did not sample it: padding rows are a constant, not example 0.
Every sum is compared with one-example-at-a-time brute force over the other examples.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import data
from tfdp.data import sampling
from tfdp.dp import clipping
from tfdp.dp import groups as groups_lib
from tfdp import optimizers
from tfdp.training import steps

CLIP = 0.5
BAD = 255  # Pixel value that _preprocess turns into NaN: marks the poisoned example.


def _poisoned_batch():
  """Float images of ref.small_conv_model's shape: row 1 holds a NaN pixel, row 4 an inf one."""
  images, labels = ref.batch(size=6)
  images[1, 2, 3, 0] = np.nan
  images[4, 0, 0, 1] = np.inf
  return images, labels


def _assert_close(actual, expected):
  for a, e in zip(actual, expected):
    a = a.numpy() if hasattr(a, "numpy") else a
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


def _engine_sums(engine_name, model, images, labels, mask, clip_groups=None, augmult=1):
  engine = clipping.make_engine(engine_name, model, clip_groups, augmult=augmult)
  sums, _, _, _ = engine(clipping.per_example_loss, tf.constant(images), tf.constant(labels),
                         tf.constant(mask), CLIP)
  return sums


def _reference(model, images, labels, mask, clip_groups):
  if clip_groups is None:
    return ref.clipped_sum(model, images, labels, mask, CLIP)
  return ref.grouped_clipped_sum(model, images, labels, mask, CLIP,
                                 groups_lib.variable_groups(model, clip_groups))


def test_the_poisoned_rows_really_have_non_finite_gradients():
  model = ref.small_conv_model()
  images, labels = _poisoned_batch()
  for i in (1, 4):
    grads = ref.per_example_gradient(model, tf.constant(images[i]), tf.constant(labels[i]))
    assert not all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("engine", ["fast", "vectorized"])
@pytest.mark.parametrize("clip_groups", [None, "layer"])
def test_sampled_non_finite_examples_are_dropped(engine, clip_groups):
  model = ref.small_conv_model()
  images, labels = _poisoned_batch()
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)  # Both poisoned rows sampled.
  others = mask * np.array([1, 0, 1, 1, 0, 1], np.float32)
  sums = _engine_sums(engine, model, images, labels, mask, clip_groups)
  _assert_close(sums, _reference(model, images, labels, others, clip_groups))


@pytest.mark.parametrize("engine", ["fast", "vectorized"])
def test_masked_non_finite_rows_contribute_nothing(engine):
  model = ref.small_conv_model()
  images, labels = _poisoned_batch()
  mask = np.array([1, 0, 1, 1, 0, 1], np.float32)  # The poisoned rows are padding here.
  _assert_close(_engine_sums(engine, model, images, labels, mask),
                ref.clipped_sum(model, images, labels, mask, CLIP))


def test_fast_engine_with_augmult_drops_an_example_with_one_poisoned_copy():
  model = ref.small_conv_model()
  images, labels = ref.batch(size=4)
  copies, copy_labels = np.repeat(images, 2, axis=0), np.repeat(labels, 2)
  copies[3, 0, 0, 0] = np.nan  # Second copy of example 1.
  mask = np.ones(4, np.float32)
  sums = _engine_sums("fast", model, copies, copy_labels, mask, augmult=2)
  # Two identical copies average to the example itself; example 1 is dropped.
  _assert_close(sums, ref.clipped_sum(model, images, labels, np.array([1, 0, 1, 1]), CLIP))


class _Scale(tf.keras.layers.Layer):
  """A layer the fast engine has no rule for: y = x * w (per channel)."""

  def build(self, input_shape):
    self.w = self.add_weight("w", shape=[input_shape[-1]], initializer="ones")

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):  # pylint: disable=unused-argument
    return inputs * self.w


def test_fast_engine_fallback_layer_drops_the_poisoned_example():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input((6, 6, 2))
  x = tf.keras.layers.Conv2D(3, 3, padding="same")(inputs)
  x = _Scale()(x)
  x = tf.keras.layers.Flatten()(tf.keras.layers.Activation("tanh")(x))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))
  engine = clipping.make_engine("fast", model)
  assert engine.fallback_layers
  images, labels = _poisoned_batch()
  mask = np.ones(6, np.float32)
  _assert_close(_engine_sums("fast", model, images, labels, mask),
                ref.clipped_sum(model, images, labels, np.array([1, 0, 1, 1, 0, 1]), CLIP))


def test_padding_rows_are_a_constant_not_example_0():
  images = np.arange(1, 6, dtype=np.uint8)[:, None, None, None] * np.ones((5, 2, 2, 1), np.uint8)
  labels = np.array([4, 1, 2, 3, 4], np.int64)
  chunks = sampling.split_into_chunks(np.array([2, 3, 4]), 2)
  assert [c.indices.tolist() for c in chunks] == [[2, 3], [4, sampling.PADDING]]
  rows, row_labels, mask = sampling.gather_chunk(images, labels, chunks[1])
  assert rows[0, 0, 0, 0] == 5 and row_labels[0] == 4 and mask.tolist() == [1.0, 0.0]
  assert np.all(rows[1] == 0) and row_labels[1] == 0  # Not example 0 (all 1s, label 4).
  sampler = data.ShuffleSampler(5, batch_size=3, physical_batch_size=4)  # 3 rows + 1 padding.
  (chunk,) = sampler.chunks(0)
  assert chunk.indices[3] == sampling.PADDING and chunk.mask.tolist() == [1, 1, 1, 0]
  rows, row_labels, _ = sampling.gather_chunk(images, labels, chunk)
  assert np.all(rows[3] == 0) and row_labels[3] == 0


def _preprocess(images):
  pixels = tf.cast(images, tf.float32)
  return tf.where(images == BAD, tf.constant(np.nan, tf.float32), 3.0 * (pixels / 127.0 - 1.0))


def _uint8_dataset(size=7):
  """uint8 images of ref.small_conv_model's shape; example 0 is poisoned (every pixel BAD)."""
  rng = np.random.default_rng(2)
  images = rng.integers(0, BAD, size=(size, 6, 6, 2)).astype(np.uint8)
  images[0] = BAD
  return images, rng.integers(0, 3, size=size).astype(np.int64)


@pytest.mark.parametrize("engine", ["fast", "vectorized"])
@pytest.mark.parametrize("drawn", [[2, 3, 5], [0, 2, 3, 5]], ids=["not_sampled", "sampled"])
def test_train_step_sum_ignores_example_0_whether_or_not_it_is_drawn(engine, drawn):
  model = ref.small_conv_model()
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=CLIP, noise_multiplier=0.0)
  step = steps.TrainStep(model, optimizer, _preprocess, private=True, expected_batch_size=3,
                         engine=engine)
  images, labels = _uint8_dataset()
  chunks = [sampling.gather_chunk(images, labels, c)
            for c in sampling.split_into_chunks(np.array(drawn), 2)]
  sums, loss_sum, _, count = step.clipped_sum(chunks)
  assert count == len(drawn)
  if 0 not in drawn:
    assert np.isfinite(loss_sum)  # Padding computed a constant row, never example 0.
  mask = np.isin(np.arange(len(images)), [2, 3, 5]).astype(np.float32)
  _assert_close(sums, ref.clipped_sum(model, _preprocess(images).numpy(), labels, mask, CLIP))
