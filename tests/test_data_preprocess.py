"""Tests for tfdp.data.preprocess, eagerly, inside tf.function and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp import data
from tfdp.data import preprocess

PAD = preprocess.CROP_PADDING


def _random_images(batch, height=16, width=16, channels=3, seed=0):
    # 16 pixels, not 8: at width <= 2 * PAD + 1 some flips and crops coincide under reflect padding.
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, height, width, channels), dtype=np.uint8)


def _all_flip_crops(image):
    """Every output flip_crop may give for one [H, W, C] image, indexed by (flip, top, left)."""
    height, width = image.shape[:2]
    candidates = np.zeros((2, 2 * PAD + 1, 2 * PAD + 1, *image.shape), image.dtype)
    for flip, flipped in enumerate((image, image[:, ::-1])):
        padded = np.pad(flipped, [(PAD, PAD), (PAD, PAD), (0, 0)], mode='reflect')
        for top in range(2 * PAD + 1):
            for left in range(2 * PAD + 1):
                candidates[flip, top, left] = padded[top:top + height, left:left + width]
    return candidates


def test_normalization_is_exact_per_channel():
    images = np.array([[[[0, 51, 255]], [[255, 0, 102]]]], np.uint8)  # [1, 2, 1, 3]
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = data.make_preprocess(mean, std, 'none', training=True)(images)
    expected = (images / 255.0 - np.array(mean)) / np.array(std)
    assert out.dtype == tf.float32 and out.shape == images.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('augment,training', [('none', True), ('none', False),
                                              ('flip_crop', False)])
def test_without_augmentation_is_deterministic(augment, training):
    images = _random_images(4)
    fn = data.make_preprocess((0.5,) * 3, (0.5,) * 3, augment, training)
    np.testing.assert_array_equal(fn(images).numpy(), fn(images).numpy())
    np.testing.assert_allclose(fn(images).numpy(), (images / 255.0 - 0.5) / 0.5, atol=1e-6)


def _check_flip_crop(image, out):
    """Each output must be a flip and crop of `image`, each choice varying across the batch.

    Args:
        image: [H, W, C] uint8, random so that all its flips and crops differ.
        out: [B, H, W, C] preprocessed copies of image, made with mean 0 and std 1/255 so that
            they are the raw pixel values and compare exactly.
    """
    assert out.shape[1:] == image.shape and out.dtype == tf.float32
    candidates = _all_flip_crops(image)
    choices = []
    for result in np.round(out.numpy()).astype(np.uint8):
        matches = np.argwhere((candidates == result).all(axis=(3, 4, 5)))
        assert len(matches) == 1, 'output is not a flip and crop of the input'
        choices.append(matches[0])
    # With 64 examples, a flip, row offset or column offset shared by the whole batch would
    # show up as a single value (chance of that otherwise: below 2^-63).
    for flips_tops_or_lefts in np.array(choices).T:
        assert len(set(flips_tops_or_lefts)) > 1


def _flip_crop_fn():
    return data.make_preprocess((0.0,) * 3, (1 / 255,) * 3, 'flip_crop', training=True)


def test_flip_crop_eager():
    image = _random_images(1)
    images = np.repeat(image, 64, axis=0)
    first, second = _flip_crop_fn()(images), _flip_crop_fn()(images)
    _check_flip_crop(image[0], first)
    assert not np.array_equal(first.numpy(), second.numpy())


@pytest.mark.parametrize('batch_dim', [64, None])
def test_flip_crop_in_tf_function_keeps_static_shape(batch_dim):
    image = _random_images(1)
    compiled = tf.function(_flip_crop_fn(),
                           input_signature=[tf.TensorSpec([batch_dim, 16, 16, 3], tf.uint8)])
    graph_output = compiled.get_concrete_function().outputs[0]
    assert graph_output.shape.as_list() == [batch_dim, 16, 16, 3]
    images = np.repeat(image, 64, axis=0)
    first, second = compiled(images), compiled(images)
    _check_flip_crop(image[0], first)
    assert not np.array_equal(first.numpy(), second.numpy())  # Fresh randomness on every call.


def test_flip_crop_in_tf_data():
    image = _random_images(1)
    images = np.repeat(image, 128, axis=0)
    batches = list(tf.data.Dataset.from_tensor_slices(images).batch(64).map(_flip_crop_fn()))
    assert len(batches) == 2
    for batch in batches:
        _check_flip_crop(image[0], batch)


def test_unknown_augment_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'mixup'.*\['augmix', 'flip_crop', 'none', 'randaugment'\]"):
        data.make_preprocess((0.5,), (0.5,), 'mixup', training=True)


def test_bad_mean_std_and_channel_mismatch():
    with pytest.raises(ValueError, match='std=.*positive'):
        data.make_preprocess((0.5,), (0.0,), 'none', training=True)
    with pytest.raises(ValueError, match='one value per channel'):
        data.make_preprocess((0.5, 0.5), (0.5,), 'none', training=True)
    fn = data.make_preprocess((0.5,), (0.5,), 'none', training=True)
    with pytest.raises(ValueError, match='3 channels'):
        fn(_random_images(2))
