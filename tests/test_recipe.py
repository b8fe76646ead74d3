"""The accuracy recipe's pieces: EMA, virtual batches, learning-rate schedules, augmentations."""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import data
from tfdp import optimizers
from tfdp.training import ema
from tfdp.optimizers import lr_schedules
from tfdp.training import steps


def test_ema_equals_a_direct_computation_after_a_few_steps():
  model = ref.small_conv_model()
  images, labels = ref.batch()
  average = ema.WeightAverage(model, decay=0.9)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.5, l2_norm_clip=1.0, noise_multiplier=0.3)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=6.0,
                         weight_average=average)
  expected = [v.numpy().astype(np.float64) for v in model.trainable_variables]
  for t in range(5):
    step([(images, labels, np.ones(6, np.float32))])
    rate = min(0.9, (1 + t) / (10 + t))
    expected = [rate * e + (1 - rate) * v.numpy() for e, v in zip(expected, model.trainable_variables)]
  for average_value, wanted in zip(average.averages, expected):
    np.testing.assert_allclose(average_value.numpy(), wanted, rtol=1e-5, atol=1e-7)
  live = [v.numpy() for v in model.trainable_variables]
  with average.applied():
    for variable, wanted in zip(model.trainable_variables, expected):
      np.testing.assert_allclose(variable.numpy(), wanted, rtol=1e-5, atol=1e-7)
  for variable, value in zip(model.trainable_variables, live):
    np.testing.assert_array_equal(variable.numpy(), value)  # The live weights come back.


def test_virtual_batch_of_4096_in_32_chunks_is_one_logical_step():
  """Same clipped sum as one 4096 batch with the noise off, and the noise is drawn once per logical
  step with std σC, not once per chunk (which would make it sqrt(32) times larger)."""
  model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(3)])
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4096, 8)).astype(np.float32)
  labels = rng.integers(0, 3, 4096)
  mask = np.ones(4096, np.float32)
  quiet = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.1, noise_multiplier=0.0)
  step = steps.TrainStep(model, quiet, tf.identity, private=True, expected_batch_size=4096.0)
  whole, *_ = step.accumulate([(images, labels, mask)])
  chunked, *_ = step.accumulate([(images[i:i + 128], labels[i:i + 128], mask[i:i + 128])
                                 for i in range(0, 4096, 128)])
  for a, b in zip(whole, chunked):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)

  sigma, clip = 2.0, 0.1
  noisy = optimizers.build_optimizer("dp_sgd", 1.0, l2_norm_clip=clip, noise_multiplier=sigma)
  step = steps.TrainStep(model, noisy, tf.identity, private=True, expected_batch_size=4096.0)
  deltas = []
  for _ in range(40):  # 40 logical steps of 32 chunks; zero gradients isolate the noise.
    before = model.trainable_variables[0].numpy()
    step([(images[i:i + 128], labels[i:i + 128], np.zeros(128, np.float32))
          for i in range(0, 4096, 128)])
    deltas.append((before - model.trainable_variables[0].numpy()).ravel())
  # lr 1: each update is noise / 4096 with std σC / 4096; 40 * 24 draws give std within ~5%.
  assert np.std(np.concatenate(deltas)) * 4096 == pytest.approx(sigma * clip, rel=0.1)


@pytest.mark.parametrize("name", sorted(lr_schedules.LR_SCHEDULES))
def test_lr_schedules_start_end_and_warm_up(name):
  schedule = lr_schedules.make_schedule(name, 0.8, total_steps=100, end_learning_rate=0.01,
                                        warmup_steps=10)
  rate = lambda step: float(schedule(step)) if callable(schedule) else schedule
  assert rate(100) == pytest.approx(0.8 if name == "constant" else 0.01, rel=1e-4)
  if name == "warmup_cosine":
    assert rate(0) == 0.0 and rate(5) == pytest.approx(0.4) and rate(10) == pytest.approx(0.8)
  else:
    assert rate(0) == pytest.approx(0.8)
  with pytest.raises(ValueError, match="lr_schedule"):
    lr_schedules.make_schedule("triangle", 0.1, 10)


@pytest.mark.newest_stack  # keras-cv follows the newest TensorFlow too.
@pytest.mark.parametrize("augment", ["randaugment", "augmix"])
@pytest.mark.parametrize("channels", [1, 3])
def test_keras_cv_augmentations_keep_shape_and_range_eagerly_and_compiled(augment, channels):
  preprocess = data.make_preprocess([0.0] * channels, [1.0] * channels, augment, training=True)
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, channels)).astype(np.uint8)
  for fn in (preprocess, tf.function(preprocess)):
    out = fn(tf.constant(images)).numpy()
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images / 255.0)  # It augmented.
  evaluation = data.make_preprocess([0.0] * channels, [1.0] * channels, augment, training=False)
  np.testing.assert_allclose(evaluation(images).numpy(), images / 255.0, rtol=1e-6)
