"""Tests for tfdp.models.vit and its fast clipping rules (tfdp.dp.fast.embeddings).

    .venv/bin/python -m pytest tests/test_vit.py
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.dp.fast import rules
from tfdp import models
from tfdp.models import vit

NUM_CLASSES = 10
ALL_SHAPES = [(32, 32, 3), (28, 28, 1)]
# One block of width 16: the same layer types as the default, brute force in well under a second.
SMALL = dict(hidden_size=16, depth=1, num_heads=2, mlp_dim=32)
SMALL_SHAPE = (12, 12, 2)  # 3x3 patches of 4 pixels: 10 tokens with the class token.


def _small_vit(seed=0, input_shape=SMALL_SHAPE):
    tf.keras.utils.set_random_seed(seed)
    model = models.build_model("vit_tiny", NUM_CLASSES, input_shape, **SMALL)
    # The class token starts at zero; move it so the test would see a rule that ignored its value.
    model.get_layer("class_token").token.assign(tf.random.normal([1, 1, SMALL["hidden_size"]]))
    return model


def _batch(size, shape, seed=1, scale=2.0):
    return ref.batch(size=size, input_shape=shape, num_classes=NUM_CLASSES, seed=seed, scale=scale)


def _fast_sums(model, images, labels, mask, clip, use_function=False):
    engine = clipping.make_engine("fast", model)
    call = tf.function(engine) if use_function else engine
    sums, *_ = call(
        clipping.per_example_loss, tf.constant(images), tf.constant(labels), tf.constant(mask), clip
    )
    assert engine.fallback_layers == []
    return [s.numpy() for s in sums]


def _assert_close(actual, expected, rtol=2e-4, atol=2e-5):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


# The model.


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_builds_with_logits_no_batchnorm_and_every_weight_under_a_fast_rule(shape):
    model = models.build_model("vit_tiny", num_classes=NUM_CLASSES, input_shape=shape)
    images, _ = _batch(3, shape)
    logits = model(images, training=False).numpy()
    assert logits.shape == (3, NUM_CLASSES)
    assert np.all(np.isfinite(logits))
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is tf.keras.activations.linear
    models.assert_no_batchnorm(model)
    assert not any("BatchNorm" in type(layer).__name__ for layer in model.layers)
    assert not any(isinstance(layer, tf.keras.layers.MultiHeadAttention) for layer in model.layers)
    engine = clipping.make_engine("fast", model)
    assert engine.fallback_layers == []
    tapped = [v.ref() for layer in engine.fast_layers for v in layer.trainable_weights]
    assert sorted(tapped) == sorted(v.ref() for v in model.trainable_variables)


def test_default_config_sizes_and_parameter_count():
    model = models.build_model("vit_tiny", num_classes=10, input_shape=(32, 32, 3))
    patch = model.get_layer("patch_embed")
    assert patch.kernel_size == (4, 4) and patch.strides == (4, 4) and patch.padding == "valid"
    assert model.get_layer("position_embedding").embedding.shape == (65, 192)  # 8x8 patches + 1.
    assert model.get_layer("class_token").token.shape == (1, 1, 192)
    assert model.get_layer("block4_attention").num_heads == 3
    assert model.get_layer("block4_mlp1").units == 384
    assert "block5_ln1" not in {layer.name for layer in model.layers}
    # Per block 4 * (192^2 + 192) attention + 2 * 192 * 384 + 384 + 192 MLP + 4 * 192 LayerNorm.
    assert models.count_params(model) == 1_212_490
    small = models.build_model("vit_tiny", num_classes=10, input_shape=(28, 28, 1))
    assert small.get_layer("position_embedding").embedding.shape == (50, 192)  # 7x7 patches + 1.
    assert models.count_params(small) == 1_203_466


def test_an_examples_logits_do_not_depend_on_the_rest_of_the_batch():
    model = models.build_model("vit_tiny", num_classes=NUM_CLASSES, input_shape=(32, 32, 3))
    images, _ = _batch(4, (32, 32, 3), scale=1.0)
    other = images.copy()
    other[1:] = _batch(3, (32, 32, 3), seed=2, scale=5.0)[0]
    for training in (True, False):
        first = model(images, training=training).numpy()
        second = model(other, training=training).numpy()
        np.testing.assert_allclose(first[0], second[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(first[1:], second[1:])  # The replaced examples did change.


def test_attention_matches_a_numpy_reference():
    layer = vit.DotProductAttention(num_heads=2)
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(3, 5, 4)).astype(np.float32) for _ in range(3))
    out = layer([q, k, v]).numpy()
    expected = np.zeros_like(out)
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        scores = np.einsum("btd,bsd->bts", q[..., cols], k[..., cols]) / np.sqrt(2.0)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        expected[..., cols] = np.einsum("bts,bsd->btd", weights, v[..., cols])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, options, message",
    [
        ((30, 30, 3), {}, r"patch_size=4.*\(30, 30, 3\)"),
        ((32, 32, 3), {"num_heads": 5}, "num_heads=5.*hidden_size=192"),
        ((32, 32, 3), {"depth": 0}, "depth.*0"),
        ((32, 32, 3), {"activation": "nope"}, "nope"),
    ],
)
def test_bad_options_are_named(shape, options, message):
    with pytest.raises(ValueError, match=message):
        models.build_model("vit_tiny", num_classes=NUM_CLASSES, input_shape=shape, **options)


# The rules for the token layers.


@pytest.mark.parametrize("layer_name", ["class_token", "position_embedding"])
def test_token_rules_give_per_example_gradients(layer_name):
    model = _small_vit()
    images, labels = _batch(3, SMALL_SHAPE)
    layer = model.get_layer(layer_name)
    a, dz = ref.layer_input_and_output_gradient(model, layer, images, labels)
    rule = rules.rule_for(layer)
    assert rule is not None
    per_example = rule.per_example_gradients(layer, a, dz)
    squared = rule.squared_norms(layer, a, dz)
    weights = tf.constant([0.5, -2.0, 3.0])
    summed = rule.weighted_sum(layer, a, dz, weights)
    (variable,) = layer.trainable_weights
    position = next(i for i, v in enumerate(model.trainable_variables) if v is variable)
    references = [
        ref.per_example_gradient(model, tf.constant(image), tf.constant(label))[position]
        for image, label in zip(images, labels)
    ]
    assert per_example[0].shape == (3, *variable.shape)
    for i, reference in enumerate(references):
        assert np.abs(reference).max() > 0
        np.testing.assert_allclose(per_example[0][i], reference, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(squared[0][i], np.sum(np.square(reference)), rtol=1e-3)
    expected_sum = sum(w * r for w, r in zip(weights.numpy(), references))
    np.testing.assert_allclose(summed[0], expected_sum, rtol=2e-4, atol=2e-6)


# The whole model against brute force.


@pytest.mark.parametrize("clip", [1e-3, 1e4])  # Every example clipped; no example clipped.
def test_small_vit_clipped_sum_matches_brute_force(clip):
    model = _small_vit()
    images, labels = _batch(3, SMALL_SHAPE)
    mask = np.array([1, 0, 1], np.float32)
    norms = [ref.global_norm(ref.per_example_gradient(model, tf.constant(x), tf.constant(y)))
             for x, y in zip(images, labels)]
    assert min(norms) > 1e-3 and max(norms) < 1e4  # So the two clips are the two regimes.
    sums = _fast_sums(model, images, labels, mask, clip)
    _assert_close(sums, ref.clipped_sum(model, images, labels, mask, clip))


def test_small_vit_inside_tf_function_on_28x28():
    model = _small_vit(input_shape=(28, 28, 1))  # 7x7 patches.
    images, labels = _batch(3, (28, 28, 1))
    mask = np.array([1, 1, 0], np.float32)
    sums = _fast_sums(model, images, labels, mask, 0.05, use_function=True)
    _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.05))


def test_default_vit_clipped_sum_matches_brute_force():
    tf.keras.utils.set_random_seed(0)
    model = models.build_model("vit_tiny", num_classes=NUM_CLASSES, input_shape=(32, 32, 3))
    images, labels = _batch(2, (32, 32, 3), scale=1.0)
    mask = np.ones(2, np.float32)
    sums = _fast_sums(model, images, labels, mask, 0.5)
    _assert_close(sums, ref.clipped_sum(model, images, labels, mask, 0.5), rtol=1e-3, atol=2e-5)


# Serialization.


def test_saved_model_round_trip(tmp_path):
    model = _small_vit()
    images, _ = _batch(3, SMALL_SHAPE)
    expected = model(images, training=False).numpy()
    path = str(tmp_path / "vit")
    tf.saved_model.save(model, path)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](tf.constant(images))
    np.testing.assert_allclose(next(iter(served.values())).numpy(), expected, rtol=1e-5, atol=1e-6)
    # The custom layers are registered, so Keras revives them from their configs.
    keras_path = str(tmp_path / "vit.keras")
    model.save(keras_path)
    revived = tf.keras.models.load_model(keras_path)
    assert isinstance(revived.get_layer("block1_attention"), vit.DotProductAttention)
    np.testing.assert_allclose(revived(images, training=False), expected, rtol=1e-5, atol=1e-6)


def test_config_round_trip_rebuilds_the_same_architecture():
    model = _small_vit()
    clone = tf.keras.Model.from_config(model.get_config())
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    assert clone.get_layer("block1_attention").num_heads == SMALL["num_heads"]
    clone.set_weights(model.get_weights())
    images, _ = _batch(2, SMALL_SHAPE)
    np.testing.assert_allclose(clone(images), model(images), rtol=1e-5, atol=1e-6)
