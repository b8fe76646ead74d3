"""Standard Keras models through make_private: the fast path, checked against brute force.

Every model is written as its users write it (fused activations, softmax outputs, string losses,
nested models) and every fast clipped sum is compared with the brute-force reference: each
example's gradient computed alone, clipped, summed (tests/dp_reference.py).
"""

import logging

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

import tfdp
from tests import dp_reference as ref
from tests import keras_zoo
from tfdp.dp import clipping
from tfdp.dp.fast import graph
from tfdp.dp.fast import rules
from tfdp.keras import losses as losses_lib

CLIP = 0.05  # Below every example's gradient norm here: the clip bites (checked).
MASK = np.array([1, 1, 0, 1, 1, 1], np.float32)  # One padding row, which must add nothing.
SLOW_PATH = "fast clipping has no usable rule"


def _assert_matches_brute_force(engine, model, loss, x, y, rtol=2e-4, atol=1e-6):
  loss_fn = losses_lib.per_example_loss(loss)
  sums, _, _, norms = engine(loss_fn, tf.constant(x), tf.constant(y), tf.constant(MASK), CLIP)
  expected = ref.clipped_sum(model, x, y, MASK, CLIP, loss_fn)
  assert float(tf.reduce_min(tf.boolean_mask(norms, MASK > 0))) > CLIP  # The clip bites.
  for variable, got, want in zip(model.trainable_variables, sums, expected):
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=variable.name)


def _private(model, loss, train_size=32, batch_size=8, **overrides):
  options = dict(optimizer="dp_sgd", learning_rate=0.1, l2_norm_clip=1.0, target_epsilon=3.0,
                 target_delta=1e-5, epochs=1, train_size=train_size, batch_size=batch_size)
  options.update(overrides)
  private = tfdp.keras.make_private(model, **options)
  private.compile(loss=loss, metrics=["accuracy"])
  return private


@pytest.fixture
def absl_warnings(caplog):
  caplog.set_level(logging.WARNING)
  return caplog


# MobileNetV2's fit spends about 35 s building its graph (2 cores): its fit runs with -m slow,
# and its fast clipped sum is checked against brute force in the default suite below.
_FIT_IN_SLOW_SUITE = ("mobilenet_v2",)
STANDARD_FITS = [pytest.param(name, marks=pytest.mark.slow) if name in _FIT_IN_SLOW_SUITE
                 else name for name in sorted(keras_zoo.STANDARD)]


@pytest.mark.parametrize("name", _FIT_IN_SLOW_SUITE)
def test_large_standard_model_takes_the_fast_path_and_matches_brute_force(name):
  spec = keras_zoo.STANDARD[name]
  tf.keras.utils.set_random_seed(0)
  model = tfdp.keras.fix(spec.build())
  assert tfdp.keras.validate(model) == []
  engine = clipping.make_engine("fast", model)
  assert engine.fallback_layers == []
  x, y = spec.data(6, seed=1)
  _assert_matches_brute_force(engine, model, spec.loss, x, y)


@pytest.mark.parametrize("name", STANDARD_FITS)
def test_standard_model_trains_on_the_fast_path_and_matches_brute_force(name, absl_warnings):
  spec = keras_zoo.STANDARD[name]
  tf.keras.utils.set_random_seed(0)
  model = spec.build()
  if spec.needs_fix:
    model = tfdp.keras.fix(model)
  private = _private(model, spec.loss)
  engine = private._private_step[0].engine  # pylint: disable=protected-access
  assert engine.fallback_layers == []
  assert {id(l) for l in engine.fast_layers} == {
      id(l) for l in graph.leaf_layers(model) if l.trainable_weights}

  rates = {id(l): l.rate for l in model.submodules if isinstance(l, layers.Dropout)}
  keras_zoo.without_dropout(model)  # Batched and one-at-a-time dropout masks differ.
  x, y = spec.data(6, seed=1)
  _assert_matches_brute_force(engine, model, spec.loss, x, y)
  for layer in model.submodules:
    if id(layer) in rates:
      layer.rate = rates[id(layer)]

  x, y = spec.data(32, seed=2)
  history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=8, physical_batch_size=8),
                        epochs=1, verbose=0, callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  assert SLOW_PATH not in absl_warnings.text
  assert 0 < history.history["epsilon"][-1] <= 3.0
  assert "accuracy" not in history.history and "loss" not in history.history  # Private batches.


def _functional(build_body, input_shape, dtype="float32"):
  tf.keras.utils.set_random_seed(3)
  inputs = keras.Input(input_shape, dtype=dtype)
  x = build_body(inputs)
  x = layers.Flatten()(x) if x.shape.rank > 2 else x
  return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


def _nested(inputs):
  inner = keras.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                            layers.Dense(5, activation="tanh")], name="inner_sequential")
  features = keras.Input((6, 6, 2))
  branch = keras.Model(features, layers.Dense(4, activation="swish")(layers.Flatten()(features)),
                       name="inner_functional")
  return layers.Concatenate()([inner(inputs), branch(inputs)])


def _attention(inputs):
  x = layers.Dense(8)(inputs)
  x = layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
  x = layers.LayerNormalization()(x)
  return layers.GlobalAveragePooling1D()(x)


LAYER_MODELS = {
    "conv3d": (lambda x: layers.Conv3D(3, 2, strides=(1, 2, 1), activation="relu")(x), (4, 6, 6, 2)),
    "conv2d_groups": (lambda x: layers.Conv2D(4, 3, groups=2, padding="same", activation="elu")(x),
                      (6, 6, 2)),
    "conv1d_dilated_causal": (lambda x: layers.Conv1D(3, 3, dilation_rate=2, padding="causal",
                                                      activation="relu")(x), (10, 2)),
    "conv1d_strided_same": (lambda x: layers.Conv1D(3, 4, strides=3, padding="same")(x), (10, 2)),
    "depthwise_relu": (lambda x: layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu")(x),
                       (6, 6, 2)),
    "separable": (lambda x: layers.SeparableConv2D(4, 3, strides=2, padding="same",
                                                   depth_multiplier=2, activation="relu")(x),
                  (7, 7, 2)),
    "conv2d_transpose_same": (lambda x: layers.Conv2DTranspose(3, 3, strides=2, padding="same",
                                                               activation="relu")(x), (4, 4, 2)),
    "conv2d_transpose_valid": (lambda x: layers.Conv2DTranspose(3, (3, 2), strides=(2, 1))(x),
                               (4, 5, 2)),
    "conv1d_transpose": (lambda x: layers.Conv1DTranspose(3, 3, strides=2, padding="same")(x),
                         (5, 2)),
    "einsum_dense": (lambda x: layers.EinsumDense("abc,cd->abd", output_shape=(None, 4),
                                                  bias_axes="d", activation="relu")(x), (5, 3)),
    "attention_layer_norm": (_attention, (5, 3)),
    "group_norm": (lambda x: layers.GroupNormalization(2)(layers.Conv2D(4, 3)(x)), (6, 6, 2)),
    "prelu": (lambda x: layers.PReLU()(layers.Dense(4)(x)), (6,)),
    "nested_models": (_nested, (6, 6, 2)),
    "embedding_repeated_tokens": (lambda x: layers.Embedding(7, 4)(x), (9,)),
    "depthwise_conv1d": (lambda x: layers.DepthwiseConv1D(3, activation="relu")(x), (6, 2)),
    "simple_rnn": (lambda x: layers.SimpleRNN(4)(x), (5, 3)),
    "lstm": (lambda x: layers.LSTM(4)(x), (5, 3)),
    "gru_sequences": (lambda x: layers.GRU(3, return_sequences=True)(x), (5, 3)),
    "bidirectional_lstm": (lambda x: layers.Bidirectional(layers.LSTM(3))(x), (5, 3)),
    "time_distributed_dense": (lambda x: layers.TimeDistributed(
        layers.Dense(3, activation="relu"))(x), (5, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_layer_rule_matches_brute_force(name):
  body, shape = LAYER_MODELS[name]
  tokens = name.startswith("embedding")
  model = _functional(body, shape, "int32" if tokens else "float32")
  engine = clipping.make_engine("fast", model)
  assert engine.fallback_layers == []
  rng = np.random.default_rng(4)
  x = (rng.integers(0, 7, (6, *shape)).astype(np.int32) if tokens  # Tokens repeat: 9 of 7.
       else (3 * rng.normal(size=(6, *shape))).astype(np.float32))
  y = rng.integers(0, 3, 6).astype(np.int64)
  _assert_matches_brute_force(engine, model, "sparse_categorical_crossentropy", x, y)


class _Scale(layers.Layer):
  """A custom layer: y = x * w per channel."""

  def build(self, input_shape):
    self.w = self.add_weight("w", shape=[input_shape[-1]], initializer="ones")

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):  # pylint: disable=unused-argument
    return inputs * self.w


def test_registered_custom_layer_leaves_the_slow_path(absl_warnings):
  def model():
    return _functional(lambda x: _Scale(name="my_scale")(layers.Conv2D(3, 3)(x)), (6, 6, 2))

  unregistered = clipping.make_engine("fast", model())
  assert [l.name for l in unregistered.fallback_layers] == ["my_scale"]
  assert "my_scale (no rule for _Scale)" in absl_warnings.text
  assert "tfdp.keras.register_rule" in absl_warnings.text

  tfdp.keras.register_rule(_Scale)
  try:
    registered = model()
    engine = clipping.make_engine("fast", registered)
    assert engine.fallback_layers == []
    x, y = ref.batch(size=6, input_shape=(6, 6, 2))
    _assert_matches_brute_force(engine, registered, "sparse_categorical_crossentropy", x, y)
  finally:
    del rules.RULES[_Scale]


def test_shared_layer_takes_the_slow_path_and_still_matches():
  tf.keras.utils.set_random_seed(5)
  inputs = keras.Input((6,))
  shared = layers.Dense(6, activation="tanh", name="shared")
  outputs = layers.Dense(3)(shared(shared(inputs)))
  model = keras.Model(inputs, outputs)
  engine = clipping.make_engine("fast", model)
  assert [l.name for l in engine.fallback_layers] == ["shared"]
  x = np.random.default_rng(6).normal(size=(6, 6)).astype(np.float32) * 3
  y = np.arange(6) % 3
  _assert_matches_brute_force(engine, model, keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), x, y)


@pytest.mark.parametrize("loss, outputs, labels", [
    ("sparse_categorical_crossentropy", [[0.2, 0.8], [0.6, 0.4]], [1, 0]),
    ("binary_crossentropy", [[0.9], [0.3]], [1.0, 0.0]),
    (keras.losses.BinaryCrossentropy(), [[0.9], [0.3]], [1.0, 0.0]),
    ("categorical_crossentropy", [[0.2, 0.8], [0.6, 0.4]], [[0.0, 1.0], [1.0, 0.0]]),
    (keras.losses.SparseCategoricalCrossentropy(from_logits=True), [[2.0, -1.0], [0.5, 0.1]],
     [0, 1]),
    ("mse", [[0.5], [2.0]], [1.0, 0.0]),
])
def test_per_example_loss_is_each_examples_own(loss, outputs, labels):
  outputs, labels = tf.constant(outputs), tf.constant(labels)
  values = losses_lib.per_example_loss(loss)(labels, outputs)
  assert values.shape == (2,)
  keras_loss = loss if isinstance(loss, keras.losses.Loss) else keras.losses.get(loss)
  for i in range(2):  # Keras's own loss on example i alone, the batch of one.
    alone = keras_loss(labels[i:i + 1], outputs[i:i + 1])
    np.testing.assert_allclose(values[i].numpy(), np.mean(alone.numpy()), rtol=1e-6)


def test_metrics_come_from_validation_data_only_and_class_weight_is_refused():
  spec = keras_zoo.STANDARD["binary_mlp"]
  private = _private(spec.build(), spec.loss)
  x, y = spec.data(32, seed=7)
  train = tfdp.data.poisson_dataset(x, y, batch_size=8)
  history = private.fit(train, epochs=1, verbose=0, validation_data=spec.data(16, seed=8),
                        callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  assert set(history.history) == {"epsilon", "privacy_steps", "val_loss", "val_accuracy"}
  with pytest.raises(ValueError, match="class_weight"):
    private.fit(train, epochs=1, verbose=0, class_weight={0: 1.0, 1: 2.0})


def test_batchnorm_is_refused_by_name_before_any_step_and_fix_makes_it_train():
  tf.keras.utils.set_random_seed(9)
  inputs = keras.Input((8, 8, 1))
  x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
  x = layers.BatchNormalization(name="conv_bn")(x)
  model = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))
  before = [w.copy() for w in model.get_weights()]
  with pytest.raises(tfdp.keras.PrivacyValidationError, match="conv_bn.*tfdp.keras.fix"):
    _private(model, "sparse_categorical_crossentropy")
  assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

  fixed = tfdp.keras.fix(model)
  private = _private(fixed, "sparse_categorical_crossentropy")
  x, y = keras_zoo.images((8, 8, 1), 2)(32, 10)
  history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=8), epochs=1, verbose=0,
                        callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  assert history.history["privacy_steps"] == [4]
