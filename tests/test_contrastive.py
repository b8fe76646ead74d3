"""Alignment and uniformity losses against NumPy, and the seeded two-view augmentation."""

import numpy as np
import tensorflow as tf

from tfdp.priors import contrastive


def _normalized(rng, n, d):
  x = rng.normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _numpy_uniform(x, t):
  pairs = [np.exp(-t * np.sum((x[i] - x[j]) ** 2))
           for i in range(len(x)) for j in range(i + 1, len(x))]
  return np.log(np.mean(pairs))


def test_losses_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  x, y = _normalized(rng, 7, 5), _normalized(rng, 7, 5)
  align = np.mean(np.linalg.norm(x - y, axis=1) ** 2)
  np.testing.assert_allclose(contrastive.align_loss(x, y).numpy(), align, rtol=1e-5)
  np.testing.assert_allclose(contrastive.align_loss(x, y, alpha=1.0).numpy(),
                             np.mean(np.linalg.norm(x - y, axis=1)), rtol=1e-5)
  for t in (2.0, 0.5):
    np.testing.assert_allclose(contrastive.uniform_loss(x, t).numpy(), _numpy_uniform(x, t),
                               rtol=1e-5)
  loss, got_align, uniform = contrastive.contrastive_loss(x, y)
  expected_uniform = (_numpy_uniform(x, 2.0) + _numpy_uniform(y, 2.0)) / 2
  np.testing.assert_allclose([loss, got_align, uniform],
                             [align + expected_uniform, align, expected_uniform], rtol=1e-5)


def test_uniformity_prefers_spread_embeddings():
  rng = np.random.default_rng(1)
  spread = _normalized(rng, 16, 3)
  clustered = _normalized(rng, 1, 3).repeat(16, axis=0) + 0.01 * spread
  assert contrastive.uniform_loss(spread) < contrastive.uniform_loss(clustered)
  assert abs(float(contrastive.uniform_loss(clustered))) < 1e-2  # All pairs at distance ~0.


def test_views_are_seeded_valid_and_differ():
  images = tf.random.stateless_uniform([6, 16, 16, 3], [0, 1])
  first, second = contrastive.augment_views(images, tf.constant([3, 4]))
  again, _ = contrastive.augment_views(images, tf.constant([3, 4]))
  assert first.shape == images.shape and first.dtype == tf.float32
  np.testing.assert_array_equal(first.numpy(), again.numpy())
  assert float(tf.reduce_min(first)) >= 0.0 and float(tf.reduce_max(first)) <= 1.0 + 1e-6
  assert float(tf.reduce_mean(tf.abs(first - second))) > 0.01
  traced = tf.function(contrastive.augment)(images, tf.constant([3, 4]))
  eager = contrastive.augment(images, tf.constant([3, 4]))
  np.testing.assert_allclose(traced.numpy(), eager.numpy(), atol=1e-5)
