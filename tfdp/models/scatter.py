"""ScatterNet classifiers (Tramèr & Boneh 2021, "Differentially Private Learning Needs Better
Features"): a fixed wavelet scattering transform in front of a small trained head.

    front:  kymatio Scattering2D (J = 2, L = 8) on each channel: 1 + J L + L^2 J (J - 1) / 2 = 81
            maps per channel at a quarter of the resolution, [B, H, W, C] -> [B, H/4, W/4, 81 C]
            (channel-major: the 81 maps of channel 0 first). No weights: nothing is learned and
            nothing depends on data, so it costs no privacy and its output for an example depends
            on that example alone.
    norm:   normalization="group" (default): GroupNorm without scale or offset over 27 groups of
            scattering maps, the paper's data-independent normalization;
            normalization="statistics": each map standardized by a fixed mean and variance, set
            before training from a DP estimate over the training set (tfdp.dp.feature_statistics,
            the paper's "data normalization"; its cost is composed into the run's ε).
    head:   scatter_linear: flatten -> dense (logits);
            scatter_cnn: the paper's CNN on scattering features (RGB: conv3x3 64, tanh, maxpool,
            conv3x3 64, tanh; grayscale: conv3x3/2 16, tanh, conv3x3 32, tanh, dense 32, tanh),
            flatten -> dense (logits). `width` (default 1) multiplies every channel count of
            the head: a data-independent architecture choice, no privacy cost.

The model is `Model(image -> head(front(image)))` with two parts, layers "scattering" (the front)
and "head" (a model of its own). Training computes the front once per dataset and trains the head
on the cached features (tfdp.data.feature_cache); `split(model)` returns the two parts.
"""

import tensorflow as tf

from tfdp.models import registry

SCATTER_J = 2  # Scales: the output is downsampled by 2^J.
SCATTER_L = 8  # Angles.
NORM_GROUPS = 27  # The paper's GroupNorm: 9 maps per group for RGB (243), 3 for grayscale (81).
FRONT_MODELS = ("scatter_cnn", "scatter_linear")  # Models whose head trains on cached features.
NORMALIZATIONS = ("group", "statistics")
NORM_LAYER = "scattering_norm"
VARIANCE_EPSILON = 1e-5  # Added to the variance before its square root, as batch norm does.


class Scattering(tf.keras.layers.Layer):
  """Frozen 2-D scattering of each channel: [B, H, W, C] -> [B, H / 2^J, W / 2^J, 81 C].

  H and W must be multiples of 2^J. The layer has no weights; gradients do not flow through it
  (nothing before it is trained).
  """

  def __init__(self, j=SCATTER_J, angles=SCATTER_L, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.j, self.angles = j, angles
    self._transform = None

  def build(self, input_shape):
    from kymatio.tensorflow import Scattering2D  # pylint: disable=import-outside-toplevel
    height, width = int(input_shape[1]), int(input_shape[2])
    if height % 2**self.j or width % 2**self.j:
      raise ValueError(f"Scattering with J = {self.j} needs height and width divisible by "
                       f"{2**self.j}, got {height} x {width}.")
    self._transform = Scattering2D(J=self.j, shape=(height, width), L=self.angles)
    super().build(input_shape)

  def call(self, images):
    channels_first = tf.transpose(tf.stop_gradient(images), [0, 3, 1, 2])  # [B, C, H, W]
    maps = self._transform.scattering(channels_first)  # [B, C, K, H', W']
    _, height, width, channels = self.compute_output_shape(images.shape)
    maps = tf.reshape(maps, [-1, channels, height, width])  # [B, C K, H', W']
    return tf.transpose(maps, [0, 2, 3, 1])

  def compute_output_shape(self, input_shape):
    batch, height, width, channels = input_shape
    scale = 2**self.j
    maps = 1 + self.j * self.angles + self.angles**2 * self.j * (self.j - 1) // 2
    return tf.TensorShape([batch, height // scale, width // scale, maps * channels])

  def get_config(self):
    return {**super().get_config(), "j": self.j, "angles": self.angles}


class FeatureStandardization(tf.keras.layers.Layer):
  """(x - mean) / sqrt(variance + VARIANCE_EPSILON) per map (last axis), mean and variance weights.

  Maps whose variance is 0 are set to 0. The weights are not trainable: `set_moments` sets them
  once, from tfdp.dp.feature_statistics, before training; checkpoints and exports carry them.
  """

  def build(self, input_shape):
    maps = int(input_shape[-1])
    self.mean = self.add_weight(name="mean", shape=[maps], initializer="zeros",
                                trainable=False)
    self.variance = self.add_weight(name="variance", shape=[maps], initializer="ones",
                                    trainable=False)
    super().build(input_shape)

  def call(self, features):
    scale = tf.math.rsqrt(self.variance + VARIANCE_EPSILON)
    scale *= tf.cast(self.variance > 0, scale.dtype)
    return (features - self.mean) * scale

  def set_moments(self, moments) -> None:
    """Sets the weights from a feature_statistics.Moments (float64 [maps] each)."""
    self.mean.assign(moments.mean.astype("float32"))
    self.variance.assign(moments.variance.astype("float32"))


def statistics_layer(model: tf.keras.Model):
  """The FeatureStandardization layer of a ScatterNet model's head, or None."""
  parts = split(model)
  if parts is None:
    return None
  layer = parts[1].get_layer(NORM_LAYER)
  return layer if isinstance(layer, FeatureStandardization) else None


def uses_statistics(name: str, options: dict) -> bool:
  """Whether model `name` with builder `options` normalizes by released data statistics."""
  return name in FRONT_MODELS and options.get("normalization", "group") == "statistics"


def split(model: tf.keras.Model):
  """(front, head) of a ScatterNet model: the frozen "scattering" layer and the trained "head"
  model; None for any other model."""
  names = [layer.name for layer in model.layers]
  if "scattering" not in names or "head" not in names:
    return None
  return model.get_layer("scattering"), model.get_layer("head")


def _normalization(kind, norm_groups, channels):
  if kind not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {kind!r}.")
  if kind == "statistics":
    return FeatureStandardization(name=NORM_LAYER)
  if not isinstance(norm_groups, int) or norm_groups < 1 or channels % norm_groups:
    raise ValueError(f"norm_groups must be a positive int dividing the {channels} scattering "
                     f"maps, got {norm_groups!r}.")
  return tf.keras.layers.GroupNormalization(groups=norm_groups, center=False, scale=False,
                                            name=NORM_LAYER)


def _scatter_model(name, num_classes, input_shape, build_head, norm_groups, normalization):
  inputs = tf.keras.Input(shape=input_shape, name="image")
  # float32 whatever the policy: the transform is frozen, its features cached (tfdp.precision).
  front = Scattering(name="scattering", dtype="float32")
  features = front(inputs)
  head_inputs = tf.keras.Input(shape=features.shape[1:], name="scattering_features")
  x = _normalization(normalization, norm_groups, features.shape[-1])(head_inputs)
  logits = build_head(x, num_classes, input_shape[-1])
  head = tf.keras.Model(head_inputs, logits, name="head")
  return tf.keras.Model(inputs, head(features), name=name)


def _linear_head(x, num_classes, image_channels):
  del image_channels
  x = tf.keras.layers.Flatten(name="flatten")(x)
  return tf.keras.layers.Dense(num_classes, name="logits")(x)


def _cnn_head(x, num_classes, image_channels, width=1):
  # Activations are layers of their own: the fast engine's rules read the pre-activation output.
  def conv(x, filters, strides, name):
    x = tf.keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)(x)
    return tf.keras.layers.Activation("tanh", name=f"{name}_tanh")(x)

  if image_channels == 1:  # The paper's MNIST head: 7x7 maps -> 4x4.
    x = conv(x, 16 * width, 2, "conv1")
    x = conv(x, 32 * width, 1, "conv2")
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = tf.keras.layers.Dense(32 * width, name="dense")(x)
    x = tf.keras.layers.Activation("tanh", name="dense_tanh")(x)
  else:  # The paper's CIFAR-10 head: 8x8 maps -> 4x4.
    x = conv(x, 64 * width, 1, "conv1")
    x = tf.keras.layers.MaxPooling2D(2, name="pool")(x)
    x = conv(x, 64 * width, 1, "conv2")
    x = tf.keras.layers.Flatten(name="flatten")(x)
  return tf.keras.layers.Dense(num_classes, name="logits")(x)


@registry.register("scatter_linear")
def scatter_linear(num_classes, input_shape, norm_groups=NORM_GROUPS, normalization="group"):
  """ScatterNet + linear: [B, H, W, C] -> logits [B, num_classes]; H, W multiples of 4."""
  return _scatter_model("scatter_linear", num_classes, input_shape, _linear_head, norm_groups,
                        normalization)


@registry.register("scatter_cnn")
def scatter_cnn(num_classes, input_shape, norm_groups=NORM_GROUPS, normalization="group",
                width=1):
  """ScatterNet + the paper's small tanh CNN, its channels times `width` (a positive int):
  [B, H, W, C] -> logits; H, W multiples of 4."""
  if not isinstance(width, int) or isinstance(width, bool) or width < 1:
    raise ValueError(f"width must be a positive int (channels times width), got {width!r}.")
  head = lambda x, classes, channels: _cnn_head(x, classes, channels, width)
  return _scatter_model("scatter_cnn", num_classes, input_shape, head, norm_groups,
                        normalization)
