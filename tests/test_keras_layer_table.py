"""The Keras layer table in docs/keras.md is what tfdp.keras.inspect says of each layer type.

    python -m tests.test_keras_layer_table     # prints the table, to paste into docs/keras.md

Each layer type is built once, in a small model, and classified by the validator (refused,
stateless, or trainable) and by the fast engine (a rule of its own, or the slow path).
"""

import pathlib
import re

import tensorflow as tf

import tfdp
from tfdp.dp import clipping
from tfdp.dp.fast import rules
from tfdp.dp.fast import vectorized

L = tf.keras.layers
DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "keras.md"

# Layer type -> (input shape, input dtype, layer builder). One instance of each is inspected.
SEQ, IMG, VOL = (6, 3), (6, 6, 3), (4, 4, 4, 2)
LAYERS = {
    "Dense": (SEQ, "float32", lambda: L.Dense(4, activation="relu")),
    "EinsumDense": (SEQ, "float32", lambda: L.EinsumDense("abc,cd->abd", (None, 4), bias_axes="d")),
    "Conv1D": (SEQ, "float32", lambda: L.Conv1D(4, 3, activation="relu")),
    "Conv2D": (IMG, "float32", lambda: L.Conv2D(4, 3, activation="relu")),
    "Conv3D": (VOL, "float32", lambda: L.Conv3D(4, 2, activation="relu")),
    "Conv1DTranspose": (SEQ, "float32", lambda: L.Conv1DTranspose(4, 3, strides=2)),
    "Conv2DTranspose": (IMG, "float32", lambda: L.Conv2DTranspose(4, 3, strides=2)),
    "Conv3DTranspose": (VOL, "float32", lambda: L.Conv3DTranspose(4, 2)),
    "DepthwiseConv1D": (SEQ, "float32", lambda: L.DepthwiseConv1D(3)),
    "DepthwiseConv2D": (IMG, "float32", lambda: L.DepthwiseConv2D(3, activation="relu")),
    "SeparableConv1D": (SEQ, "float32", lambda: L.SeparableConv1D(4, 3)),
    "SeparableConv2D": (IMG, "float32", lambda: L.SeparableConv2D(4, 3, activation="relu")),
    "Embedding": ((6,), "int32", lambda: L.Embedding(10, 4)),
    "MultiHeadAttention": (SEQ, "float32", lambda: _SelfAttention()),
    "LayerNormalization": (SEQ, "float32", L.LayerNormalization),
    "GroupNormalization": (IMG, "float32", lambda: L.GroupNormalization(3)),
    "PReLU": (SEQ, "float32", L.PReLU),
    "SimpleRNN": (SEQ, "float32", lambda: L.SimpleRNN(4)),
    "LSTM": (SEQ, "float32", lambda: L.LSTM(4)),
    "GRU": (SEQ, "float32", lambda: L.GRU(4)),
    "Bidirectional": (SEQ, "float32", lambda: L.Bidirectional(L.LSTM(2))),
    "TimeDistributed": (SEQ, "float32", lambda: L.TimeDistributed(L.Dense(4))),
    "ConvLSTM1D": ((3, 6, 2), "float32", lambda: L.ConvLSTM1D(2, 3)),
    "BatchNormalization": (IMG, "float32", L.BatchNormalization),
    "Lambda": (SEQ, "float32", lambda: L.Lambda(lambda x: x - tf.reduce_mean(x, axis=0))),
    "Normalization": (SEQ, "float32", lambda: L.Normalization(mean=0.0, variance=1.0)),
    "UnitNormalization": (SEQ, "float32", L.UnitNormalization),
    "Activation, ReLU, LeakyReLU, ELU, Softmax": (SEQ, "float32", lambda: L.ReLU()),
    "Dropout, SpatialDropout*, GaussianNoise, GaussianDropout, AlphaDropout":
        (IMG, "float32", lambda: L.Dropout(0.5)),
    "Flatten, Reshape, Permute, RepeatVector": (IMG, "float32", L.Flatten),
    "Max/AveragePooling1D-3D, Global*Pooling1D-3D": (IMG, "float32", L.MaxPooling2D),
    "ZeroPadding, Cropping, UpSampling (1D-3D)": (IMG, "float32", L.ZeroPadding2D),
    "Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot":
        (SEQ, "float32", lambda: _Residual()),
    "Rescaling, Resizing, CenterCrop, Random* augmentation": (IMG, "float32",
                                                              lambda: L.Rescaling(1 / 255)),
}


class _SelfAttention:
  """Builder marker: MultiHeadAttention called on (x, x)."""

  def __call__(self, x):
    return L.MultiHeadAttention(num_heads=2, key_dim=2)(x, x)


class _Residual:
  def __call__(self, x):
    return L.Add()([x, x])


HOW = {
    "closed form": "fast: closed-form per-example norms and sums from one batched pass",
    "vectorized": "fast: the layer's own per-example products, vectorized over the batch",
    "sequential": "per layer, one example after another (exact; slower than a closed form)",
    "fallback": "fallback: the whole model one example at a time (slow); register a rule",
    "stateless": "no weights: nothing to compute",
    "refused": "refused by make_private, with the reason and the fix",
}
RULE_KINDS = {vectorized.SequentialRule: "sequential", vectorized.VectorizedRule: "vectorized"}


def classify(name: str) -> str:
  """A key of HOW for LAYERS[name], as make_private and the fast engine see it."""
  shape, dtype, build = LAYERS[name]
  inputs = tf.keras.Input(shape, dtype=dtype)
  x = build()(inputs)
  x = L.Flatten()(x) if x.shape.rank > 2 else x
  model = tf.keras.Model(inputs, L.Dense(2)(x))
  verdicts = [v for v in tfdp.keras.inspect(model) if v.path != model.layers[-1].name
              and v.layer_class not in ("Flatten", "InputLayer")]
  if any(v.verdict == "refused" for v in verdicts):
    return "refused"
  if all(v.verdict == "stateless" for v in verdicts):
    return "stateless"
  engine = clipping.make_engine("fast", model)
  if engine.fallback_layers:
    return "fallback"
  kinds = {RULE_KINDS.get(type(rules.rule_for(layer)), "closed form")
           for layer in engine.fast_layers[:-1]}  # Not the Dense head.
  return kinds.pop()


def table() -> str:
  rows = ["| Keras layer | in a private fit |", "|---|---|"]
  rows += [f"| {name} | {HOW[classify(name)]} |" for name in LAYERS]
  return "\n".join(rows)


def test_doc_table_is_what_the_validator_and_engine_say():
  text = DOC.read_text()
  documented = re.search(r"<!-- layer table -->\n(.*?)\n<!-- end layer table -->", text, re.S)
  assert documented, "docs/keras.md has no layer table markers"
  assert documented.group(1).strip() == table()


if __name__ == "__main__":
  print(table())
