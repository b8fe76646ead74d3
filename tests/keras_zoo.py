"""Keras models as their users write them (keras.io style: fused activations, softmax outputs,
string losses), with data shaped for each: what tfdp.keras.make_private must take.

Shared by tests/test_keras_models.py (fast path, brute force, fit) and
benchmarks/keras_models.py (DP / non-private epoch time).
"""

import dataclasses
import importlib.util
import os
from typing import Callable, Tuple

import numpy as np
import tensorflow as tf

from tensorflow import keras
from tensorflow.keras import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class StandardModel:
  """A model builder, its compile loss and a maker of (inputs, labels) for it."""
  build: Callable[[], keras.Model]
  loss: object
  data: Callable[[int, int], Tuple[np.ndarray, np.ndarray]]  # (n, seed) -> (x, y)
  needs_fix: bool = False  # Has BatchNorm: goes through tfdp.keras.fix first.


def _example(filename: str):
  """The module of examples/<filename>, loaded from its file (examples/ is not a package)."""
  spec = importlib.util.spec_from_file_location(
      filename[:-3], os.path.join(ROOT, "examples", filename))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def mnist_convnet() -> keras.Model:
  """keras.io "Simple MNIST convnet", as examples/keras_mnist_convnet.py (and keras.io) write it."""
  return _example("keras_mnist_convnet.py").make_model((28, 28, 1), 10)


def text_classifier() -> keras.Model:
  """A bag-of-embeddings text classifier: token ids [B, 32] from a 2,000-word vocabulary."""
  inputs = keras.Input(shape=(32,), dtype="int32")
  x = layers.Embedding(2000, 16)(inputs)
  x = layers.GlobalAveragePooling1D()(x)
  x = layers.Dense(16, activation="relu")(x)
  outputs = layers.Dense(4, activation="softmax")(x)
  return keras.Model(inputs, outputs)


def conv1d_net() -> keras.Model:
  """A small Conv1D net over [B, 64, 3] sequences, logits out, one causal convolution."""
  return keras.Sequential([
      keras.Input(shape=(64, 3)),
      layers.Conv1D(16, 5, activation="relu"),
      layers.MaxPooling1D(2),
      layers.Conv1D(16, 3, padding="causal", activation="relu"),
      layers.GlobalAveragePooling1D(),
      layers.Dense(5),
  ])


def keras_fit_example() -> keras.Model:
  """The model of examples/keras_fit.py (Conv2D with fused ReLU + GroupNormalization)."""
  return _example("keras_fit.py").make_model((8, 8, 1), 10)


def binary_mlp() -> keras.Model:
  """An MLP with a sigmoid output for binary_crossentropy."""
  return keras.Sequential([
      keras.Input(shape=(8, 8, 1)),
      layers.Flatten(),
      layers.Dense(64, activation="relu"),
      layers.Dense(1, activation="sigmoid"),
  ])


def mobilenet_v2() -> keras.Model:
  """tf.keras.applications.MobileNetV2 (with BatchNorm: needs tfdp.keras.fix)."""
  return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)


def images(shape, classes):
  def make(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, *shape)).astype(np.float32),
            rng.integers(0, classes, n).astype(np.int64))
  return make


def tokens(length, vocabulary, classes):
  def make(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, vocabulary, (n, length)).astype(np.int32),
            rng.integers(0, classes, n).astype(np.int64))
  return make


STANDARD = {
    "mnist_convnet": StandardModel(mnist_convnet, "sparse_categorical_crossentropy",
                                   images((28, 28, 1), 10)),
    "text_classifier": StandardModel(text_classifier, "sparse_categorical_crossentropy",
                                     tokens(32, 2000, 4)),
    "conv1d_net": StandardModel(conv1d_net,
                                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                images((64, 3), 5)),
    "keras_fit_example": StandardModel(keras_fit_example,
                                       keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                       images((8, 8, 1), 10)),
    "binary_mlp": StandardModel(binary_mlp, "binary_crossentropy", images((8, 8, 1), 2)),
    "mobilenet_v2": StandardModel(mobilenet_v2, "sparse_categorical_crossentropy",
                                  images((32, 32, 3), 10), needs_fix=True),
}


def without_dropout(model: keras.Model) -> keras.Model:
  """Sets every Dropout's rate to 0 (in place), so a batched pass and one example at a time
  compute the same function and can be compared."""
  for layer in model.submodules:
    if isinstance(layer, layers.Dropout):
      layer.rate = 0.0
  return model
