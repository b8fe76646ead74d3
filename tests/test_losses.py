"""Per-example losses."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp.dp import losses


def test_hinge_is_crammer_singer_per_example():
  logits = tf.constant([[2.0, 0.5, 0.0], [0.0, 0.2, 0.1], [3.0, 1.0, 2.5]])
  labels = tf.constant([0, 1, 2])
  expected = [max(0.0, 1 + 0.5 - 2.0), max(0.0, 1 + 0.1 - 0.2), max(0.0, 1 + 3.0 - 2.5)]
  np.testing.assert_allclose(losses.hinge(labels, logits), expected, rtol=1e-6)


def test_cross_entropy_is_per_example():
  logits = tf.constant([[2.0, 0.0], [0.0, 2.0]])
  values = losses.cross_entropy(tf.constant([0, 0]), logits).numpy()
  assert values.shape == (2,) and values[0] < values[1]


def test_unknown_loss_lists_valid_ones():
  with pytest.raises(ValueError, match="cross_entropy, hinge"):
    losses.get("focal")
