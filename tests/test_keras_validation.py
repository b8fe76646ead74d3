"""tfdp.keras.validation: which layers a private fit can train, and fix (BatchNorm -> GroupNorm)."""

import numpy as np
import pytest
import tensorflow as tf

from tests import keras_zoo
from tfdp.keras import validation

L = tf.keras.layers
TRAINABLE = {"fast", "fallback", "stateless"}


def _randomize_batchnorms(model):
  """Gamma, beta and moving statistics away from their initial values, so copies are visible."""
  rng = np.random.default_rng(0)
  for layer in _all_layers(model):
    if isinstance(layer, L.BatchNormalization):
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                         for w in layer.get_weights()])


def _all_layers(model):
  for layer in model.layers:
    yield layer
    if isinstance(layer, tf.keras.Model):
      yield from _all_layers(layer)


def _conv_bn(name="conv_bn_model"):
  inputs = tf.keras.Input((8, 8, 3))
  x = L.Conv2D(16, 3, name="conv")(inputs)
  x = L.BatchNormalization(name="conv_bn")(x)
  x = L.ReLU()(x)
  outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
  model = tf.keras.Model(inputs, outputs, name=name)
  _randomize_batchnorms(model)
  return model


def _nested_bn():
  """Outer BN at top level, a second BN inside a nested functional model called 'inner'."""
  inner_in = tf.keras.Input((8, 8, 8))
  inner_out = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="c")(inner_in))
  inner = tf.keras.Model(inner_in, inner_out, name="inner")
  inputs = tf.keras.Input((8, 8, 3))
  x = L.BatchNormalization(name="outer_bn")(L.Conv2D(8, 3, padding="same", name="stem")(inputs))
  outputs = L.Dense(2, name="head")(L.Flatten()(inner(x)))
  model = tf.keras.Model(inputs, outputs, name="nested")
  _randomize_batchnorms(model)
  return model


def _single(layer, input_shape=(4,)):
  inputs = tf.keras.Input(input_shape)
  return tf.keras.Model(inputs, layer(inputs))


def _verdict_of(model, path):
  (verdict,) = [v for v in validation.inspect(model) if v.path == path]
  return verdict


@pytest.fixture(scope="module")
def mobilenet():
  return tf.keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)


# What is accepted.


def test_mnist_convnet_is_accepted_layer_by_layer():
  model = keras_zoo.mnist_convnet()
  verdicts = validation.inspect(model)
  assert validation.validate(model) == []
  validation.check(model)
  assert [v.path for v in verdicts] == [layer.name for layer in model.layers]
  assert {v.verdict for v in verdicts} <= TRAINABLE
  assert {v.layer_class: v.verdict for v in verdicts}["Flatten"] == "stateless"
  for v in verdicts:
    assert v.verdict in validation.VERDICTS and v.fix == ""


def test_fast_is_decided_by_the_rule_registry():
  class Scale(L.Layer):  # pylint: disable=abstract-method

    def build(self, input_shape):
      self.w = self.add_weight(name="w", shape=[input_shape[-1]])

    def call(self, x):
      return x * self.w

  model = _single(Scale(name="scale"))
  assert _verdict_of(model, "scale").verdict == "refused"

  validation.register_rule(Scale)  # The vectorized rule: Scale treats each example alone.
  assert _verdict_of(model, "scale").verdict == "fast"
  assert validation.validate(model) == []


def test_frozen_dense_is_stateless_not_refused():
  dense = L.Dense(3, name="frozen")
  dense.trainable = False
  verdict = _verdict_of(_single(dense), "frozen")
  assert verdict.verdict == "stateless"
  assert verdict.reason.startswith("frozen")


def test_normalization_is_stateless_and_warns_about_adapt():
  norm = L.Normalization(name="norm")
  norm.adapt(np.arange(12, dtype="float32").reshape(3, 4))
  verdict = _verdict_of(_single(norm), "norm")
  assert verdict.verdict == "stateless"
  assert "adapt()" in verdict.reason and "unnoised release" in verdict.reason


# What is refused.


def test_batchnorm_is_refused_by_name_with_the_fix():
  model = _conv_bn()
  refused = validation.validate(model)
  assert [(v.path, v.layer_class) for v in refused] == [("conv_bn", "BatchNormalization")]
  assert "tfdp.keras.fix" in refused[0].fix
  with pytest.raises(validation.PrivacyValidationError, match="conv_bn") as raised:
    validation.check(model)
  assert "tfdp.keras.fix" in str(raised.value)
  assert isinstance(raised.value, ValueError)


def test_every_batchnorm_in_one_message_with_nested_paths():
  with pytest.raises(validation.PrivacyValidationError) as raised:
    validation.check(_nested_bn())
  message = str(raised.value)
  assert message.startswith("this model cannot be trained privately as it is:\n")
  assert "  - outer_bn (BatchNormalization): " in message
  assert "  - inner/bn (BatchNormalization): " in message
  assert message.count("fix: tfdp.keras.fix(model)") == 2


def test_batchnorm_in_a_wrapper_and_stateful_rnn_are_refused():
  wrapped = _single(L.TimeDistributed(L.BatchNormalization(name="tbn"), name="td"), (3, 4))
  assert "tbn (BatchNormalization)" in _verdict_of(wrapped, "td").reason
  stateful = tf.keras.Sequential([tf.keras.Input(batch_shape=(2, 3, 4)),
                                  L.LSTM(5, stateful=True, name="lstm")])
  assert _verdict_of(stateful, "lstm").fix == "build it with stateful=False"


def test_custom_layer_is_refused_until_registered():
  class Gate(L.Layer):  # pylint: disable=abstract-method

    def build(self, input_shape):
      self.w = self.add_weight(name="w", shape=[input_shape[-1]])

    def call(self, x):
      return x * tf.sigmoid(self.w)

  model = _single(Gate(name="gate"))
  verdict = _verdict_of(model, "gate")
  assert (verdict.verdict, verdict.layer_class) == ("refused", "Gate")
  assert "register_per_example(Gate)" in verdict.fix
  assert validation.register_per_example(Gate) is Gate
  verdict = _verdict_of(model, "gate")
  assert verdict.verdict == "fallback" and "register_rule" in verdict.reason


def test_lambda_and_a_layer_with_a_running_counter_are_refused():
  class Counter(L.Layer):  # pylint: disable=abstract-method

    def build(self, input_shape):
      self.seen = self.add_weight(name="seen", shape=[], initializer="zeros", trainable=False)

    def call(self, x):
      self.seen.assign_add(tf.cast(tf.shape(x)[0], tf.float32))
      return x

  inputs = tf.keras.Input((4,))
  x = L.Lambda(lambda t: t - tf.reduce_mean(t, axis=0), name="center")(inputs)
  model = tf.keras.Model(inputs, Counter(name="counter")(x))
  refused = {v.path: v for v in validation.validate(model)}
  assert set(refused) == {"center", "counter"}
  assert "non-trainable weights" in refused["counter"].reason
  assert "register_per_example(Lambda)" in refused["center"].fix


def test_register_per_example_rejects_batchnorm_and_non_layers():
  with pytest.raises(ValueError, match="BatchNorm"):
    validation.register_per_example(L.BatchNormalization)
  with pytest.raises(TypeError, match="int"):
    validation.register_per_example(int)


def test_subclassed_top_model_is_refused_at_model_level():
  class Net(tf.keras.Model):  # pylint: disable=abstract-method

    def __init__(self):
      super().__init__(name="net")
      self.dense = L.Dense(2)

    def call(self, x):
      return self.dense(x)

  (verdict,) = validation.validate(Net())
  assert (verdict.path, verdict.layer_class, verdict.verdict) == ("net", "Net", "refused")
  assert "functional" in verdict.fix


def test_two_outputs_are_refused_at_model_level():
  inputs = tf.keras.Input((4,))
  model = tf.keras.Model(inputs, [L.Dense(2)(inputs), L.Dense(3)(inputs)], name="two_heads")
  (verdict,) = validation.validate(model)
  assert verdict.path == "two_heads"
  assert verdict.fix == "make_private takes one input and one output"


# fix.


@pytest.mark.parametrize("channels, groups", [(3, 3), (16, 4), (32, 8), (96, 16), (144, 16),
                                              (1280, 16)])
def test_group_count(channels, groups):
  assert validation.group_count(channels) == groups


def _assert_fixed(model, fixed, batchnorm_path, kernel_path):
  """No BatchNorm left, gamma/beta and another kernel copied, same output shape, accepted."""
  assert not any(isinstance(layer, L.BatchNormalization) for layer in _all_layers(fixed))
  get = lambda m, path: _layer_at(m, path)  # pylint: disable=unnecessary-lambda-assignment
  batchnorm, group_norm = get(model, batchnorm_path), get(fixed, batchnorm_path)
  assert isinstance(group_norm, L.GroupNormalization)
  np.testing.assert_array_equal(group_norm.gamma.numpy(), batchnorm.gamma.numpy())
  np.testing.assert_array_equal(group_norm.beta.numpy(), batchnorm.beta.numpy())
  np.testing.assert_array_equal(get(fixed, kernel_path).kernel.numpy(),
                                get(model, kernel_path).kernel.numpy())
  x = tf.random.normal((2,) + tuple(model.input_shape[1:]))
  assert fixed(x).shape == model(x).shape
  assert fixed.name == model.name
  validation.check(fixed)


def _layer_at(model, path):
  for name in path.split("/"):
    model = model.get_layer(name)
  return model


def test_fix_replaces_batchnorm_and_keeps_the_other_weights(capsys):
  model = _conv_bn()
  fixed = validation.fix(model)
  _assert_fixed(model, fixed, "conv_bn", "conv")
  group_norm = fixed.get_layer("conv_bn")
  assert (group_norm.groups, group_norm.epsilon) == (4, model.get_layer("conv_bn").epsilon)
  assert ("replaced conv_bn (BatchNormalization, 16 channels) by GroupNormalization(groups=4)"
          in capsys.readouterr().out)


def test_fix_walks_nested_models():
  model = _nested_bn()
  fixed = validation.fix(model)
  _assert_fixed(model, fixed, "inner/bn", "inner/c")
  _assert_fixed(model, fixed, "outer_bn", "head")


def test_fix_a_sequential_and_a_nested_sequential():
  sequential = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="c"),
                                    L.BatchNormalization(name="bn"), L.Flatten(),
                                    L.Dense(2, name="d")], name="seq")
  _randomize_batchnorms(sequential)
  _assert_fixed(sequential, validation.fix(sequential), "bn", "c")

  block = tf.keras.Sequential([L.Conv2D(4, 3, name="c"), L.BatchNormalization(name="bn")],
                              name="block")
  inputs = tf.keras.Input((8, 8, 3))
  model = tf.keras.Model(inputs, L.Dense(2, name="d")(L.Flatten()(block(inputs))))
  _randomize_batchnorms(model)
  assert [v.path for v in validation.validate(model)] == ["block/bn"]
  _assert_fixed(model, validation.fix(model), "block/bn", "block/c")


def test_fix_without_batchnorm_is_an_exact_copy(capsys):
  model = keras_zoo.mnist_convnet()
  fixed = validation.fix(model)
  assert fixed is not model
  x = tf.random.normal((2, 28, 28, 1))
  np.testing.assert_allclose(fixed(x).numpy(), model(x).numpy(), rtol=1e-6)
  assert "nothing replaced" in capsys.readouterr().out


def test_fix_refuses_a_subclassed_model():
  class Net(tf.keras.Model):  # pylint: disable=abstract-method

    def call(self, x):
      return x

  with pytest.raises(ValueError, match="functional"):
    validation.fix(Net(name="net"))


# MobileNetV2, as tf.keras.applications builds it.


def test_mobilenet_v2_refuses_only_its_batchnorms_and_fix_clears_them(mobilenet):
  refused = validation.validate(mobilenet)
  assert len(refused) == 52
  assert {v.layer_class for v in refused} == {"BatchNormalization"}
  assert {v.path for v in refused} == {layer.name for layer in mobilenet.layers
                                       if isinstance(layer, L.BatchNormalization)}
  fixed = validation.fix(mobilenet)
  assert validation.validate(fixed) == []
  assert {v.verdict for v in validation.inspect(fixed)} <= TRAINABLE
  assert fixed.output_shape == mobilenet.output_shape
