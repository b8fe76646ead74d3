"""SavedModel export for TF Serving, with the training preprocessing and a model card inside.

Signatures (both return `probabilities` [batch, classes] float32, `classes` [batch] int32 and
`class_names` [batch, classes] string):
- `serving_default`: `image_bytes` [batch] tf.string of encoded JPEG/PNG/BMP/GIF files (a REST client
  sends them base64 as {"b64": ...}); each is decoded, resized to the model's input size (bilinear,
  rounded back to uint8 pixels) and preprocessed in-graph.
- `predict_pixels`: `pixels` [batch, H, W, C] uint8.
Only the model's weights are saved: no optimizer state, no data. The model card (tfdp.serving.model_card) is
an asset, assets/model_card.json, and is also written beside the version directory.

Layout: `export_versioned(..., base_dir)` writes base_dir/<version>/ with the next free integer
version, the layout TF Serving polls.

`python -m tfdp.export` exports a tfdp.train run's checkpoint (tfdp.serving.release).
"""

import json
import os
import tempfile
from typing import Callable, Optional, Sequence

import tensorflow as tf

from tfdp import atomic
from tfdp.serving import model_card as model_card_lib

MODEL_CARD = "model_card.json"


class _Classifier(tf.Module):
  """Wraps a trained model: pixels or encoded images -> class probabilities, preprocessing inside."""

  def __init__(self, model: tf.keras.Model, preprocess: Callable, class_names: Sequence[str],
               model_card_path: Optional[str] = None):
    super().__init__()
    self.model = model
    self._preprocess = preprocess
    self.class_names = tf.constant(list(class_names))
    if model_card_path:
      self.model_card = tf.saved_model.Asset(model_card_path)
    self._height, self._width, self._channels = model.input_shape[1:]
    self.predict_pixels = tf.function(self._predict, input_signature=[
        tf.TensorSpec([None, self._height, self._width, self._channels], tf.uint8, name="pixels")])
    self.predict_images = tf.function(self._predict_encoded, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])

  def _decode(self, encoded):
    image = tf.io.decode_image(encoded, channels=self._channels, expand_animations=False)
    resized = tf.image.resize(image, [self._height, self._width], method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

  def _predict_encoded(self, image_bytes):
    pixels = tf.map_fn(self._decode, image_bytes, fn_output_signature=tf.TensorSpec(
        [self._height, self._width, self._channels], tf.uint8))
    return self._predict(pixels)

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
                       export_dir: str, model_card: Optional[dict] = None) -> str:
  """Writes a SavedModel to `export_dir` atomically (temp dir, then rename); returns its path.

  Args:
    model: images -> logits; a tfdp.keras private model brings its own model card (from its
      ledger) when `model_card` is None. Only its layers' weights are written: not its optimizer
      state nor its step count.
    preprocess: uint8 pixels [batch, H, W, C] -> the model's input, in-graph.
    class_names: one name per class.
    export_dir: where the SavedModel goes (replaced whole).
    model_card: the card's fields (tfdp.serving.model_card.build).
  """
  if model_card is None and hasattr(model, "privacy_report"):
    model_card = model_card_lib.build(model.privacy_report())
  model = _layers_only(model)
  temp_dir = atomic.temp_dir_beside(export_dir)
  with tempfile.TemporaryDirectory() as scratch:
    card_path = None
    if model_card is not None:
      card_path = os.path.join(scratch, MODEL_CARD)
      with open(card_path, "w") as f:
        json.dump(model_card, f, indent=2, sort_keys=True)
    module = _Classifier(model, preprocess, class_names, card_path)
    signatures = {"serving_default": module.predict_images,
                  "predict_pixels": module.predict_pixels}
    tf.saved_model.save(module, temp_dir, signatures=signatures)
  atomic.replace_dir(temp_dir, export_dir)
  return os.path.abspath(export_dir)


def _layers_only(model: tf.keras.Model) -> tf.keras.Model:
  """A functional model over the same layers, without what a compiled model also tracks."""
  if not getattr(model, "_is_graph_network", False):
    return model
  return tf.keras.Model(model.inputs, model.outputs, name=model.name)


def read_model_card(saved_model_dir: str) -> dict:
  """The model card inside an export (its assets/model_card.json)."""
  with open(os.path.join(saved_model_dir, "assets", MODEL_CARD)) as f:
    return json.load(f)


def next_version(base_dir: str) -> int:
  """1 + the largest integer-named subdirectory of base_dir (1 when there is none)."""
  versions = [int(name) for name in (os.listdir(base_dir) if os.path.isdir(base_dir) else [])
              if name.isdigit()]
  return max(versions, default=0) + 1


def export_versioned(model: tf.keras.Model, preprocess: Callable, class_names: Sequence[str],
                     base_dir: str, model_card: Optional[dict] = None) -> str:
  """Exports to base_dir/<next version>/ and writes the model card beside it; returns the path."""
  path = export_saved_model(model, preprocess, class_names,
                            os.path.join(base_dir, str(next_version(base_dir))), model_card)
  if model_card is not None:
    atomic.write_text(os.path.join(base_dir, MODEL_CARD),
                      json.dumps(model_card, indent=2, sort_keys=True))
  return path


def latest_version(model_dir: str) -> str:
  """`model_dir` itself if it holds a SavedModel, else its highest-numbered version directory."""
  if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
    return model_dir
  version = next_version(model_dir) - 1
  if version < 1:
    raise ValueError(f"{model_dir} holds no SavedModel (no saved_model.pb and no version dirs)")
  return os.path.join(model_dir, str(version))
