"""Batch preprocessing: uint8 images -> normalized float32, with optional training augmentation.

Augmentations are found by name in `AUGMENTATIONS`. Everything is plain TensorFlow ops on a whole
batch, so the same function runs eagerly, inside tf.function and inside tf.data.

    preprocess = make_preprocess(dataset.mean, dataset.std, dataset.augment, training=True)
    x = preprocess(uint8_images)   # [B, H, W, C] float32
"""

from typing import Callable, Sequence

import tensorflow as tf

from tfdp import names

CROP_PADDING = 4  # pixels of reflect padding before the random crop: the standard CIFAR recipe.


def _no_augment(images: tf.Tensor) -> tf.Tensor:
  return images


def _flip_crop(images: tf.Tensor) -> tf.Tensor:
  """Per-example random horizontal flip, then a random crop of the reflect-padded image.

  Args:
      images: [B, H, W, C] float32, with H and W > CROP_PADDING (reflect padding needs it).

  Returns:
      [B, H, W, C] float32; each example has its own flip and crop offset.
  """
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  flip = tf.random.uniform([batch]) < 0.5
  images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
  pad = CROP_PADDING
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  # Offsets in [0, 2 * pad]; gathering rows then columns crops every example at its own offset.
  top = tf.random.uniform([batch], 0, 2 * pad + 1, dtype=tf.int32)
  left = tf.random.uniform([batch], 0, 2 * pad + 1, dtype=tf.int32)
  rows = top[:, None] + tf.range(height)[None, :]  # [B, H]
  cols = left[:, None] + tf.range(width)[None, :]  # [B, W]
  crops = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W + 2 pad, C]
  return tf.gather(crops, cols, axis=2, batch_dims=1)  # [B, H, W, C]


def _keras_cv(make_layer: Callable[[], Callable]) -> Callable[[], Callable[[tf.Tensor], tf.Tensor]]:
  """A factory of a keras-cv augmentation on [0, 1] images; grayscale passes through RGB."""

  def build() -> Callable[[tf.Tensor], tf.Tensor]:
    layer = make_layer()

    def augment(images: tf.Tensor) -> tf.Tensor:
      if images.shape[-1] == 1:  # keras-cv's colour ops need three channels.
        rgb = tf.image.grayscale_to_rgb(images)
        return tf.image.rgb_to_grayscale(layer(rgb, training=True))
      return layer(images, training=True)

    return augment

  return build


def _randaugment():
  import keras_cv  # pylint: disable=import-outside-toplevel  (slow import; only when asked)
  return keras_cv.layers.RandAugment(value_range=(0, 1))


def _augmix():
  import keras_cv  # pylint: disable=import-outside-toplevel
  return keras_cv.layers.AugMix(value_range=(0, 1))


# name -> factory of a batch augmentation [B, H, W, C] float in [0, 1] -> same. Factories, because
# the keras-cv layers hold their own random state and are built once per preprocessing function.
AUGMENTATIONS: dict[str, Callable[[], Callable[[tf.Tensor], tf.Tensor]]] = {
    'none': lambda: _no_augment,
    'flip_crop': lambda: _flip_crop,
    'randaugment': _keras_cv(_randaugment),  # keras-cv defaults: 3 ops per image, magnitude 0.5.
    'augmix': _keras_cv(_augmix),  # keras-cv defaults: severity 0.3, 3 chains.
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of AUGMENTATIONS."""
  names.check('augment', name, sorted(AUGMENTATIONS))


def make_preprocess(mean: Sequence[float], std: Sequence[float], augment: str,
                    training: bool) -> Callable[[tf.Tensor], tf.Tensor]:
  """Builds the function that turns a batch of uint8 images into model inputs.

  Args:
      mean: per-channel mean in [0, 1] pixel units (a public constant, see `Dataset.mean`).
      std: per-channel standard deviation in [0, 1] pixel units, all positive.
      augment: a key of `AUGMENTATIONS`; applied only when `training`.
      training: whether to augment (evaluation never augments).

  Returns:
      preprocess(images) mapping [B, H, W, C] uint8 (0..255) to [B, H, W, C] float32
      (images / 255 - mean) / std, augmented per example when training.

  Raises:
      ValueError: unknown `augment`, or mean/std of different lengths or with std <= 0.
  """
  if augment not in AUGMENTATIONS:
    raise ValueError(f'Unknown augment {augment!r}; valid: {sorted(AUGMENTATIONS)}.')
  if len(mean) != len(std) or not len(mean) or min(std) <= 0:
    raise ValueError(f'mean={tuple(mean)} and std={tuple(std)} need one value per channel '
                     'and a positive std.')
  augment_fn = AUGMENTATIONS[augment]() if training else _no_augment
  mean_t = tf.constant(mean, tf.float32)
  std_t = tf.constant(std, tf.float32)

  def preprocess(images: tf.Tensor) -> tf.Tensor:
    channels = images.shape[-1]
    if channels is not None and channels != len(mean):
      raise ValueError(f'Images have {channels} channels but mean={tuple(mean)} has '
                       f'{len(mean)}.')
    images = augment_fn(tf.cast(images, tf.float32) / 255.0)
    return (images - mean_t) / std_t

  return preprocess
