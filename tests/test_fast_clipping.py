"""The fast per-example clipping engine against one-example-at-a-time brute force."""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.dp.fast import rules
from tfdp.dp import groups as groups_lib
from tfdp import models
from tfdp.models import layers as model_layers
from tfdp import optimizers
from tfdp.training import steps

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).


def _model_around(layer_factory, input_shape, num_classes=3, seed=0):
  """Input -> conv (so the layer's input depends on weights) -> layer -> flatten -> dense."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(input_shape)
  x = inputs
  if len(input_shape) == 3:
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="pre")(x)
  else:
    x = tf.keras.layers.Dense(6, name="pre")(x)
  x = tf.keras.layers.Activation("tanh")(x)
  x = layer_factory()(x)
  x = tf.keras.layers.Activation("tanh")(x)
  x = tf.keras.layers.Flatten()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes, name="head")(x))


LAYERS = {
    "dense": (lambda: tf.keras.layers.Dense(5), (7,)),
    "dense_no_bias": (lambda: tf.keras.layers.Dense(5, use_bias=False), (7,)),
    "dense_tokens": (lambda: tf.keras.layers.Dense(5), (4, 7)),  # [B, T, d] inputs (ViT style).
    "conv_3x3_same": (lambda: tf.keras.layers.Conv2D(3, 3, padding="same"), (6, 6, 2)),
    "conv_3x3_valid": (lambda: tf.keras.layers.Conv2D(3, 3, padding="valid"), (6, 6, 2)),
    "conv_strided_same": (lambda: tf.keras.layers.Conv2D(3, 3, strides=2, padding="same"),
                          (7, 7, 2)),
    "conv_strided_valid": (lambda: tf.keras.layers.Conv2D(3, 3, strides=2, padding="valid"),
                           (7, 7, 2)),
    "conv_1x1_strided": (lambda: tf.keras.layers.Conv2D(3, 1, strides=2, use_bias=False),
                         (6, 6, 2)),
    "conv_5x3_even": (lambda: tf.keras.layers.Conv2D(3, (5, 3), strides=2, padding="same"),
                      (8, 8, 2)),
    # Feature maps of 3x3 (T^2 = 81 < K C = 36 * 8): the ghost-norm path.
    "conv_ghost": (lambda: tf.keras.layers.Conv2D(8, 3, padding="same"), (3, 3, 2)),
    "wsconv_ghost": (lambda: model_layers.WSConv2D(8, 3, padding="same", use_bias=False),
                     (3, 3, 2)),
    "wsconv_ghost_strided": (lambda: model_layers.WSConv2D(8, 3, strides=2, padding="same"),
                             (5, 5, 2)),
    "wsconv_same": (lambda: model_layers.WSConv2D(3, 3, padding="same", use_bias=False),
                    (6, 6, 2)),
    "wsconv_strided_bias": (lambda: model_layers.WSConv2D(3, 3, strides=2, padding="same"),
                            (7, 7, 2)),
    "wsconv_1x1": (lambda: model_layers.WSConv2D(3, 1, strides=2, use_bias=False), (6, 6, 2)),
    "depthwise_same": (lambda: tf.keras.layers.DepthwiseConv2D(3, padding="same"), (6, 6, 2)),
    "depthwise_strided_multiplier": (
        lambda: tf.keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
        (7, 7, 2)),
    "depthwise_5x5_valid_no_bias": (
        lambda: tf.keras.layers.DepthwiseConv2D(5, padding="valid", use_bias=False), (7, 7, 2)),
    "groupnorm": (lambda: tf.keras.layers.GroupNormalization(groups=2), (5, 5, 2)),
    "groupnorm_tfdp": (lambda: model_layers.GroupNormalization(groups=2), (5, 5, 4)),
    "layernorm": (lambda: tf.keras.layers.LayerNormalization(), (4, 7)),
}


def _fast(model, images, labels, mask, clip, clip_groups=None, use_function=False,
          jit_compile=False):
  engine = clipping.make_engine("fast", model, clip_groups)
  call = engine
  if use_function:
    call = tf.function(engine, jit_compile=jit_compile)
  sums, *_ = call(clipping.per_example_loss, tf.constant(images), tf.constant(labels),
                    tf.constant(mask), clip)
  return engine, [s.numpy() for s in sums]


def _assert_close(actual, expected):
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-5)


def _case(name, size=5, scale=2.0):
  factory, shape = LAYERS[name]
  model = _model_around(factory, shape)
  images, labels = ref.batch(size=size, input_shape=shape, scale=scale)
  return model, images, labels


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("clip", [1e-3, 1e4])  # Every example clipped; no example clipped.
def test_each_layer_type_matches_brute_force(name, clip):
  model, images, labels = _case(name)
  mask = np.array([1, 0, 1, 1, 1], np.float32)
  engine, sums = _fast(model, images, labels, mask, clip)
  assert not engine.fallback_layers
  _assert_close(sums, ref.clipped_sum(model, images, labels, mask, clip))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_rule_gives_per_example_gradients(name):
  """The rule's per-example gradients of the layer under test equal one-at-a-time gradients."""
  model, images, labels = _case(name, size=3)
  layer = model.layers[3]
  a, dz = ref.layer_input_and_output_gradient(model, layer, images, labels)
  rule = rules.rule_for(layer)
  per_example = rule.per_example_gradients(layer, a, dz)
  squared = rule.squared_norms(layer, a, dz)
  positions = [i for i, v in enumerate(model.trainable_variables)
               if any(v is w for w in layer.trainable_weights)]
  for i in range(len(images)):
    reference = ref.per_example_gradient(model, tf.constant(images[i]), tf.constant(labels[i]))
    for k, position in enumerate(positions):
      np.testing.assert_allclose(per_example[k][i], reference[position], rtol=2e-4, atol=2e-6)
      np.testing.assert_allclose(squared[k][i], np.sum(np.square(reference[position])),
                                 rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("clip_groups", [None, 3, "layer"])
def test_resnet20_flat_and_grouped_match_brute_force(clip_groups):
  model = models.build_model("resnet20", 10, (32, 32, 3))
  images, labels = ref.batch(size=4, input_shape=(32, 32, 3), num_classes=10, scale=1.0)
  mask = np.array([1, 1, 0, 1], np.float32)
  engine, sums = _fast(model, images, labels, mask, 0.5, clip_groups)
  assert not engine.fallback_layers
  groups = groups_lib.variable_groups(model, clip_groups)
  _assert_close(sums, ref.grouped_clipped_sum(model, images, labels, mask, 0.5, groups))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_inside_tf_function_with_and_without_xla(jit_compile):
  model, images, labels = _case("wsconv_strided_bias")
  mask = np.array([1, 1, 1, 0, 1], np.float32)
  _, sums = _fast(model, images, labels, mask, 0.05, use_function=True, jit_compile=jit_compile)
  _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.05))


@pytest.mark.parametrize("name", ["groupnorm_tfdp", "wsconv_strided_bias"])
def test_whole_train_step_under_xla_matches_brute_force(name):
  """The stacked-chunk step with --jit_compile, σ = 0: the update is the brute-force clipped mean."""
  model, images, labels = _case(name, size=6)
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
  expected = [e / 5.0 for e in ref.clipped_sum(model, images, labels, mask, 0.05)]
  twin = tf.keras.models.clone_model(model)
  twin.set_weights(model.get_weights())
  optimizer = optimizers.build_optimizer("dp_sgd", 0.5, l2_norm_clip=0.05, noise_multiplier=0.0)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=5.0,
                         jit_compile=True)
  step([(images[:3], labels[:3], mask[:3]), (images[3:], labels[3:], mask[3:])])
  tf.keras.optimizers.SGD(0.5).apply_gradients(
      zip([tf.constant(e, tf.float32) for e in expected], twin.trainable_variables))
  _assert_close([v.numpy() for v in model.trainable_variables],
                [v.numpy() for v in twin.trainable_variables])


def test_microbatch_of_one_example():
  model, images, labels = _case("conv_strided_same", size=1)
  _, sums = _fast(model, images, labels, np.ones(1, np.float32), 0.05)
  _assert_close(sums, ref.clipped_sum(model, images, labels, np.ones(1, np.float32), 0.05))


@pytest.mark.parametrize("clip_groups", [None, "layer"])
def test_replacing_one_example_moves_the_sum_by_at_most_c(clip_groups):
  model = models.build_model("cnn", 10, (8, 8, 1))
  images, labels = ref.batch(size=6, input_shape=(8, 8, 1), num_classes=10, scale=5.0)
  mask = np.ones(6, np.float32)
  clip = 0.2
  _, base = _fast(model, images, labels, mask, clip, clip_groups)
  for i in range(len(images)):
    removed = mask.copy()
    removed[i] = 0
    _, other = _fast(model, images, labels, removed, clip, clip_groups)
    assert ref.global_norm([a - b for a, b in zip(base, other)]) <= clip * (1 + 1e-5)


def test_masked_rows_change_nothing():
  model, images, labels = _case("groupnorm")
  mask = np.array([1, 0, 1, 0, 1], np.float32)
  changed_images = images.copy()
  changed_images[mask == 0] *= -7
  _, a = _fast(model, images, labels, mask, 0.1)
  _, b = _fast(model, changed_images, labels, mask, 0.1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


class Scale(tf.keras.layers.Layer):
  """A layer the engine has no rule for: y = x * w (per channel)."""

  def build(self, input_shape):
    self.w = self.add_weight("w", shape=[input_shape[-1]], initializer="ones")

  @tf.autograph.experimental.do_not_convert  # Plain TF ops; conversion was seen to flake.
  def call(self, inputs, training=None):  # pylint: disable=unused-argument
    return inputs * self.w


def test_unknown_layer_falls_back_with_a_warning(caplog):
  model = _model_around(Scale, (6, 6, 2))
  images, labels = ref.batch(size=4, input_shape=(6, 6, 2))
  mask = np.array([1, 1, 0, 1], np.float32)
  with caplog.at_level("WARNING"):
    engine, sums = _fast(model, images, labels, mask, 0.1)
  assert [layer.name for layer in engine.fallback_layers] == [model.layers[3].name]
  assert model.layers[3].name in caplog.text
  _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.1))


def test_clip_groups_validation():
  model = models.build_model("linear", 10, (8, 8, 1))
  with pytest.raises(ValueError, match="clip_groups"):
    groups_lib.variable_groups(model, 5)


def test_engine_takes_group_norm_gradients_recorded_in_the_backward_pass(monkeypatch):
  """tfdp's GroupNormalization records its per-example gradients in the backward pass; the engine
  takes those (the rule's own computation is never called) and its sum still matches brute force."""
  model, images, labels = _case("groupnorm_tfdp")
  mask = np.array([1, 0, 1, 1, 1], np.float32)

  def refuse(*unused):
    raise AssertionError("the GroupNorm rule was asked for what the backward pass recorded")

  monkeypatch.setattr(type(rules.rule_for(model.layers[3])), "per_example_gradients", refuse)
  engine, sums = _fast(model, images, labels, mask, 0.05, use_function=True)
  assert model.layers[3] in engine.fast_layers
  _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.05))


@pytest.mark.parametrize("name", ["wsconv_ghost", "wsconv_ghost_strided"])
def test_ws_ghost_norms_read_the_layers_output_or_recompute_it_alike(name):
  """The Gram path of a WS convolution takes P w_hat from the layer's float32 output z (minus the
  bias) or, without z (a bfloat16 model), from its own convolution: both give each example's
  squared norms of brute force, and a changed z changes them (z is read, not ignored)."""
  model, images, labels = _case(name, size=3)
  layer = model.layers[3]
  a, dz = ref.layer_input_and_output_gradient(model, layer, images, labels)
  z = layer(a)  # No activation: the pre-activation output.
  rule = rules.rule_for(layer)
  position = [i for i, v in enumerate(model.trainable_variables) if v is layer.kernel][0]
  expected = [np.sum(np.square(ref.per_example_gradient(model, tf.constant(images[i]),
                                                        tf.constant(labels[i]))[position]))
              for i in range(len(images))]
  from_output = rule.squared_norms_given_output(layer, a, dz, z, 1)[0]
  recomputed = rule.squared_norms_given_output(layer, a, dz, None, 1)[0]
  np.testing.assert_allclose(from_output, expected, rtol=1e-3, atol=1e-8)
  np.testing.assert_allclose(recomputed, expected, rtol=1e-3, atol=1e-8)
  shifted = rule.squared_norms_given_output(layer, a, dz, z + 1.0, 1)[0]
  assert not np.allclose(shifted, expected, rtol=1e-3)


CONV_CASES = ["conv_3x3_same", "conv_strided_valid", "conv_1x1_strided", "conv_5x3_even",
              "wsconv_same", "wsconv_strided_bias"]


@pytest.mark.parametrize("name", CONV_CASES)
@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "matmuls"])
def test_both_ways_to_per_example_kernel_gradients_match_brute_force(name, grouped, monkeypatch):
  """Per-example kernel gradients as grouped filter gradients (oneDNN) or as shifted / patch
  matmuls (TensorFlow's own kernels, which refuse grouped filter gradients): the engine's sum and
  the rule's per-example gradients match brute force either way."""
  from tfdp.dp.fast import conv as fast_conv  # pylint: disable=import-outside-toplevel
  if grouped and not fast_conv.grouped_filter_gradients():
    pytest.skip("this TensorFlow runs without oneDNN: no grouped filter gradients")
  monkeypatch.setattr(fast_conv, "grouped_filter_gradients", lambda: grouped)
  model, images, labels = _case(name)
  mask = np.array([1, 0, 1, 1, 1], np.float32)
  engine, sums = _fast(model, images, labels, mask, 0.05)
  assert not engine.fallback_layers
  _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.05))
  layer = model.layers[3]
  a, dz = ref.layer_input_and_output_gradient(model, layer, images, labels)
  kernel_grads = rules.rule_for(layer).per_example_gradients(layer, a, dz)[0]
  position = [i for i, v in enumerate(model.trainable_variables) if v is layer.kernel][0]
  for i in range(len(images)):
    reference = ref.per_example_gradient(model, tf.constant(images[i]), tf.constant(labels[i]))
    np.testing.assert_allclose(kernel_grads[i], reference[position], rtol=2e-4, atol=2e-6)
