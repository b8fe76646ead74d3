"""Tests for the model zoo: WRN-16-4/40-4, ResNet-18, DenseNet-121, Tramer & Boneh's CNN and
EfficientNet-B0. Shapes, parameter counts, BatchNorm-freedom, fast-engine coverage, the fast clipped
sum against brute force, and batch independence.

    .venv/bin/python -m pytest tests/test_zoo.py

Each model is built once per (name, input shape, options) for the whole module; about 1.5 minutes on
2 CPU cores, most of it building DenseNet-121 and EfficientNet-B0.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp.dp import clipping
from tfdp.dp.fast import rules
from tfdp import models
from tfdp.models import layers

NUM_CLASSES = 10
SHAPES = [(32, 32, 3), (28, 28, 1)]
ZOO = ["convnet", "densenet121", "efficientnet_b0", "resnet18", "wrn16_4", "wrn40_4"]

# name -> (figure the literature gives, exact count we build) for 10 classes on 32x32x3.
PARAMS = {
    "wrn16_4": (2.75e6, 2_748_890),
    "wrn40_4": (8.9e6, 8_949_210),
    "resnet18": (11.2e6, 11_173_962),
    "densenet121": (7.0e6, 6_956_298),  # CIFAR stem.
    "efficientnet_b0": (4.0e6, 4_020_358),  # keras.applications.EfficientNetB0(classes=10) too.
    "convnet": (None, 550_570),  # No published count.
}

# Weight layers the fast engine may still leave to the vectorized fallback: DepthwiseConv2D, only
# until its rule is registered in tfdp.dp.fast.
ALLOWED_FALLBACK = () if tf.keras.layers.DepthwiseConv2D in rules.RULES else (
    tf.keras.layers.DepthwiseConv2D,
)
FAST_LAYER_TYPES = (
    tf.keras.layers.Dense,
    tf.keras.layers.Conv2D,  # WSConv2D included.
    tf.keras.layers.DepthwiseConv2D,
    tf.keras.layers.GroupNormalization,
    tf.keras.layers.LayerNormalization,
)


@pytest.fixture(scope="module")
def build():
    """build(name, shape, **options) -> model, built once per module with a fixed seed."""
    cache = {}

    def get(name, shape=SHAPES[0], **options):
        key = (name, shape, tuple(sorted(options.items())))
        if key not in cache:
            tf.keras.utils.set_random_seed(0)
            cache[key] = models.build_model(name, NUM_CLASSES, shape, **options)
        return cache[key]

    return get


def _images(batch, shape, seed):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def _all_layers(model):
    """Every layer below `model`, nested ones included (sub-models, layers held by layers)."""
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]


# Shapes, structure and parameter counts.


def test_zoo_models_are_registered():
    assert set(ZOO) <= set(models.MODELS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ZOO)
def test_model_outputs_logits_and_has_no_batchnorm(build, name, shape):
    model = build(name, shape)
    logits = model(_images(3, shape, seed=0), training=False).numpy()
    assert logits.shape == (3, NUM_CLASSES)
    assert np.all(np.isfinite(logits))
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is tf.keras.activations.linear
    everything = _all_layers(model)
    assert not [l.name for l in everything if "BatchNorm" in type(l).__name__]
    # Flat: the fast engine sees only top-level layers, so no weights may hide in nested ones.
    assert {id(l) for l in everything} == {id(l) for l in model.layers}


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count_matches_the_literature(build, name):
    figure, exact = PARAMS[name]
    params = models.count_params(build(name))
    if figure is not None:
        assert abs(params - figure) / figure < 0.02, params
    assert params == exact


def test_wrn16_4_with_depth_40_is_wrn40_4(build):
    model = build("wrn16_4", depth=40)
    assert model.name == "wrn40_4"
    assert models.count_params(model) == PARAMS["wrn40_4"][1]


@pytest.mark.parametrize("depth", [15, 4, 16.0, True])
def test_wrn_rejects_a_depth_that_is_not_6n_plus_4(depth):
    with pytest.raises(ValueError, match=f"depth must be 6n \\+ 4.*{depth!r}"):
        models.build_model("wrn16_4", NUM_CLASSES, (8, 8, 1), depth=depth)


def test_wrn16_4_is_pre_activation_with_16_group_norms_and_ws_convs(build):
    model = build("wrn16_4")
    convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
    assert all(isinstance(l, layers.WSConv2D) and not l.use_bias for l in convs)
    assert len(convs) == 1 + 2 * 6 + 3  # Stem, two per block, a projection at each group's start.
    norms = [l for l in model.layers if isinstance(l, tf.keras.layers.GroupNormalization)]
    assert {l.groups for l in norms} == {16}
    assert model.get_layer("group3_block1_conv1").strides == (2, 2)
    # Pre-activation: the block's first conv reads the normalized, activated input.
    activated = model.get_layer("group2_block2_act1").output
    assert model.get_layer("group2_block2_conv1").input is activated
    assert not any(isinstance(l, tf.keras.layers.Dropout) for l in model.layers)


def test_resnet18_has_cifar_stem_and_projections_where_the_shape_changes(build):
    model = build("resnet18")
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert not any(isinstance(l, tf.keras.layers.MaxPooling2D) for l in model.layers)
    projections = [l.name for l in model.layers if "shortcut_conv" in l.name]
    assert projections == [f"stage{s}_block1_shortcut_conv" for s in (2, 3, 4)]
    assert model.get_layer("stage4_block2_gn2").groups == 32


def test_densenet121_layout(build):
    model = build("densenet121")
    grows = [l for l in model.layers if isinstance(l, tf.keras.layers.Concatenate)]
    assert len(grows) == 6 + 12 + 24 + 16
    assert model.get_layer("transition3_conv").filters == 512  # (256 + 24 * 32) / 2.
    assert model.get_layer("final_gn").input.shape[-1] == 1024  # 512 + 16 * 32.
    assert model.get_layer("final_gn").input.shape[1:3] == (4, 4)  # CIFAR stem: 32 -> 4.


def test_convnet_is_tanh_without_normalization(build):
    model = build("convnet")
    activations = [l for l in model.layers if isinstance(l, tf.keras.layers.Activation)]
    assert len(activations) == 7 and all(
        l.activation is tf.keras.activations.tanh for l in activations
    )
    norms = (tf.keras.layers.GroupNormalization, tf.keras.layers.LayerNormalization)
    assert not any(isinstance(l, norms) for l in model.layers)
    assert model.get_layer("dense").input.shape[-1] == 4 * 4 * 128


def test_efficientnet_b0_follows_the_b0_table(build):
    model = build("efficientnet_b0")
    depthwise = [l for l in model.layers if isinstance(l, tf.keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 16
    assert [l.kernel_size[0] for l in depthwise] == [3] * 3 + [5] * 2 + [3] * 3 + [5] * 7 + [3]
    assert all(not l.use_bias and l.activation is tf.keras.activations.linear for l in depthwise)
    convs = [l for l in model.layers if type(l) is tf.keras.layers.Conv2D]
    assert not convs  # Every regular convolution is weight-standardized.
    assert model.get_layer("block1a_se_reduce").units == 8  # 0.25 x the block's 32 input channels.
    assert model.get_layer("block2a_se_reduce").units == 4  # 0.25 x 16, not x the expanded 96.
    assert model.get_layer("block7a_project_conv").filters == 320
    norms = [l for l in model.layers if isinstance(l, tf.keras.layers.GroupNormalization)]
    assert {l.groups for l in norms} == {8}
    assert not any(isinstance(l, tf.keras.layers.Dropout) for l in model.layers)


def test_efficientnet_b0_depthwise_kernels_are_he_initialised_each_on_its_own(build):
    model = build("efficientnet_b0")
    kernels = [model.get_layer(f"block6{b}_dwconv").depthwise_kernel.numpy() for b in "bcd"]
    assert not np.allclose(kernels[0], kernels[1])  # A shared unseeded initializer would tie them.
    # He over the true fan-in of a depthwise 5x5 filter, 25, not 25 * 1152 channels.
    np.testing.assert_allclose(np.std(kernels), np.sqrt(2.0 / 25), rtol=0.05)


def test_efficientnet_b0_stem_keeps_small_inputs_from_collapsing(build):
    model = build("efficientnet_b0")
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert model.get_layer("head_conv").output.shape[1:3] == (2, 2)  # 32 / 16, not 32 / 32.
    assert build("efficientnet_b0", (28, 28, 1)).get_layer("head_conv").output.shape[1:3] == (2, 2)


def test_efficientnet_b0_dropout_options_add_parameter_free_layers_only(build):
    model = build("efficientnet_b0", dropout_rate=0.2, drop_connect_rate=0.2)
    drops = [l for l in model.layers if isinstance(l, tf.keras.layers.Dropout)]
    assert len(drops) == 1 + 9  # Before the logits, and on each of B0's 9 identity-shortcut blocks.
    assert models.count_params(model) == PARAMS["efficientnet_b0"][1]
    x = _images(2, SHAPES[0], seed=4)
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())  # Inference: no dropout.


@pytest.mark.parametrize("weights", ["/nonexistent/b0.h5", "imagenet"])
def test_efficientnet_b0_missing_weights_file_says_why(weights):
    with pytest.raises(ValueError, match="cannot be downloaded offline") as error:
        models.build_model("efficientnet_b0", NUM_CLASSES, (32, 32, 3), weights=weights)
    assert repr(weights) in str(error.value)


def test_efficientnet_b0_loads_a_local_weights_file(build, tmp_path):
    source = build("efficientnet_b0")
    path = str(tmp_path / "b0.h5")
    source.save_weights(path)
    tf.keras.utils.set_random_seed(1)  # Different random init, so only loading can make them agree.
    loaded = models.build_model("efficientnet_b0", NUM_CLASSES, (32, 32, 3), weights=path)
    x = _images(2, (32, 32, 3), seed=3)
    np.testing.assert_allclose(loaded(x).numpy(), source(x).numpy(), rtol=1e-5, atol=1e-5)


# The fast clipping engine.


@pytest.mark.parametrize("name", ZOO)
def test_fast_engine_has_a_rule_for_every_weight_layer(build, name):
    model = build(name)
    engine = clipping.make_engine("fast", model)
    weighted = [l for l in model.layers if l.trainable_weights]
    assert all(isinstance(l, FAST_LAYER_TYPES) for l in weighted)
    assert not [l.name for l in engine.fallback_layers if not isinstance(l, ALLOWED_FALLBACK)]


# ReLU models are compared with swish: at a ReLU input within float32 rounding of zero (~1e-7, a
# few per million units) batched and one-at-a-time evaluation can disagree on the sign, and the
# gradient then differs by ~1% (seen on ResNet-18). The engine's per-layer rules do not depend on
# the activation, which reaches them only through the output gradients.
BRUTE_FORCE = [
    ("convnet", {}, 4),
    ("wrn16_4", {"activation": "swish"}, 4),
    ("efficientnet_b0", {}, 4),  # Swish already.
    ("resnet18", {"activation": "swish"}, 4),
    ("densenet121", {"activation": "swish"}, 4),
]


@pytest.mark.parametrize("name, options, batch", BRUTE_FORCE, ids=[c[0] for c in BRUTE_FORCE])
def test_fast_clipped_sum_matches_brute_force(build, name, options, batch):
    model = build(name, **options)
    images, labels = ref.batch(size=batch, input_shape=SHAPES[0], num_classes=NUM_CLASSES)
    mask = np.ones(batch, np.float32)
    clip = 1.0  # Per-example gradient norms are 20 to 150 at init, so every example is clipped.
    engine = clipping.make_engine("fast", model)
    fast, *_ = engine(
        clipping.per_example_loss,
        tf.constant(images),
        tf.constant(labels),
        tf.constant(mask),
        clip,
    )
    expected = ref.clipped_sum(model, images, labels, mask, clip)
    for variable, actual, wanted in zip(model.trainable_variables, fast, expected):
        np.testing.assert_allclose(
            actual.numpy(), wanted, rtol=1e-3, atol=1e-5, err_msg=variable.name
        )


# Batch independence: what per-example clipping relies on.


@pytest.mark.parametrize("name", ZOO)
def test_an_examples_logits_do_not_depend_on_the_rest_of_the_batch(build, name):
    model = build(name)
    batch = _images(4, SHAPES[0], seed=1)
    other = batch.copy()
    other[1:] = _images(3, SHAPES[0], seed=2) * 5.0
    for training in (True, False):
        first = model(batch, training=training).numpy()
        second = model(other, training=training).numpy()
        np.testing.assert_allclose(first[0], second[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(first[1:], second[1:])  # The replaced examples did change.
