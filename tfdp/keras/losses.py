"""What `compile(loss=...)` takes, as the per-example loss DP-SGD clips.

Keras users write the loss as a name ("sparse_categorical_crossentropy", "binary_crossentropy"),
a function, or a Loss object, for models that output logits or probabilities (a softmax or sigmoid
output with `from_logits=False`, as keras.io writes them). DP-SGD needs one loss per example, never
a batch reduction: a batch mean would tie each example's loss to the others'.
"""

from typing import Callable

import tensorflow as tf


def per_example_loss(loss) -> Callable:
  """(labels, outputs) -> [B] losses, one per example, from what `compile(loss=...)` takes.

  A Loss object's reduction is bypassed (its `call`). Labels of rank one less than a one-unit
  output ([B] against [B, 1], a binary classifier) get the unit axis, so the loss compares each
  example's label with its own output (Keras would squeeze the output instead, and a binary
  cross-entropy would then average over the batch). Losses with more than one value per example
  (per time step) are averaged over them.

  Raises:
    ValueError: `loss` is none of the above, or returns no per-example values.
  """
  if isinstance(loss, tf.keras.losses.Loss):
    fn = loss.call
  elif isinstance(loss, str) or callable(loss):
    fn = tf.keras.losses.get(loss)
  else:
    raise ValueError(f"loss must be a Keras loss name, function or Loss object, got {loss!r}")

  def per_example(labels, outputs):
    labels, outputs = tf.convert_to_tensor(labels), tf.convert_to_tensor(outputs)
    values = fn(_align_labels(labels, outputs), outputs)
    if values.shape.rank == 0:
      raise ValueError(f"the loss {loss!r} returned one value for the whole batch; DP-SGD needs "
                       "one loss per example (a Loss object's reduction is bypassed; a function "
                       "must not average over the batch)")
    if values.shape.rank > 1:
      values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values

  return per_example


def _align_labels(labels, outputs):
  if (labels.shape.rank is not None and outputs.shape.rank == labels.shape.rank + 1
      and outputs.shape[-1] == 1):
    return labels[..., None]
  return labels
