"""Tests for tfdp.models: registry, BatchNorm refusal, ResNet-20, WSConv2D and batch independence.

    .venv/bin/python -m pytest tests/test_models.py
"""

import re
import numpy as np
import pytest
import tensorflow as tf

from tfdp import models
from tfdp.models import layers

NUM_CLASSES = 10
ALL_SHAPES = [(32, 32, 3), (28, 28, 1)]
TINY_SHAPE = (8, 8, 1)
TINY_MODELS = ["cnn", "linear"]  # Meant for 8x8 digits; resnet20 is checked at 8x8 too, as asked.


def _images(batch, shape, seed):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def _reference_ws_conv(x, kernel, strides, padding, eps=1e-5):
    """WSConv2D computed by hand: numpy standardization, then tf.nn.conv2d."""
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    var = kernel.var(axis=(0, 1, 2), keepdims=True)
    standardized = (kernel - mean) / np.sqrt(var + eps)
    return tf.nn.conv2d(x, standardized, strides=strides, padding=padding.upper()).numpy()


# Registry and builders.


def test_registry_holds_the_zoo():
    assert {"cnn", "linear", "resnet20", "wrn16_4", "efficientnet_b0", "resnet18", "densenet121",
            "vit_tiny", "convnet"} <= set(models.MODELS)


@pytest.mark.parametrize(
    "name, shape",
    [(name, shape) for name in ["cnn", "linear", "resnet20"] for shape in ALL_SHAPES]
    + [(name, TINY_SHAPE) for name in TINY_MODELS + ["resnet20"]],
)
def test_model_outputs_logits_of_shape_batch_by_classes(name, shape):
    model = models.build_model(name, num_classes=NUM_CLASSES, input_shape=shape)
    logits = model(_images(3, shape, seed=0), training=False).numpy()
    assert logits.shape == (3, NUM_CLASSES)
    assert np.all(np.isfinite(logits))
    # Logits, not probabilities: a softmax output would be positive with rows summing to one.
    assert not np.allclose(logits.sum(axis=-1), 1.0)
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is tf.keras.activations.linear


@pytest.mark.parametrize("name", ["cnn", "linear", "resnet20"])
def test_an_examples_logits_do_not_depend_on_the_rest_of_the_batch(name):
    # BatchNorm in training mode would break this; it is what per-example clipping relies on.
    shape = (16, 16, 3)
    model = models.build_model(name, num_classes=NUM_CLASSES, input_shape=shape)
    batch = _images(4, shape, seed=1)
    other = batch.copy()
    other[1:] = _images(3, shape, seed=2) * 5.0
    for training in (True, False):
        first = model(batch, training=training).numpy()
        second = model(other, training=training).numpy()
        np.testing.assert_allclose(first[0], second[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(first[1:], second[1:])  # The replaced examples did change.


def test_resnet20_has_about_0_27_million_parameters():
    model = models.build_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
    params = models.count_params(model)
    assert abs(params - 0.27e6) / 0.27e6 < 0.02, params
    assert params == 272_474  # 269,722 of the paper's option A plus 2,752 for the two projections.


def test_count_params_ignores_non_trainable_weights():
    inputs = tf.keras.Input(shape=(4,))
    frozen = tf.keras.layers.Dense(3, trainable=False)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(frozen(inputs)))
    assert models.count_params(model) == 3 * 2 + 2  # Only the trainable Dense(2) on 3 features.


def test_resnet20_layers_are_named_and_use_ws_convs_without_bias():
    model = models.build_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
    conv = model.get_layer("stage2_block1_conv1")
    assert isinstance(conv, layers.WSConv2D)
    assert conv.strides == (2, 2) and not conv.use_bias
    assert isinstance(model.get_layer("stage3_block1_shortcut_conv"), layers.WSConv2D)
    assert model.get_layer("stage3_block3_gn2").groups == 16
    assert model.get_layer("stem_gn").groups == 16
    names = {layer.name for layer in model.layers}
    assert "stage1_block1_shortcut_conv" not in names  # Identity where the shape is unchanged.
    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert len(convs) == 1 + 2 * 9 + 2  # Stem, two per block, two projection shortcuts.


def test_resnet20_without_weight_standardization_uses_plain_conv2d():
    model = models.build_model(
        "resnet20", num_classes=10, input_shape=(8, 8, 1), weight_standardization=False
    )
    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert convs and not any(isinstance(layer, layers.WSConv2D) for layer in convs)


def test_cnn_is_a_few_thousand_parameters_with_tanh():
    model = models.build_model("cnn", num_classes=10, input_shape=TINY_SHAPE)
    assert 2_000 <= models.count_params(model) <= 10_000
    assert model.get_layer("act1").activation is tf.keras.activations.tanh


def test_builder_options_are_passed_through():
    model = models.build_model("cnn", num_classes=10, input_shape=TINY_SHAPE, activation="relu")
    assert model.get_layer("act1").activation is tf.keras.activations.relu


# Errors.


def test_unknown_model_name_lists_the_valid_names():
    valid = ", ".join(repr(name) for name in sorted(models.MODELS))
    with pytest.raises(ValueError, match=rf"'resnet21'.*\[{re.escape(valid)}\]"):
        models.build_model("resnet21", num_classes=10, input_shape=(32, 32, 3))


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True, "10"])
def test_bad_num_classes_is_named(num_classes):
    with pytest.raises(ValueError, match=f"num_classes.*{num_classes!r}"):
        models.build_model("linear", num_classes=num_classes, input_shape=(8, 8, 1))


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1, 1), (0, 8, 1), (8, -1, 1), (8.0, 8, 1), None])
def test_bad_input_shape_is_named(shape):
    with pytest.raises(ValueError, match="input_shape") as error:
        models.build_model("linear", num_classes=10, input_shape=shape)
    assert repr(shape) in str(error.value)


def test_unexpected_option_is_named():
    with pytest.raises(TypeError, match=r"'linear'.*\['activation'\]"):
        models.build_model("linear", num_classes=10, input_shape=(8, 8, 1), activation="relu")


@pytest.mark.parametrize("groups", [0, -1, 1.5])
def test_bad_groupnorm_groups_is_named(groups):
    with pytest.raises(ValueError, match=f"groupnorm_groups.*{groups!r}"):
        models.build_model(
            "resnet20", num_classes=10, input_shape=(8, 8, 1), groupnorm_groups=groups
        )


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="'cnn' is already registered"):
        models.registry.register("cnn")(lambda num_classes, input_shape: None)
    assert models.MODELS["cnn"] is models.small.cnn


# BatchNorm refusal.


def _model_with_batchnorm():
    inputs = tf.keras.Input(shape=(8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="sneaky_bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x), name="inner")


def test_assert_no_batchnorm_refuses_batchnorm_and_names_it():
    with pytest.raises(ValueError, match="BatchNorm.*'sneaky_bn'") as error:
        models.assert_no_batchnorm(_model_with_batchnorm())
    assert "per-example" in str(error.value)  # It says why, not only what.


def test_assert_no_batchnorm_finds_batchnorm_in_a_nested_model():
    inputs = tf.keras.Input(shape=(8, 8, 1))
    x = tf.keras.layers.Conv2D(1, 1, name="outer_conv")(inputs)
    outer = tf.keras.Model(inputs, _model_with_batchnorm()(x), name="outer")
    with pytest.raises(ValueError, match="BatchNorm.*'inner/sneaky_bn'"):
        models.assert_no_batchnorm(outer)


def test_assert_no_batchnorm_finds_batchnorm_held_by_a_custom_layer():
    class Block(tf.keras.layers.Layer):
        def __init__(self):
            super().__init__(name="block")
            self.norm = tf.keras.layers.BatchNormalization(name="hidden_bn")

        def call(self, x):
            return self.norm(x)

    inputs = tf.keras.Input(shape=(4,))
    model = tf.keras.Model(inputs, Block()(inputs))
    with pytest.raises(ValueError, match="'block/hidden_bn'"):
        models.assert_no_batchnorm(model)


@pytest.mark.parametrize("name", ["cnn", "linear", "resnet20"])
def test_registered_models_pass_assert_no_batchnorm(name):
    models.assert_no_batchnorm(models.build_model(name, num_classes=10, input_shape=(8, 8, 1)))


# WSConv2D and group_norm.


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_ws_conv_matches_numpy_standardized_reference(strides, padding):
    x = _images(2, (9, 9, 3), seed=3)
    layer = layers.WSConv2D(5, 3, strides=strides, padding=padding, use_bias=False)
    out = layer(x).numpy()
    kernel = layer.kernel.numpy()
    np.testing.assert_allclose(out, _reference_ws_conv(x, kernel, strides, padding), atol=1e-4)
    # The reference differs from a plain convolution with the raw kernel, so the check has teeth.
    plain = tf.nn.conv2d(x, kernel, strides=strides, padding=padding.upper()).numpy()
    assert not np.allclose(out, plain, atol=1e-2)


def test_ws_conv_adds_its_bias_after_standardization():
    x = _images(1, (5, 5, 2), seed=4)
    layer = layers.WSConv2D(3, 3, padding="same", bias_initializer="ones")
    out = layer(x).numpy()
    expected = _reference_ws_conv(x, layer.kernel.numpy(), 1, "same") + 1.0
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_standardized_kernel_has_zero_mean_unit_variance_per_output_channel():
    kernel = tf.random.normal((3, 3, 8, 6), mean=0.7, stddev=0.05, seed=5)
    standardized = layers.standardize(kernel).numpy()
    np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.var(axis=(0, 1, 2)), 1.0, atol=1e-2)


def test_standardize_keeps_a_constant_channel_finite():
    standardized = layers.standardize(tf.ones((3, 3, 2, 4))).numpy()
    np.testing.assert_array_equal(standardized, 0.0)


def test_ws_conv_gradient_reaches_the_raw_kernel_and_matches_finite_differences():
    x = tf.constant(_images(2, (5, 5, 2), seed=6).astype(np.float64))
    layer = layers.WSConv2D(3, 3, padding="same", use_bias=False, dtype="float64")
    layer.build(x.shape)
    target = tf.constant(_images(2, (5, 5, 3), seed=7).astype(np.float64))

    def loss(kernel):
        return tf.reduce_sum(layer.convolution_op(x, kernel) * target)

    # A small step: the default (2**-10) leaves O(step**2) curvature error of ~1e-5 here.
    theoretical, numerical = tf.test.compute_gradient(loss, [layer.kernel], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)

    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x) * target)
    (grad,) = tape.gradient(y, layer.trainable_variables)
    assert grad is not None and np.abs(grad.numpy()).max() > 0
    assert layer.trainable_variables[0] is layer.kernel  # The raw kernel is what trains.


def test_ws_conv_config_round_trips():
    layer = layers.WSConv2D(4, 3, strides=2, padding="same", use_bias=False, name="ws")
    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(clone) is layers.WSConv2D
    assert clone.get_config() == layer.get_config()


def test_ws_conv_model_survives_a_savedmodel_round_trip(tmp_path):
    # A small WSConv2D model: exporting resnet20 costs ~30 s of tracing for no extra coverage.
    inputs = tf.keras.Input(shape=(8, 8, 1))
    x = layers.WSConv2D(4, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = layers.group_norm(4, 2, name="stem_gn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="logits")(x))
    x = _images(2, (8, 8, 1), seed=8)
    expected = model(x, training=False).numpy()
    path = str(tmp_path / "ws_model")
    model.save(path, save_format="tf")

    # Keras reload goes through get_config and the registered class, with no custom_objects.
    reloaded = tf.keras.models.load_model(path)
    assert isinstance(reloaded.get_layer("stem_conv"), layers.WSConv2D)
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)

    # Plain TF reload uses only the traced graph, as serving would.
    serving = tf.saved_model.load(path).signatures["serving_default"]
    (served,) = serving(tf.constant(x)).values()
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "channels, groups, expected", [(16, 16, 16), (32, 16, 16), (8, 16, 8), (24, 16, 12), (7, 4, 1)]
)
def test_group_norm_uses_a_divisor_of_the_channels(channels, groups, expected):
    layer = layers.group_norm(channels, groups)
    assert layer.groups == expected
    assert layer.epsilon == 1e-5


@pytest.mark.parametrize("channels, groups", [(0, 4), (8, 0), (8.0, 4), (8, None)])
def test_group_norm_rejects_bad_arguments(channels, groups):
    with pytest.raises(ValueError, match="must be a positive int"):
        layers.group_norm(channels, groups)
