"""Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks") as De et al. 2022 train them
under DP ("Unlocking High-Accuracy Differentially Private Image Classification through Scale"):
pre-activation blocks, GroupNorm with 16 groups instead of BatchNorm, weight-standardized
convolutions, no dropout.

    stem:   conv3x3 16
    group1: n blocks, 16 * width filters
    group2: n blocks, 32 * width filters, the first with stride 2
    group3: n blocks, 64 * width filters, the first with stride 2
    head:   GN -> act -> global average pool -> dense num_classes (logits)

with n = (depth - 4) / 6 blocks of two 3x3 convolutions per group. WRN-16-4 has 2,748,890
parameters for 10 classes (the paper's 2.7 M), WRN-40-4 has 8,949,210 (8.9 M).

    model = models.build_model("wrn16_4", num_classes=10, input_shape=(32, 32, 3))
    model = models.build_model("wrn16_4", 10, (32, 32, 3), depth=40)  # Same as "wrn40_4".
"""

import tensorflow as tf

from tfdp.models import layers
from tfdp.models import registry

STEM_FILTERS = 16
GROUP_FILTERS = (16, 32, 64)  # Multiplied by the width.
GROUP_STRIDES = (1, 2, 2)


@registry.register("wrn16_4")
def wide_resnet(
    num_classes,
    input_shape,
    depth=16,
    width=4,
    groupnorm_groups=16,
    activation="relu",
    weight_standardization=True,
):
  """Builds a BatchNorm-free pre-activation Wide ResNet WRN-depth-width.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; any size from 1x1 up.
      depth: Number of weighted layers along the main path, 6n + 4 (16, 22, 28, 40, ...).
      width: Widening factor k of the three groups' 16, 32 and 64 filters.
      groupnorm_groups: Groups per GroupNorm, lowered to divide the channel count; 16 is what
          De et al. use.
      activation: Keras activation name used after each normalization.
      weight_standardization: Whether convolutions are `layers.WSConv2D` rather than plain Conv2D.

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      "wrn{depth}_{width}", with layers such as "group2_block1_conv1".

  Raises:
      ValueError: If `depth` is not 6n + 4 with n >= 1, `width` or `groupnorm_groups` is not a
          positive int, or `activation` is unknown.
  """
  if not _is_positive_int(depth) or depth < 10 or (depth - 4) % 6:
    raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, ...), got {depth!r}.")
  if not _is_positive_int(width):
    raise ValueError(f"width must be a positive int, got {width!r}.")
  if not _is_positive_int(groupnorm_groups):
    raise ValueError(f"groupnorm_groups must be a positive int, got {groupnorm_groups!r}.")
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.
  conv = layers.WSConv2D if weight_standardization else tf.keras.layers.Conv2D
  blocks_per_group = (depth - 4) // 6

  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = _conv(conv, STEM_FILTERS, 3, 1, "stem_conv")(inputs)
  groups = zip(GROUP_FILTERS, GROUP_STRIDES)
  for group, (filters, group_strides) in enumerate(groups, start=1):
    for block in range(1, blocks_per_group + 1):
      strides = group_strides if block == 1 else 1
      name = f"group{group}_block{block}"
      x = _block(x, filters * width, strides, conv, groupnorm_groups, activation, name)
  # Pre-activation blocks end on a convolution, so the head normalizes and activates once more.
  x = layers.group_norm(x.shape[-1], groupnorm_groups, name="final_gn")(x)
  x = tf.keras.layers.Activation(activation, name="final_act")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  # Keras' Glorot default, not He: no ReLU follows the logits, so He's gain of 2 does not apply.
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name=f"wrn{depth}_{width}")


@registry.register("wrn40_4")
def wrn40_4(
    num_classes, input_shape, groupnorm_groups=16, activation="relu", weight_standardization=True
):
  """WRN-40-4: `wide_resnet` with depth 40 and width 4 (6 blocks per group), 8.9 M parameters.

  Args and returns as for `wide_resnet`.
  """
  return wide_resnet(
      num_classes,
      input_shape,
      depth=40,
      width=4,
      groupnorm_groups=groupnorm_groups,
      activation=activation,
      weight_standardization=weight_standardization,
  )


def _block(x, filters, strides, conv, groups, activation, name):
  """GN -> act -> conv3x3 -> GN -> act -> conv3x3, plus the shortcut; no activation after the add.

  The shortcut is `x` itself, or where the shape changes a 1x1 convolution of the normalized and
  activated `x` (as in the WRN reference code), so every convolution sees normalized inputs.
  Shapes: [B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), filters].
  """
  y = layers.group_norm(x.shape[-1], groups, name=f"{name}_gn1")(x)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act1")(y)
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(conv, filters, 1, strides, f"{name}_shortcut_conv")(y)
  y = _conv(conv, filters, 3, strides, f"{name}_conv1")(y)
  y = layers.group_norm(filters, groups, name=f"{name}_gn2")(y)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act2")(y)
  y = _conv(conv, filters, 3, 1, f"{name}_conv2")(y)
  return tf.keras.layers.Add(name=f"{name}_add")([shortcut, y])


_conv = layers.conv_before_norm


def _is_positive_int(value):
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1
