"""Prior files: an encoder's weights and the card that says where they came from.

A prior is a folder

    encoder.weights.h5   weights of the model without its head (every layer before "logits")
    card.json            model name and options, input shape, how it was made (generator, seed,
                         steps, hyperparameters, command) and `real_images_used: false`

written whole or not at all (a temporary folder, then a rename). `load_into(path, model, name,
options)` loads the encoder part of a freshly built classifier from one; a prior made for another
architecture is refused with a message naming both.
"""

import hashlib
import inspect
import json
import os
from typing import Optional

import tensorflow as tf

from tfdp import atomic
from tfdp import models

WEIGHTS_FILE = "encoder.weights.h5"
CARD_FILE = "card.json"
CARD_FORMAT = "tfdp-prior-1"
HEAD_LAYER = "logits"  # Every tfdp classifier ends in a Dense layer of this name.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def split_head(model: tf.keras.Model) -> tf.keras.Model:
  """The encoder of a tfdp classifier: its layers from the input to the head's input.

  Args:
      model: A functional Keras classifier whose last layer is the Dense "logits".

  Returns:
      A `tf.keras.Model` [batch, H, W, C] -> features [batch, D], sharing `model`'s weights.

  Raises:
      ValueError: If the model does not end in a layer named "logits".
  """
  head = model.layers[-1]
  if head.name != HEAD_LAYER:
    raise ValueError(f"Model {model.name!r} ends in layer {head.name!r}, not {HEAD_LAYER!r}: "
                     "tfdp cannot tell its encoder from its head.")
  return tf.keras.Model(model.inputs, head.input, name=f"{model.name}_encoder")


def save(directory: str, encoder: tf.keras.Model, card: dict) -> str:
  """Writes `encoder`'s weights and `card` (plus the weights' sha256) to `directory` atomically.

  Returns:
      The absolute path of the prior folder.
  """
  temp = atomic.temp_dir_beside(directory)
  weights_path = os.path.join(temp, WEIGHTS_FILE)
  encoder.save_weights(weights_path)
  card = dict(card, format=CARD_FORMAT, weights_file=WEIGHTS_FILE,
              weights_sha256=_sha256(weights_path))
  with open(os.path.join(temp, CARD_FILE), "w") as f:
    json.dump(card, f, indent=2, sort_keys=True)
  atomic.replace_dir(temp, directory)
  return os.path.abspath(directory)


def resolve(path: str) -> str:
  """The prior folder that `path` names: the folder itself, a pretraining run's prior/ inside
  it, or, for a relative path not found from here, the same path under the tfdp checkout (where
  the shipped priors/ live). Raises ValueError naming `path` when none is a prior."""
  candidates = [path, os.path.join(path, "prior")]
  if not os.path.isabs(path):
    candidates += [os.path.join(_CHECKOUT, path), os.path.join(_CHECKOUT, path, "prior")]
  for candidate in candidates:
    if os.path.isfile(os.path.join(candidate, CARD_FILE)):
      return candidate
  return read_card(path) and path  # Raises, naming what a prior must hold.


def check_path(path: str, model_name: str, model_options: dict, input_shape) -> dict:
  """Checks, before any training, that `path` is an intact prior made for this architecture;
  returns its card. Raises ValueError naming the problem."""
  folder = resolve(path)
  card = read_card(folder)
  check_matches(card, path, model_name, model_options, input_shape)
  if _sha256(os.path.join(folder, WEIGHTS_FILE)) != card["weights_sha256"]:
    raise ValueError(f"{os.path.join(folder, WEIGHTS_FILE)!r} does not match the sha256 in its "
                     "card: it was changed after the prior was made.")
  return card


def provenance(path: Optional[str]) -> Optional[dict]:
  """What a run's metrics and model card record of its prior (None without one)."""
  if not path:
    return None
  folder = resolve(path)
  card = read_card(folder)
  keys = ("model", "generator", "seed", "steps", "images_seen", "real_images_used", "statement",
          "weights_sha256", "command")
  return {"path": os.path.abspath(folder), **{key: card.get(key) for key in keys}}


def read_card(path: str) -> dict:
  """The card of the prior folder `path`; ValueError naming the path if it is not a prior."""
  card_path = os.path.join(path, CARD_FILE)
  if not os.path.isfile(card_path) or not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
    raise ValueError(f"{path!r} is not a tfdp prior: a prior is a folder holding "
                     f"{WEIGHTS_FILE} and {CARD_FILE} (made by python -m tfdp.pretrain).")
  with open(card_path) as f:
    card = json.load(f)
  if card.get("format") != CARD_FORMAT:
    raise ValueError(f"{card_path!r} has format {card.get('format')!r}, not {CARD_FORMAT!r}.")
  return card


def check_matches(card: dict, path: str, model_name: str, model_options: dict,
                  input_shape) -> None:
  """Raises ValueError naming both architectures when the prior was made for another model."""
  made_for = (card["model"], _resolved(card["model"], card.get("model_options", {})))
  wanted = (model_name, _resolved(model_name, model_options))
  if made_for != wanted:
    raise ValueError(
        f"--init_from {path!r} holds an encoder for model {card['model']!r} with options "
        f"{card.get('model_options', {})}, but this run builds {model_name!r} with options "
        f"{dict(model_options)}; use a prior made for the same architecture.")
  if tuple(card["input_shape"][-1:]) != tuple(input_shape[-1:]):
    raise ValueError(f"--init_from {path!r} was made for {card['input_shape'][-1]}-channel "
                     f"images, this run's have {input_shape[-1]}.")


def load_into(path: str, model: tf.keras.Model, model_name: str, model_options: dict) -> dict:
  """Loads the encoder weights of prior `path` into the classifier `model`; returns the card.

  The head ("logits") keeps its fresh initialization. Raises ValueError if `path` is not a prior,
  was made for another architecture, or its file does not match its card's sha256.
  """
  card = check_path(path, model_name, model_options, model.input_shape[1:])
  split_head(model).load_weights(os.path.join(resolve(path), WEIGHTS_FILE))
  return card


def _resolved(model_name: str, options: dict) -> tuple:
  """The builder's options with its defaults filled in, comparable across spellings."""
  builder = models.MODELS.get(model_name)
  defaults = {} if builder is None else {
      name: parameter.default for name, parameter in inspect.signature(builder).parameters.items()
      if parameter.default is not inspect.Parameter.empty}
  resolved = dict(defaults, **dict(options))
  return tuple(sorted((key, json.dumps(value)) for key, value in resolved.items()))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
