"""Images from random processes: pictures made by formulas and random numbers, no file read.

An encoder pretrained on these images has never seen a real image, so using it as the starting
point of a DP run costs no privacy (DP-RandP, Tang et al. 2023, after Baradad et al. 2021,
"Learning to See by Looking at Noise"). Three generators, found by name in `GENERATORS`:

- "dead_leaves": discs and squares occluding one another, each with a random colour and a size
  drawn from a power law (density ∝ r^-3, scale invariant like natural images).
- "spectral": noise with a 1/f^α amplitude spectrum (α uniform in [0.5, 3.5] per image), colours
  mixed by a random 3x3 matrix, then its Haar wavelet coefficients remapped to a sparse
  (Laplace) marginal, as natural images have ("wavelet-marginal matching").
- "stylegan_oriented": a randomly initialized, style-modulated convolutional generator whose
  first layer is a bank of oriented Gabor filters (StyleGAN-Oriented); the network's weights are
  redrawn for every block of images.

Every image is a function of (seed, block index) only, through stateless random ops: the same seed
gives the same images in any order, on any machine with the same TensorFlow build, so a
pretraining run can resume mid-stream. The seed is public: these images hold no secret.

    images = random_processes.generate("dead_leaves", num_images=16, image_size=32, seed=0)
    images.shape, images.dtype  # (16, 32, 32, 3), float32 in [0, 1]
    stream = random_processes.dataset("mix", image_size=32, seed=0)  # infinite, unbatched
"""

import math
from typing import Callable

import numpy as np
import tensorflow as tf

GENERATORS = {}  # name -> fn(seed [2] int32, block_size, size) -> [block, size, size, 3] in [0, 1]
BLOCK_SIZE = 64  # images per draw of one generator's random parameters (e.g. one StyleGAN net).


def register(name: str) -> Callable:
  """Decorator adding a block generator to `GENERATORS` under `name`."""

  def add(generator: Callable) -> Callable:
    if name in GENERATORS:
      raise ValueError(f"Random-process generator {name!r} is already registered.")
    GENERATORS[name] = generator
    return generator

  return add


def sources() -> list:
  """Valid `source` names: every generator, and "mix" (blocks cycle through them in order)."""
  return sorted(GENERATORS) + ["mix"]


def generate(source: str, num_images: int, image_size: int, seed: int, channels: int = 3,
             block_size: int = BLOCK_SIZE) -> tf.Tensor:
  """Returns images 0 .. num_images - 1 of the stream `dataset(source, image_size, seed)`.

  Args:
      source: One of `sources()`.
      num_images: Positive int.
      image_size: Height and width in pixels, an int >= 8.
      seed: Public int seed; the same seed gives the same images.
      channels: 3 (RGB) or 1 (luminance of the RGB image).
      block_size: Images per draw of a generator's parameters.

  Returns:
      float32 [num_images, image_size, image_size, channels] in [0, 1].
  """
  _check(source, image_size, channels)
  if not isinstance(num_images, int) or num_images < 1:
    raise ValueError(f"num_images must be a positive int, got {num_images!r}.")
  blocks = [_block(source, seed, index, block_size, image_size, channels)
            for index in range(math.ceil(num_images / block_size))]
  return tf.concat(blocks, axis=0)[:num_images]


def pixels(source: str, num_images: int, image_shape, seed: int) -> tf.Tensor:
  """`generate`'s images as uint8 pixels, to stand in for images of `image_shape`.

  Args:
      source, num_images, seed: as for `generate`.
      image_shape: (H, W, C) of the images they stand in for; H must equal W.

  Returns:
      uint8 [num_images, H, W, C].

  Raises:
      ValueError: H != W (the generators draw square images), naming both.
  """
  height, width, channels = image_shape
  if height != width:
    raise ValueError(f"random-process images stand in only for square images, got {height} x "
                     f"{width}")
  return tf.cast(tf.round(generate(source, num_images, height, seed, channels) * 255.0), tf.uint8)


def dataset(source: str, image_size: int, seed: int, channels: int = 3, start_block: int = 0,
            block_size: int = BLOCK_SIZE) -> tf.data.Dataset:
  """An infinite, unbatched stream of float32 [image_size, image_size, channels] images in [0, 1].

  Block b of the stream depends on (seed, b) only; `start_block` skips the first blocks without
  drawing them, so a resumed run continues the same stream.
  """
  _check(source, image_size, channels)
  indices = tf.data.Dataset.range(start_block, 2**62)
  blocks = indices.map(lambda b: _block(source, seed, b, block_size, image_size, channels),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return blocks.unbatch()


def _check(source, image_size, channels):
  if source not in sources():
    raise ValueError(f"Unknown random-process source {source!r}; valid sources: {sources()}.")
  if not isinstance(image_size, int) or image_size < 8:
    raise ValueError(f"image_size must be an int >= 8, got {image_size!r}.")
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels!r}.")


def _block(source, seed, index, block_size, image_size, channels):
  """Block `index` of the stream: [block_size, size, size, channels] float32 in [0, 1]."""
  index = tf.cast(index, tf.int32)
  names = sorted(GENERATORS)
  key = tf.stack([tf.constant(seed, tf.int32), index])
  if source == "mix":
    branches = [lambda name=name: GENERATORS[name](key, block_size, image_size)
                for name in names]
    images = tf.switch_case(index % len(names), branches)
  else:
    images = GENERATORS[source](key, block_size, image_size)
  images = tf.ensure_shape(images, [block_size, image_size, image_size, 3])
  if channels == 1:
    images = tf.image.rgb_to_grayscale(images)
  return tf.clip_by_value(images, 0.0, 1.0)


def _split(key, count):
  """`count` independent stateless seeds [2] from one."""
  return tf.unstack(tf.random.experimental.stateless_split(key, num=count))


def _rescale_each(images):
  """Maps each image's values onto [0, 1] (min-max per image)."""
  low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
  high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
  return (images - low) / tf.maximum(high - low, 1e-6)


# --- Dead leaves -----------------------------------------------------------------------------

LEAVES = 96  # shapes per image: enough that the background rarely shows at 32 x 32.
LEAF_RADIUS = (0.02, 0.5)  # min and max radius, as a fraction of the image side.


@register("dead_leaves")
def dead_leaves(key, block_size, image_size):
  """Shapes painted in order, each hiding those below; radius density ∝ r^-3 on LEAF_RADIUS."""
  k_center, k_radius, k_colour, k_kind, k_background = _split(key, 5)
  centers = tf.random.stateless_uniform([block_size, LEAVES, 2], k_center, -0.1, 1.1)
  low, high = LEAF_RADIUS
  # Inverse CDF of p(r) ∝ r^-3 on [low, high]: r = (low^-2 - u (low^-2 - high^-2))^-1/2.
  u = tf.random.stateless_uniform([block_size, LEAVES], k_radius)
  radii = (low**-2 - u * (low**-2 - high**-2)) ** -0.5
  colours = tf.random.stateless_uniform([block_size, LEAVES, 3], k_colour)
  is_square = tf.random.stateless_uniform([block_size, LEAVES], k_kind) < 0.5
  grid = (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size
  dy = grid[None, None, :, None] - centers[:, :, 0, None, None]  # [B, K, H, 1]
  dx = grid[None, None, None, :] - centers[:, :, 1, None, None]  # [B, K, 1, W]
  disc = dy**2 + dx**2 <= radii[:, :, None, None] ** 2
  square = tf.maximum(tf.abs(dy), tf.abs(dx)) <= radii[:, :, None, None]
  covers = tf.where(is_square[:, :, None, None], square, disc)  # [B, K, H, W]
  # The top shape at a pixel is the last one covering it; -1 where none does.
  order = tf.range(1, LEAVES + 1)[None, :, None, None]
  top = tf.reduce_max(tf.where(covers, order, 0), axis=1) - 1  # [B, H, W]
  painted = tf.gather(colours, tf.maximum(top, 0), batch_dims=1)  # [B, H, W, 3]
  background = tf.random.stateless_uniform([block_size, 1, 1, 3], k_background)
  return tf.where((top >= 0)[..., None], painted, background)


# --- Spectral noise with wavelet-marginal matching --------------------------------------------

SPECTRAL_ALPHA = (0.5, 3.5)  # range of the 1/f^α exponent (Baradad et al.'s "Spectrum" images).
LAPLACE_SCALE = 1.0 / math.sqrt(2.0)  # Laplace(0, b) with b = 1/√2 has unit variance.


@register("spectral")
def spectral(key, block_size, image_size):
  """1/f^α noise, random colour mixing, Haar detail coefficients remapped to a Laplace marginal."""
  k_alpha, k_real, k_imag, k_mix = _split(key, 4)
  alpha = tf.random.stateless_uniform([block_size, 1, 1, 1], k_alpha, *SPECTRAL_ALPHA)
  freq = np.fft.fftfreq(image_size).astype(np.float32)
  radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
  radius[0, 0] = 1.0 / image_size  # keeps the DC term finite; the image is standardized next.
  amplitude = tf.constant(radius)[None, None] ** -alpha[..., 0, None]  # [B, 1, H, W]
  shape = [block_size, 3, image_size, image_size]
  noise = tf.complex(tf.random.stateless_normal(shape, k_real),
                     tf.random.stateless_normal(shape, k_imag))
  channels = tf.math.real(tf.signal.ifft2d(noise * tf.cast(amplitude, tf.complex64)))
  channels = _standardize(tf.transpose(channels, [0, 2, 3, 1]))  # [B, H, W, 3]
  mixing = tf.random.stateless_normal([block_size, 3, 3], k_mix)
  images = _standardize(tf.einsum("bhwc,bcd->bhwd", channels, mixing))
  return _rescale_each(_match_wavelet_marginals(images))


def _standardize(images):
  mean, variance = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
  return (images - mean) * tf.math.rsqrt(variance + 1e-8)


_HAAR = np.array([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]], [[1, -1], [-1, 1]]],
                 dtype=np.float32) / 2.0  # approximation, then three detail filters; orthonormal.


def _match_wavelet_marginals(images):
  """One orthonormal Haar level: detail coefficients get a Laplace marginal by rank, then invert.

  Shapes: [B, H, W, 3] -> [B, H, W, 3], with H and W even.
  """
  batch, height, width, _ = images.shape
  planes = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, height, width, 1])
  filters = tf.constant(np.transpose(_HAAR, [1, 2, 0])[:, :, None, :])  # [2, 2, 1, 4]
  coefficients = tf.nn.conv2d(planes, filters, strides=2, padding="VALID")  # [P, H/2, W/2, 4]
  approximation, details = coefficients[..., :1], coefficients[..., 1:]
  flat = tf.reshape(tf.transpose(details, [0, 3, 1, 2]), [tf.shape(details)[0] * 3, -1])
  matched = _laplace_by_rank(flat) * tf.math.reduce_std(flat, axis=1, keepdims=True)
  details = tf.transpose(tf.reshape(matched, [-1, 3, height // 2, width // 2]), [0, 2, 3, 1])
  coefficients = tf.concat([approximation, details], axis=-1)
  planes = tf.nn.conv2d_transpose(coefficients, filters, tf.shape(planes), strides=2,
                                  padding="VALID")
  return tf.transpose(tf.reshape(planes, [batch, 3, height, width]), [0, 2, 3, 1])


def _laplace_by_rank(values):
  """Replaces each row's values by unit-variance Laplace quantiles in the same rank order."""
  count = tf.shape(values)[1]
  ranks = tf.argsort(tf.argsort(values, axis=1), axis=1)
  p = (tf.cast(ranks, tf.float32) + 0.5) / tf.cast(count, tf.float32) - 0.5
  return -LAPLACE_SCALE * tf.sign(p) * tf.math.log1p(-2.0 * tf.abs(p))


# --- StyleGAN-Oriented ------------------------------------------------------------------------

STYLE_DIM = 64  # latent and style width.
GENERATOR_WIDTH = 32  # feature maps per generator layer.
GABOR_FILTERS = 16  # oriented filters in the first layer.
GENERATOR_START = 4  # spatial size of the first feature map; doubled until image_size.


@register("stylegan_oriented")
def stylegan_oriented(key, block_size, image_size):
  """A random style-modulated generator: oriented Gabor first layer, upsample + modulated convs.

  The weights are drawn from `key` (one network per block); each image has its own latent
  (giving its styles) and its own per-layer noise.
  """
  k_net, k_latent, k_noise, k_const = _split(key, 4)
  latent = tf.random.stateless_normal([block_size, STYLE_DIM], k_latent)
  net_keys = iter(_split(k_net, 32))
  noise_keys = iter(_split(k_noise, 16))
  style = _mapping(latent, net_keys)
  x = tf.random.stateless_normal([1, GENERATOR_START, GENERATOR_START, GENERATOR_WIDTH], k_const)
  x = tf.tile(x, [block_size, 1, 1, 1])
  x = _modulated_conv(x, _gabor_bank(next(net_keys)), style, next(net_keys))
  x = _noise_and_activate(x, next(noise_keys), next(net_keys))
  size = GENERATOR_START
  while size < image_size:
    size = min(size * 2, image_size)
    x = tf.image.resize(x, [size, size], method="bilinear")
    kernel = tf.random.stateless_normal([3, 3, x.shape[-1], GENERATOR_WIDTH], next(net_keys))
    x = _modulated_conv(x, kernel, style, next(net_keys))
    x = _noise_and_activate(x, next(noise_keys), next(net_keys))
  to_rgb = tf.random.stateless_normal([1, 1, GENERATOR_WIDTH, 3], next(net_keys))
  rgb = tf.nn.conv2d(x, to_rgb, strides=1, padding="SAME")
  return tf.sigmoid(2.0 * _standardize(rgb))


def _mapping(latent, keys):
  """Two-layer random MLP from latents to styles [B, STYLE_DIM]."""
  x = latent * tf.math.rsqrt(tf.reduce_mean(latent**2, axis=1, keepdims=True) + 1e-8)
  for _ in range(2):
    weight = tf.random.stateless_normal([STYLE_DIM, STYLE_DIM], next(keys)) / STYLE_DIM**0.5
    x = tf.nn.leaky_relu(x @ weight, alpha=0.2) * 2**0.5
  return x


def _gabor_bank(key):
  """[3, 3, GENERATOR_WIDTH, GABOR_FILTERS * 2] kernels: random orientations and frequencies."""
  k_theta, k_freq, k_phase, k_mix = _split(key, 4)
  theta = tf.random.stateless_uniform([GABOR_FILTERS], k_theta, 0.0, math.pi)
  frequency = tf.random.stateless_uniform([GABOR_FILTERS], k_freq, 0.15, 0.5)
  phase = tf.random.stateless_uniform([GABOR_FILTERS], k_phase, 0.0, 2 * math.pi)
  offsets = tf.constant([-1.0, 0.0, 1.0])
  y, x = offsets[:, None, None], offsets[None, :, None]
  along = x * tf.cos(theta) + y * tf.sin(theta)  # [3, 3, F]
  envelope = tf.exp(-(x**2 + y**2) / 2.0)
  gabor = envelope * tf.cos(2 * math.pi * frequency * along + phase)
  gabor = tf.concat([gabor, -gabor], axis=-1)  # both polarities, as StyleGAN-Oriented does.
  # Each input map feeds the oriented filters through random weights, so orientations mix.
  mix = tf.random.stateless_normal([GENERATOR_WIDTH, 2 * GABOR_FILTERS], k_mix)
  return gabor[:, :, None, :] * mix[None, None]


def _modulated_conv(x, kernel, style, key):
  """StyleGAN2 modulation + demodulation of `kernel` by a per-image affine map of `style`."""
  in_channels = kernel.shape[2]
  affine = tf.random.stateless_normal([STYLE_DIM, in_channels], key) / STYLE_DIM**0.5
  scales = 1.0 + style @ affine  # [B, in]
  x = x * scales[:, None, None, :]  # modulating the input equals modulating the weights.
  y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
  weights = kernel[None] * scales[:, None, None, :, None]  # [B, k, k, in, out]
  demodulate = tf.math.rsqrt(tf.reduce_sum(weights**2, axis=[1, 2, 3]) + 1e-8)  # [B, out]
  return y * demodulate[:, None, None, :]


def _noise_and_activate(x, noise_key, strength_key):
  strength = tf.random.stateless_uniform([x.shape[-1]], strength_key, 0.0, 0.2)
  noise = tf.random.stateless_normal(tf.shape(x)[:3], noise_key)[..., None]
  return tf.nn.leaky_relu(x + strength * noise, alpha=0.2) * 2**0.5
