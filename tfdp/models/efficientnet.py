"""EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks"), BatchNorm-free and adapted to small images.

    stem:   conv3x3 32 (stride 1 below 64x64 inputs, see below) -> GN -> act
    blocks: the 16 MBConv blocks of B0's table (`BLOCKS`)
    head:   conv1x1 1280 -> GN -> act -> global average pool -> [dropout] -> dense (logits)

An MBConv block is: conv1x1 expand (skipped at expansion 1) -> GN -> act -> depthwise kxk (stride)
-> GN -> act -> squeeze-and-excitation -> conv1x1 project -> GN, plus the input where the shape is
unchanged. Squeeze-and-excitation is global average pool -> dense (a quarter of the block's *input*
channels) -> act -> dense -> sigmoid -> reshape -> multiply, i.e. B0's 1x1 convolutions on a 1x1 map
written as Dense layers.

Changes from the paper, all for DP or for 32x32 inputs:
- GroupNorm instead of BatchNorm, with `layers.group_norm`'s rule: the largest divisor of the
  channels not above `groupnorm_groups` (8 by default; every B0 width is a multiple of 8, so 8
  groups everywhere).
- Weight-standardized regular convolutions (`layers.WSConv2D`); the depthwise ones stay plain
  `DepthwiseConv2D`, whose per-output-channel kernels of k*k weights are too small to standardize.
- Stem stride 1 for inputs under 64 pixels a side: B0 downsamples 32x, which would leave a 1x1 map
  from a 32x32 image; with stride 1 the last blocks see 2x2 maps.
- No dropout and no stochastic depth by default (the paper has 0.2 and 0.2): DP noise already
  regularizes, and both stay available as options.
4,020,358 parameters for 10 classes, the same as keras.applications.EfficientNetB0 (whose 5.3 M at
1000 classes include the 1.28 M of the ImageNet head).

    model = models.build_model("efficientnet_b0", num_classes=10, input_shape=(32, 32, 3))
"""

import dataclasses
import os

import tensorflow as tf

from tfdp.models import layers
from tfdp.models import registry


@dataclasses.dataclass(frozen=True)
class BlockArgs:
  """One stage of MBConv blocks: `repeats` blocks, the first with `strides` and `filters_in`."""

  kernel_size: int
  repeats: int
  filters_in: int
  filters_out: int
  expand_ratio: int
  strides: int


# EfficientNet-B0's table (the paper's Table 1); SE ratio 0.25 throughout.
BLOCKS = (
    BlockArgs(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    BlockArgs(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    BlockArgs(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    BlockArgs(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    BlockArgs(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    BlockArgs(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    BlockArgs(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
SE_RATIO = 0.25
SMALL_INPUT = 64  # Below this many pixels a side the stem keeps stride 1 instead of B0's 2.
# He initialisation computed over the fan-out: for a depthwise kernel [k, k, C, 1] that is k*k, its
# true fan-in, where Keras' fan-in would wrongly count k*k*C. Keras' own EfficientNet does the same.
# A config, not an instance: an unseeded instance reused by several layers gives them equal kernels.
DEPTHWISE_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}


@registry.register("efficientnet_b0")
def efficientnet_b0(
    num_classes,
    input_shape,
    groupnorm_groups=8,
    activation="swish",
    weight_standardization=True,
    dropout_rate=0.0,
    drop_connect_rate=0.0,
    stem_strides=None,
    weights=None,
):
  """Builds a BatchNorm-free EfficientNet-B0.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; any size from 1x1 up ("same"
          padding throughout).
      groupnorm_groups: Groups per GroupNorm, lowered to the largest divisor of the channels.
      activation: Keras activation name; "swish" is SiLU, B0's activation.
      weight_standardization: Whether the regular convolutions are `layers.WSConv2D`.
      dropout_rate: Dropout before the logits layer, in [0, 1).
      drop_connect_rate: Stochastic depth: the largest probability of dropping a residual branch
          (per example), reached linearly at the last block, in [0, 1). Each example's branch is
          dropped on its own, so examples stay independent.
      stem_strides: Stride of the stem convolution; None picks 1 for inputs under 64x64 and 2 (the
          paper's) otherwise.
      weights: None for random initialisation, or the path of a local weights file of this same
          architecture (an .h5 file or a TF checkpoint prefix written by `model.save_weights`).

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      layers such as "block2a_dwconv" and "block6d_se_reduce".

  Raises:
      ValueError: If an option is out of range, `activation` is unknown, or `weights` names a
          file that does not exist.
  """
  is_int = isinstance(groupnorm_groups, int) and not isinstance(groupnorm_groups, bool)
  if not is_int or groupnorm_groups < 1:
    raise ValueError(f"groupnorm_groups must be a positive int, got {groupnorm_groups!r}.")
  for name, rate in (("dropout_rate", dropout_rate), ("drop_connect_rate", drop_connect_rate)):
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"{name} must be in [0, 1), got {rate!r}.")
  if stem_strides is None:
    stem_strides = 1 if min(input_shape[:2]) < SMALL_INPUT else 2
  if stem_strides not in (1, 2):
    raise ValueError(f"stem_strides must be None, 1 or 2, got {stem_strides!r}.")
  if weights is not None and not _weights_exist(weights):
    raise ValueError(
        f"weights file {weights!r} does not exist. ImageNet weights cannot be downloaded "
        "offline, so pass the path of a local weights file (.h5, or a checkpoint prefix) "
        "saved from this model, or weights=None for random initialisation."
    )
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.
  conv = layers.WSConv2D if weight_standardization else tf.keras.layers.Conv2D

  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = _conv(conv, STEM_FILTERS, 3, stem_strides, "stem_conv")(inputs)
  x = layers.group_norm(STEM_FILTERS, groupnorm_groups, name="stem_gn")(x)
  x = tf.keras.layers.Activation(activation, name="stem_act")(x)
  total_blocks = sum(args.repeats for args in BLOCKS)
  index = 0
  for stage, args in enumerate(BLOCKS, start=1):
    for repeat in range(args.repeats):
      # Later blocks are dropped more often, as in the paper's stochastic depth schedule.
      drop_rate = drop_connect_rate * index / total_blocks
      x = _mbconv(
          x,
          filters_out=args.filters_out,
          kernel_size=args.kernel_size,
          strides=args.strides if repeat == 0 else 1,
          expand_ratio=args.expand_ratio,
          conv=conv,
          groups=groupnorm_groups,
          activation=activation,
          drop_rate=drop_rate,
          name=f"block{stage}{chr(ord('a') + repeat)}",
      )
      index += 1
  x = _conv(conv, HEAD_FILTERS, 1, 1, "head_conv")(x)
  x = layers.group_norm(HEAD_FILTERS, groupnorm_groups, name="head_gn")(x)
  x = tf.keras.layers.Activation(activation, name="head_act")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  if dropout_rate > 0:
    x = tf.keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
  # Keras' Glorot default, not He: no activation follows the logits.
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  model = tf.keras.Model(inputs, logits, name="efficientnet_b0")
  if weights is not None:
    model.load_weights(weights)
  return model


def _mbconv(
    x, filters_out, kernel_size, strides, expand_ratio, conv, groups, activation, drop_rate, name
):
  """Mobile inverted bottleneck with squeeze-and-excitation.

  Shapes: [B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), filters_out].
  """
  filters_in = x.shape[-1]
  expanded = filters_in * expand_ratio
  y = x
  if expand_ratio != 1:
    y = _conv(conv, expanded, 1, 1, f"{name}_expand_conv")(y)
    y = layers.group_norm(expanded, groups, name=f"{name}_expand_gn")(y)
    y = tf.keras.layers.Activation(activation, name=f"{name}_expand_act")(y)
  # No bias: the GroupNorm right after subtracts the mean, which would cancel it.
  y = tf.keras.layers.DepthwiseConv2D(
      kernel_size,
      strides=strides,
      padding="same",
      use_bias=False,
      depthwise_initializer=DEPTHWISE_INITIALIZER,
      name=f"{name}_dwconv",
  )(y)
  y = layers.group_norm(expanded, groups, name=f"{name}_dw_gn")(y)
  y = tf.keras.layers.Activation(activation, name=f"{name}_dw_act")(y)
  y = _squeeze_excite(y, max(1, int(filters_in * SE_RATIO)), activation, name)
  y = _conv(conv, filters_out, 1, 1, f"{name}_project_conv")(y)
  y = layers.group_norm(filters_out, groups, name=f"{name}_project_gn")(y)
  if strides != 1 or filters_in != filters_out:
    return y
  if drop_rate > 0:
    # One draw per example (noise_shape), so each example's branch is kept or dropped alone.
    y = tf.keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(y)
  return tf.keras.layers.Add(name=f"{name}_add")([x, y])


def _squeeze_excite(x, squeezed, activation, name):
  """Rescales each channel of x [B, H, W, C] by a sigmoid gate computed from its spatial mean."""
  channels = x.shape[-1]
  s = tf.keras.layers.GlobalAveragePooling2D(name=f"{name}_se_squeeze")(x)
  s = tf.keras.layers.Dense(squeezed, kernel_initializer="he_normal", name=f"{name}_se_reduce")(s)
  s = tf.keras.layers.Activation(activation, name=f"{name}_se_act")(s)
  s = tf.keras.layers.Dense(channels, kernel_initializer="he_normal", name=f"{name}_se_expand")(s)
  s = tf.keras.layers.Activation("sigmoid", name=f"{name}_se_gate")(s)
  s = tf.keras.layers.Reshape((1, 1, channels), name=f"{name}_se_reshape")(s)
  return tf.keras.layers.Multiply(name=f"{name}_se_excite")([x, s])


_conv = layers.conv_before_norm


def _weights_exist(path):
  """True if `path` is a file, or the prefix of a TF checkpoint (`path`.index exists)."""
  path = os.fspath(path)
  return tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index")
