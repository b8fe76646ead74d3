"""tfdp's GroupNormalization: the results, gradients and checkpoints of Keras' own."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp import models
from tfdp.models import layers


def _pair(groups, channels, rank=4):
  """(Keras' GroupNormalization, tfdp's) with the same non-trivial gamma and beta."""
  pair = (tf.keras.layers.GroupNormalization(groups=groups, epsilon=layers.GN_EPSILON),
          layers.GroupNormalization(groups=groups, epsilon=layers.GN_EPSILON))
  for layer in pair:
    layer.build([None] + [5] * (rank - 2) + [channels])
    layer.gamma.assign(np.linspace(0.5, 1.5, channels, dtype=np.float32))
    layer.beta.assign(np.linspace(-1.0, 1.0, channels, dtype=np.float32))
  return pair


def _output_and_gradients(layer, x, weights):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    loss = tf.reduce_sum(y * weights)
  return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])


@pytest.mark.parametrize("groups, channels, shift", [(4, 16, 0.0), (16, 64, 0.0), (32, 128, 1.0),
                                                     (2, 6, 10.0), (1, 8, 3.0), (8, 8, 0.0)])
@pytest.mark.parametrize("compiled", [False, True])
def test_output_and_gradients_match_keras(groups, channels, shift, compiled):
  keras_layer, tfdp_layer = _pair(groups, channels)
  rng = np.random.default_rng(groups * channels)
  x = tf.constant(rng.normal(shift, 1.0, (3, 7, 5, channels)), tf.float32)
  weights = tf.constant(rng.normal(size=(3, 7, 5, channels)), tf.float32)
  run = tf.function(_output_and_gradients) if compiled else _output_and_gradients
  expected = run(keras_layer, x, weights)
  got = run(tfdp_layer, x, weights)
  for name, a, b in zip(("output", "dx", "dgamma", "dbeta"), got, expected):
    scale = float(tf.reduce_max(tf.abs(b)))
    np.testing.assert_allclose(a, b, atol=3e-5 * (1 + shift ** 2) * scale, err_msg=name)


def test_falls_back_to_keras_for_another_axis_or_no_scale():
  x = tf.random.stateless_normal([2, 4, 4, 6], [0, 1])
  for kwargs in ({"axis": 1}, {"scale": False}):
    layer = layers.GroupNormalization(groups=2, **kwargs)
    reference = tf.keras.layers.GroupNormalization(groups=2, **kwargs)
    np.testing.assert_allclose(layer(x), reference(x), atol=1e-5)


def test_example_gradients_match_one_example_at_a_time():
  _, layer = _pair(4, 16)
  rng = np.random.default_rng(0)
  a = tf.constant(rng.normal(2.0, 1.5, (4, 6, 6, 16)), tf.float32)
  dz = tf.constant(rng.normal(size=(4, 6, 6, 16)), tf.float32)
  gamma_grads, beta_grads = layers.group_norm_example_gradients(layer, a, dz)
  for i in range(4):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(a[i:i + 1]) * dz[i:i + 1])
    gamma, beta = tape.gradient(loss, [layer.gamma, layer.beta])
    np.testing.assert_allclose(gamma_grads[i], gamma, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(beta_grads[i], beta, rtol=1e-5, atol=1e-5)


def _keras_group_norm_model(monkeypatch):
  """ResNet-20 built with Keras' GroupNormalization, as tfdp's models were before."""
  with monkeypatch.context() as patch:
    patch.setattr(layers, "GroupNormalization", tf.keras.layers.GroupNormalization)
    tf.keras.utils.set_random_seed(1)
    return models.build_model("resnet20", 10, (8, 8, 3))


@pytest.mark.parametrize("suffix", [".weights.h5", "_ckpt"])
def test_checkpoints_of_keras_group_norm_models_load(monkeypatch, tmp_path, suffix):
  old = _keras_group_norm_model(monkeypatch)
  assert not any(isinstance(l, layers.GroupNormalization) for l in old.layers)
  path = str(tmp_path / f"old{suffix}")
  old.save_weights(path)
  tf.keras.utils.set_random_seed(2)
  new = models.build_model("resnet20", 10, (8, 8, 3))
  assert any(isinstance(l, layers.GroupNormalization) for l in new.layers)
  assert [l.name for l in new.layers] == [l.name for l in old.layers]
  new.load_weights(path)
  x = tf.random.stateless_normal([2, 8, 8, 3], [3, 4])
  np.testing.assert_allclose(new(x), old(x), atol=1e-4)


def test_serializes_by_name():
  layer = layers.group_norm(32, 8, name="gn")
  config = tf.keras.layers.serialize(layer)
  rebuilt = tf.keras.layers.deserialize(config)
  assert type(rebuilt) is layers.GroupNormalization and rebuilt.groups == 8 and rebuilt.name == "gn"


def test_backward_records_each_examples_affine_gradients():
  """Within recording_example_gradients, the backward pass leaves each example's (gamma, beta)
  gradients, equal to those of that example's loss alone; outside the block it records nothing."""
  _, layer = _pair(groups=2, channels=4)
  x = tf.constant(np.random.default_rng(0).normal(size=(3, 5, 5, 4)), tf.float32)
  weights = tf.constant(np.random.default_rng(1).normal(size=(3, 5, 5, 4)), tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_sum(layer(x) * weights)
  with layers.recording_example_gradients() as recorded:
    tape.gradient(loss, x)
  tape.gradient(loss, x)  # Outside the block: the record is left as it was.
  assert list(recorded) == [id(layer)]
  for i in range(3):
    _, _, gamma, beta = _output_and_gradients(layer, x[i:i + 1], weights[i:i + 1])
    np.testing.assert_allclose(recorded[id(layer)][0][i], gamma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recorded[id(layer)][1][i], beta, rtol=1e-5, atol=1e-6)
