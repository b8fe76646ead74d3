"""CIFAR ResNet-20 (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2),
BatchNorm-free: GroupNorm after each convolution and weight-standardized kernels.

    stem:   conv3x3 16 -> GN -> act
    stage1: 3 basic blocks, 16 filters
    stage2: 3 basic blocks, 32 filters, the first with stride 2
    stage3: 3 basic blocks, 64 filters, the first with stride 2
    head:   global average pool -> dense num_classes (logits)

The paper's CIFAR net pads the identity shortcut with zeros where the shape changes (option A); we
use a 1x1 stride-2 projection (option B) because its output is normalized like the residual
branch's. It adds 2,752 parameters: 272,474 in all for 10 classes, against the paper's 0.27 M.
"""

import tensorflow as tf

from tfdp.models import layers
from tfdp.models import registry

STAGE_FILTERS = (16, 32, 64)
BLOCKS_PER_STAGE = 3  # 6n + 2 layers with n = 3 gives ResNet-20.


@registry.register("resnet20")
def resnet20(
    num_classes, input_shape, groupnorm_groups=16, activation="relu", weight_standardization=True
):
  """Builds a BatchNorm-free CIFAR ResNet-20.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; any size from 1x1 up (the two
          stride-2 stages use "same" padding).
      groupnorm_groups: Groups per GroupNorm, lowered to divide the channel count; 16 gives
          one channel per group in stage 1 and 2 or 4 channels per group later.
      activation: Keras activation name used after each normalization.
      weight_standardization: Whether convolutions are `layers.WSConv2D` rather than plain Conv2D.

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      layers such as "stage2_block1_conv1".

  Raises:
      ValueError: If `groupnorm_groups` is not a positive int or `activation` is unknown.
  """
  return cifar_resnet(num_classes, input_shape, STAGE_FILTERS, BLOCKS_PER_STAGE, groupnorm_groups,
                      activation, weight_standardization, name="resnet20")


def cifar_resnet(num_classes, input_shape, stage_filters, blocks_per_stage, groupnorm_groups,
                 activation, weight_standardization, name):
  """The CIFAR ResNet family: 3x3 stem, stages of basic blocks (stride 2 from the second), pool.

  Shared by ResNet-20 and ResNet-18, which differ only in widths and depths; arguments as for
  `resnet20`, plus `stage_filters` (one width per stage) and `blocks_per_stage`.
  """
  is_int = isinstance(groupnorm_groups, int) and not isinstance(groupnorm_groups, bool)
  if not is_int or groupnorm_groups < 1:
    raise ValueError(f"groupnorm_groups must be a positive int, got {groupnorm_groups!r}.")
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.
  conv = layers.WSConv2D if weight_standardization else tf.keras.layers.Conv2D

  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = _conv(conv, stage_filters[0], 3, 1, "stem_conv")(inputs)
  x = layers.group_norm(stage_filters[0], groupnorm_groups, name="stem_gn")(x)
  x = tf.keras.layers.Activation(activation, name="stem_act")(x)
  for stage, filters in enumerate(stage_filters, start=1):
    for block in range(1, blocks_per_stage + 1):
      strides = 2 if stage > 1 and block == 1 else 1
      block_name = f"stage{stage}_block{block}"
      x = _basic_block(x, filters, strides, conv, groupnorm_groups, activation, block_name)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  # Keras' Glorot default, not He: no ReLU follows the logits, so He's gain of 2 does not apply.
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name=name)


def _basic_block(x, filters, strides, conv, groups, activation, name):
  """conv3x3 -> GN -> act -> conv3x3 -> GN, add shortcut, act.

  Shapes: [B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), filters].
  """
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(conv, filters, 1, strides, f"{name}_shortcut_conv")(x)
    shortcut = layers.group_norm(filters, groups, name=f"{name}_shortcut_gn")(shortcut)
  y = _conv(conv, filters, 3, strides, f"{name}_conv1")(x)
  y = layers.group_norm(filters, groups, name=f"{name}_gn1")(y)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act1")(y)
  y = _conv(conv, filters, 3, 1, f"{name}_conv2")(y)
  y = layers.group_norm(filters, groups, name=f"{name}_gn2")(y)
  y = tf.keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return tf.keras.layers.Activation(activation, name=f"{name}_out")(y)


_conv = layers.conv_before_norm
