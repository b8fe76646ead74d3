"""SavedModel export with a serving signature that applies the training preprocessing in-graph."""

import os
from typing import Callable, Sequence

import tensorflow as tf

from tfdp import atomic


class _Classifier(tf.Module):
  """Wraps a trained model: uint8 pixels -> class probabilities, with preprocessing inside."""

  def __init__(self, model: tf.keras.Model, preprocess: Callable, class_names: Sequence[str]):
    super().__init__()
    self.model = model
    self._preprocess = preprocess
    self.class_names = tf.constant(list(class_names))
    height, width, channels = model.input_shape[1:]
    self.predict_pixels = tf.function(
        self._predict,
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="pixels")])

  def _predict(self, pixels):
    logits = self.model(self._preprocess(pixels), training=False)
    probabilities = tf.nn.softmax(logits, axis=-1)
    batch = tf.shape(pixels)[0]
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
        "class_names": tf.tile(self.class_names[tf.newaxis], [batch, 1]),
    }


def export_saved_model(model: tf.keras.Model, preprocess: Callable, class_names: Sequence[str],
                       export_dir: str) -> str:
  """Writes a SavedModel to `export_dir` atomically (temp dir, then rename).

  Signatures: `serving_default` and `predict_pixels`, both taking uint8 pixels [batch, H, W, C]
  and returning `probabilities` [batch, classes] float32, `classes` [batch] int32 and
  `class_names` [batch, classes] string. No optimizer state or data is exported.
  """
  module = _Classifier(model, preprocess, class_names)
  temp_dir = atomic.temp_dir_beside(export_dir)
  signatures = {"serving_default": module.predict_pixels, "predict_pixels": module.predict_pixels}
  tf.saved_model.save(module, temp_dir, signatures=signatures)
  atomic.replace_dir(temp_dir, export_dir)
  return os.path.abspath(export_dir)
