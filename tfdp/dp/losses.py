"""Per-example losses by name: (labels [B] int, logits [B, K]) -> [B] float32.

Per-example (never batch-averaged) because DP clips each example's gradient separately.
"""

from typing import Callable, Dict

import tensorflow as tf

from tfdp import names


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy per example."""
  return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def hinge(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Multi-class hinge (Crammer-Singer) per example: max(0, 1 + max_{j != y} z_j - z_y).

  With the `linear` model this is a linear SVM.
  """
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
  return tf.keras.losses.categorical_hinge(one_hot, logits)


LOSSES: Dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "cross_entropy": cross_entropy,
    "hinge": hinge,
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of LOSSES."""
  names.check("loss", name, sorted(LOSSES))


def get(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  check_name(name)
  return LOSSES[name]
