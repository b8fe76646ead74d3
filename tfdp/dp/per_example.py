"""Per-example gradients computed one example at a time, vectorized over the batch.

The exact reference every faster path is checked against, and what the fast engine falls back on
for layers it has no closed form for (tfdp.dp.fast).
"""

from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (labels [B], logits [B, K]) -> losses [B]


def gradients(
    model: tf.keras.Model, loss_fn: LossFn, images: tf.Tensor, labels: tf.Tensor,
    variables: Optional[Sequence[tf.Variable]] = None
) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
  """Per-example gradients, each example's forward and backward pass run alone, vectorized.

  Each example is a batch of one inside `tf.vectorized_map`, so row i depends on example i alone.
  The Jacobian of the batch's loss vector (TF Privacy's method) gives the same values but contracts
  every row into every other's weight gradient (with zeros), so a single inf or NaN example would
  turn every row into NaN.

  Args:
    model: maps images [B, ...] to logits [B, K]; must not mix examples (no BatchNorm).
    loss_fn: per-example loss.
    images: float32 [B, H, W, C], preprocessed.
    labels: int [B].
    variables: whose gradients (default: model.trainable_variables).

  Returns:
    (gradients, losses, logits): gradients is one tensor [B, *var.shape] per variable, losses
    [B], logits [B, K]. All private.
  """
  variables = model.trainable_variables if variables is None else list(variables)

  def one_example(example):
    image, label = example
    with tf.GradientTape() as tape:
      logits = model(image[None], training=True)
      loss = loss_fn(label[None], logits)[0]
    gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return gradients, loss, logits[0]

  gradients, losses, logits = map_examples(one_example, (images, labels))
  return list(gradients), losses, logits


def map_examples(fn: Callable, elems, vectorize: bool = True):
  """fn over the rows of `elems`: vectorized (tf.vectorized_map), or one row after another
  (tf.map_fn) when `vectorize` is False or TensorFlow cannot vectorize the ops (Keras's LSTM and
  GRU kernels). Both run fn on each row alone, so row i of the result depends on row i only."""
  if vectorize:
    try:
      return tf.vectorized_map(fn, elems)
    except (TypeError, ValueError, NotImplementedError):
      pass
  row_specs = tf.nest.map_structure(lambda e: tf.TensorSpec(e.shape[1:], e.dtype), elems)
  outputs = tf.function(fn).get_concrete_function(row_specs).structured_outputs
  signature = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), outputs)
  return tf.map_fn(fn, elems, fn_output_signature=signature)
