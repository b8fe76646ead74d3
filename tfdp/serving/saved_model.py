"""SavedModel export for TF Serving, with the training preprocessing and a model card inside.

Signatures (both return `probabilities` [batch, classes] float32, `classes` [batch] int32 and
`class_names` [batch, classes] string):
- `serving_default`: `image_bytes` [batch] tf.string of encoded JPEG/PNG/BMP/GIF files (a REST client
  sends them base64 as {"b64": ...}); each is decoded, resized to the model's input size (bilinear,
  rounded back to uint8 pixels) and preprocessed in-graph.
- `predict_pixels`: `pixels` [batch, H, W, C] uint8.
Only the model's weights are saved: no optimizer state, no data. The model card (tfdp.serving.model_card) is
an asset, assets/model_card.json, and is also written beside the version directory.

A Keras user's model exports alone, `export_saved_model(private, export_dir)`: the class names
default to "0".."K-1", the preprocessing to what the model's input expects (`default_preprocess`),
and `probabilities` are the model's own outputs when it ends in softmax or sigmoid, a softmax of
them when it outputs logits (`output_kind`); a single unit is binary, [1 - p, p].

Layout: `export_versioned(..., base_dir)` writes base_dir/<version>/ with the next free integer
version, the layout TF Serving polls.

`python -m tfdp.export` exports a tfdp.train run's checkpoint (tfdp.training.export_run).
"""

import json
import os
from typing import Callable, List, Optional, Sequence

import tensorflow as tf

from tfdp import atomic
from tfdp import run_lock
from tfdp.serving import model_card as model_card_lib

MODEL_CARD = "model_card.json"
OUTPUT_KINDS = ("logits", "probabilities")
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
_SCALING_LAYERS = (tf.keras.layers.Rescaling, tf.keras.layers.Normalization)


def output_kind(model: tf.keras.Model) -> str:
  """'probabilities' when the model's last layer ends in softmax or sigmoid (an activation
  argument, or a Softmax / Activation layer), else 'logits'."""
  layer = _last_layer(model)
  if isinstance(layer, tf.keras.layers.Softmax):
    return "probabilities"
  activation = getattr(layer, "activation", None)
  name = getattr(activation, "__name__", activation)
  return "probabilities" if name in _PROBABILITY_ACTIVATIONS else "logits"


def default_preprocess(model: tf.keras.Model) -> Callable:
  """uint8 pixels -> what the model's input expects: cast to float32 when the model rescales
  its input itself (its first layer, past augmentation layers, is Rescaling or Normalization),
  else cast and divided by 255 (inputs in [0, 1], as keras.io examples train)."""
  if isinstance(_first_layer(model), _SCALING_LAYERS):
    return lambda pixels: tf.cast(pixels, tf.float32)
  return lambda pixels: tf.cast(pixels, tf.float32) / 255.0


def default_class_names(model: tf.keras.Model) -> List[str]:
  """"0".."K-1" for K output units; a single (sigmoid) unit is 2 classes."""
  return [str(k) for k in range(_num_classes(model))]


def _num_classes(model: tf.keras.Model) -> int:
  shape = model.output_shape
  if isinstance(shape, list) or len(shape) != 2:
    raise ValueError(f"export takes a classifier with one output [batch, classes]; this model's "
                     f"output shape is {shape}")
  return max(2, int(shape[-1]))


def _leading_layers(model: tf.keras.Model):
  """The model's layers in order, nested models flattened, without the input layers."""
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      yield from _leading_layers(layer)
    elif not isinstance(layer, tf.keras.layers.InputLayer):
      yield layer


def _first_layer(model: tf.keras.Model):
  """The first layer that acts at inference: random augmentation layers are skipped."""
  for layer in _leading_layers(model):
    if not type(layer).__name__.startswith("Random"):
      return layer
  return None


def _last_layer(model: tf.keras.Model):
  """The layer that computes the model's output (through nested models)."""
  history = getattr(model.outputs[0], "_keras_history", None) if model.outputs else None
  layer = history.layer if history else (model.layers[-1] if model.layers else None)
  return _last_layer(layer) if isinstance(layer, tf.keras.Model) else layer


def _as_probabilities(outputs, kind: str):
  """[batch, K] probabilities from the model's outputs; one unit -> [1 - p, p]."""
  if kind == "logits":
    if outputs.shape[-1] == 1:
      outputs = tf.sigmoid(outputs)
    else:
      return tf.nn.softmax(outputs, axis=-1)
  if outputs.shape[-1] == 1:
    return tf.concat([1.0 - outputs, outputs], axis=-1)
  return outputs


class _Classifier(tf.Module):
  """Wraps a trained model: pixels or encoded images -> class probabilities, preprocessing inside."""

  def __init__(self, model: tf.keras.Model, preprocess: Callable, class_names: Sequence[str],
               outputs: str, model_card_path: Optional[str] = None):
    super().__init__()
    self.model = model
    self._preprocess = preprocess
    self._outputs = outputs
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
    outputs = tf.cast(self.model(self._preprocess(pixels), training=False), tf.float32)
    probabilities = _as_probabilities(outputs, self._outputs)
    batch = tf.shape(pixels)[0]
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
        "class_names": tf.tile(self.class_names[tf.newaxis], [batch, 1]),
    }


def export_saved_model(model: tf.keras.Model, export_dir: str, *,
                       preprocess: Optional[Callable] = None,
                       class_names: Optional[Sequence[str]] = None,
                       model_card: Optional[dict] = None, outputs: Optional[str] = None) -> str:
  """Writes a SavedModel to `export_dir` atomically (temp dir, then rename); returns its path.

  Args:
    model: images -> logits or probabilities [batch, K]; a tfdp.keras private model brings its
      own model card (from its ledger) when `model_card` is None, and records its weights with
      their ledger (tfdp.keras.weights_ledger). Only its layers' weights are written: not its
      optimizer state nor its step count.
    export_dir: where the SavedModel goes (replaced whole).
    preprocess: uint8 pixels [batch, H, W, C] -> the model's input, in-graph. Default
      (default_preprocess): cast to float32 and divided by 255, or only cast when the model's
      first layer is Rescaling or Normalization.
    class_names: one name per class. Default: "0".."K-1" for K outputs (2 for a single unit).
    model_card: the card's fields (tfdp.serving.model_card.build).
    outputs: 'logits' or 'probabilities', what the model returns (default: output_kind(model)).
      Logits are softmaxed; a single unit p (after a sigmoid of a logit) becomes [1 - p, p].
  """
  if outputs is not None and outputs not in OUTPUT_KINDS:
    raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {outputs!r}")
  if model_card is None and hasattr(model, "privacy_report"):
    model_card = model_card_lib.build(model.privacy_report())
  if hasattr(model, "register_weights"):
    model.register_weights()  # Whatever a private model releases, its ledger goes with it.
  outputs = outputs or output_kind(model)
  class_names = list(class_names) if class_names is not None else default_class_names(model)
  if len(class_names) != _num_classes(model):
    raise ValueError(f"{len(class_names)} class_names for a model of {_num_classes(model)} "
                     "classes; give one name per class")
  preprocess = preprocess or default_preprocess(model)
  model = _layers_only(model)
  # Both temporaries sit beside export_dir, named for atomic.sweep should a kill leave them.
  temp_dir = atomic.temp_dir_beside(export_dir)
  scratch = atomic.temp_dir_beside(export_dir + ".card")
  try:
    card_path = None
    if model_card is not None:
      card_path = os.path.join(scratch, MODEL_CARD)
      with open(card_path, "w") as f:
        json.dump(model_card, f, indent=2, sort_keys=True)
    module = _Classifier(model, preprocess, class_names, outputs, card_path)
    signatures = {"serving_default": module.predict_images,
                  "predict_pixels": module.predict_pixels}
    tf.saved_model.save(module, temp_dir, signatures=signatures)
    atomic.replace_dir(temp_dir, export_dir)
  finally:
    atomic.remove(scratch)
    atomic.remove(temp_dir)  # Gone already when the export succeeded.
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


def export_versioned(model: tf.keras.Model, base_dir: str, *,
                     preprocess: Optional[Callable] = None,
                     class_names: Optional[Sequence[str]] = None,
                     model_card: Optional[dict] = None, outputs: Optional[str] = None) -> str:
  """Exports to base_dir/<next version>/ (as export_saved_model, the same keyword arguments) and
  writes the model card beside it; returns the path."""
  if model_card is None and hasattr(model, "privacy_report"):
    model_card = model_card_lib.build(model.privacy_report())
  with run_lock.hold(base_dir):  # Two exporters would pick the same version, one lost.
    atomic.sweep(base_dir)  # What an export killed here left.
    return _export_next(model, base_dir, preprocess, class_names, model_card, outputs)


def _export_next(model, base_dir, preprocess, class_names, model_card, outputs) -> str:
  path = export_saved_model(model, os.path.join(base_dir, str(next_version(base_dir))),
                            preprocess=preprocess, class_names=class_names,
                            model_card=model_card, outputs=outputs)
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
