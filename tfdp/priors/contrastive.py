"""Alignment + uniformity contrastive learning (Wang & Isola 2020), for phase I of DP-RandP.

Phase I sees only images from random processes (`tfdp.data.random_processes`), never private
data, so nothing here is private and nothing here is accounted: its randomness (augmentation,
initialization) may come from a public seed, and is seeded so a run resumes exactly.

The loss of a batch of paired embeddings x, y (each row L2-normalized, [B, D]):

    align(x, y)  = mean_i ||x_i - y_i||^α                              (α = 2)
    uniform(x)   = log mean_{i<j} exp(-t ||x_i - x_j||^2)               (t = 2)
    loss         = align(x, y) + (uniform(x) + uniform(y)) / 2

Views are SimCLR-style augmentations of the same image: random resized crop (scale 0.08-1,
aspect 3/4-4/3), horizontal flip, colour jitter 0.4 (brightness, contrast, saturation, hue) with
probability 0.8, grayscale with probability 0.2.
"""

import math

import tensorflow as tf

ALIGN_ALPHA = 2.0  # Wang & Isola's α.
UNIFORM_T = 2.0  # Wang & Isola's t.
CROP_SCALE = (0.08, 1.0)  # area fraction of the random resized crop.
CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratio range of the crop.
JITTER = 0.4  # brightness, contrast, saturation and hue strength of the colour jitter.
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2


def align_loss(x: tf.Tensor, y: tf.Tensor, alpha: float = ALIGN_ALPHA) -> tf.Tensor:
  """mean_i ||x_i - y_i||_2^alpha for paired rows of x, y [B, D]; a scalar."""
  return tf.reduce_mean(tf.norm(x - y, axis=1) ** alpha)


def uniform_loss(x: tf.Tensor, t: float = UNIFORM_T) -> tf.Tensor:
  """log of the mean over pairs i < j of exp(-t ||x_i - x_j||^2), for x [B, D] with B >= 2."""
  squared = tf.reduce_sum(x**2, axis=1)
  distances = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
  batch = tf.shape(x)[0]
  upper = tf.linalg.band_part(tf.ones([batch, batch], tf.bool), 0, -1)
  upper = tf.logical_and(upper, tf.logical_not(tf.eye(batch, dtype=tf.bool)))
  pairs = tf.boolean_mask(tf.maximum(distances, 0.0), upper)
  count = tf.cast(tf.size(pairs), x.dtype)
  return tf.reduce_logsumexp(-t * pairs) - tf.math.log(count)


def contrastive_loss(x: tf.Tensor, y: tf.Tensor) -> tuple:
  """Returns (loss, align, uniform) for L2-normalized embeddings x, y [B, D] of paired views."""
  align = align_loss(x, y)
  uniform = (uniform_loss(x) + uniform_loss(y)) / 2.0
  return align + uniform, align, uniform


def augment_views(images: tf.Tensor, seed: tf.Tensor) -> tuple:
  """Two independently augmented views of images [B, H, W, C] in [0, 1]; seed [2] int32."""
  first, second = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  return augment(images, first), augment(images, second)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One random view of each image of [B, H, W, C] in [0, 1], C = 3 or 1 (grayscale images get
  brightness and contrast jitter only); the same seed gives the same view."""
  keys = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
  images = _random_resized_crop(images, keys[0])
  images = _random_flip(images, keys[1])
  if images.shape[-1] == 1:
    rgb = _colour_jitter(tf.tile(images, [1, 1, 1, 3]), keys[2])
    return tf.image.rgb_to_grayscale(rgb)
  images = _colour_jitter(images, keys[2])
  return _random_grayscale(images, keys[3])


def _uniform(shape, key, low=0.0, high=1.0):
  return tf.random.stateless_uniform(shape, key, low, high)


def _random_resized_crop(images, key):
  batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
  k_area, k_ratio, k_top, k_left = tf.unstack(tf.random.experimental.stateless_split(key, 4))
  area = _uniform([batch], k_area, *CROP_SCALE)
  log_ratio = _uniform([batch], k_ratio, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
  ratio = tf.exp(log_ratio)
  crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
  crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
  top = _uniform([batch], k_top) * (1.0 - crop_h)
  left = _uniform([batch], k_left) * (1.0 - crop_w)
  boxes = tf.stack([top, left, top + crop_h, left + crop_w], axis=1)
  return tf.image.crop_and_resize(images, boxes, tf.range(batch), [height, width])


def _random_flip(images, key):
  flip = _uniform([tf.shape(images)[0]], key) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _colour_jitter(images, key):
  """Brightness, contrast, saturation factors in [1 - JITTER, 1 + JITTER]; hue moved ± JITTER."""
  batch = tf.shape(images)[0]
  keys = tf.unstack(tf.random.experimental.stateless_split(key, 5))
  factor = lambda k: _uniform([batch, 1, 1, 1], k, 1.0 - JITTER, 1.0 + JITTER)
  jittered = images * factor(keys[0])
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(jittered), axis=[1, 2, 3], keepdims=True)
  jittered = tf.clip_by_value((jittered - mean) * factor(keys[1]) + mean, 0.0, 1.0)
  gray = tf.image.rgb_to_grayscale(jittered)
  jittered = tf.clip_by_value((jittered - gray) * factor(keys[2]) + gray, 0.0, 1.0)
  hsv = tf.image.rgb_to_hsv(jittered)
  shift = _uniform([batch, 1, 1], keys[3], -JITTER, JITTER)  # in turns of the colour wheel.
  hue = tf.math.floormod(hsv[..., 0] + shift, 1.0)
  jittered = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
  apply = _uniform([batch], keys[4]) < JITTER_PROBABILITY
  return tf.where(apply[:, None, None, None], jittered, images)


def _random_grayscale(images, key):
  gray = tf.tile(tf.image.rgb_to_grayscale(images), [1, 1, 1, 3])
  apply = _uniform([tf.shape(images)[0]], key) < GRAYSCALE_PROBABILITY
  return tf.where(apply[:, None, None, None], gray, images)
