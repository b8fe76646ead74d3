"""DenseNet-121 (Huang et al. 2017, "Densely Connected Convolutional Networks"), BatchNorm-free:
GroupNorm in the pre-activation positions and weight-standardized kernels.

    stem:   conv3x3 64 (stem="cifar", the default) or conv7x7/2 64 -> GN -> act -> max pool 3x3/2
            (stem="imagenet")
    block1: 6 dense layers -> transition (GN -> act -> conv1x1 to half the channels -> avg pool 2x2)
    block2: 12 dense layers -> transition
    block3: 24 dense layers -> transition
    block4: 16 dense layers
    head:   GN -> act -> global average pool -> dense num_classes (logits)

Each dense layer is GN -> act -> conv1x1 128 (the 4 * growth bottleneck) -> GN -> act -> conv3x3 32
(the growth rate), its output concatenated to its input. The CIFAR stem keeps 32x32 inputs at
32x32 through block 1 (the ImageNet one would leave 1x1 maps for block 4) and gives 6,956,298
parameters for 10 classes, the ImageNet stem 6,964,106; both are within 1% of the usual 7.0 M
(torchvision's 7,978,856 at 1000 classes, less its 1,025,000-parameter classifier).

    model = models.build_model("densenet121", num_classes=10, input_shape=(32, 32, 3))
"""

import tensorflow as tf

from tfdp.models import layers
from tfdp.models import registry

GROWTH_RATE = 32
LAYERS_PER_BLOCK = (6, 12, 24, 16)
BOTTLENECK_FACTOR = 4  # The 1x1 convolution outputs 4 * growth channels.
COMPRESSION = 0.5  # Transitions halve the channels (DenseNet-BC).
STEMS = ("cifar", "imagenet")


@registry.register("densenet121")
def densenet121(
    num_classes,
    input_shape,
    groupnorm_groups=32,
    activation="relu",
    weight_standardization=True,
    stem="cifar",
):
  """Builds a BatchNorm-free DenseNet-121.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; at least 8x8 with the CIFAR stem
          (three 2x2 average pools), 32x32 with the ImageNet one.
      groupnorm_groups: Groups per GroupNorm, lowered to divide the channel count; 32 is Wu & He's
          default, and every channel count here is a multiple of 32.
      activation: Keras activation name used after each normalization.
      weight_standardization: Whether convolutions are `layers.WSConv2D` rather than plain Conv2D.
      stem: "cifar" (3x3 convolution, stride 1, no pool) or "imagenet" (7x7 stride-2 convolution
          and a 3x3 stride-2 max pool, as in the paper).

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      layers such as "block3_layer24_conv2" and "transition1_conv".

  Raises:
      ValueError: If `groupnorm_groups` is not a positive int, `stem` is unknown, the input is too
          small for the stem, or `activation` is unknown.
  """
  is_int = isinstance(groupnorm_groups, int) and not isinstance(groupnorm_groups, bool)
  if not is_int or groupnorm_groups < 1:
    raise ValueError(f"groupnorm_groups must be a positive int, got {groupnorm_groups!r}.")
  if stem not in STEMS:
    raise ValueError(f"stem must be one of {STEMS}, got {stem!r}.")
  min_size = 8 if stem == "cifar" else 32
  if min(input_shape[:2]) < min_size:
    raise ValueError(
        f"densenet121 with stem={stem!r} needs inputs of at least {min_size}x{min_size} for "
        f"its pools, got {input_shape!r}."
    )
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.
  conv = layers.WSConv2D if weight_standardization else tf.keras.layers.Conv2D

  inputs = tf.keras.Input(shape=input_shape, name="image")
  stem_filters = 2 * GROWTH_RATE
  if stem == "cifar":
    # No GN here: the first dense layer and the first transition normalize what they read.
    x = _conv(conv, stem_filters, 3, 1, "stem_conv")(inputs)
  else:
    x = _conv(conv, stem_filters, 7, 2, "stem_conv")(inputs)
    x = layers.group_norm(stem_filters, groupnorm_groups, name="stem_gn")(x)
    x = tf.keras.layers.Activation(activation, name="stem_act")(x)
    x = tf.keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
  for block, num_layers in enumerate(LAYERS_PER_BLOCK, start=1):
    for index in range(1, num_layers + 1):
      x = _dense_layer(x, conv, groupnorm_groups, activation, f"block{block}_layer{index}")
    if block < len(LAYERS_PER_BLOCK):
      x = _transition(x, conv, groupnorm_groups, activation, f"transition{block}")
  x = layers.group_norm(x.shape[-1], groupnorm_groups, name="final_gn")(x)
  x = tf.keras.layers.Activation(activation, name="final_act")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  # Keras' Glorot default, not He: no ReLU follows the logits, so He's gain of 2 does not apply.
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name="densenet121")


def _dense_layer(x, conv, groups, activation, name):
  """GN -> act -> conv1x1 -> GN -> act -> conv3x3, concatenated to the input.

  Shapes: [B, H, W, C] -> [B, H, W, C + GROWTH_RATE].
  """
  y = layers.group_norm(x.shape[-1], groups, name=f"{name}_gn1")(x)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act1")(y)
  y = _conv(conv, BOTTLENECK_FACTOR * GROWTH_RATE, 1, 1, f"{name}_conv1")(y)
  y = layers.group_norm(BOTTLENECK_FACTOR * GROWTH_RATE, groups, name=f"{name}_gn2")(y)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act2")(y)
  y = _conv(conv, GROWTH_RATE, 3, 1, f"{name}_conv2")(y)
  return tf.keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, conv, groups, activation, name):
  """GN -> act -> conv1x1 -> avg pool 2x2: [B, H, W, C] -> [B, H // 2, W // 2, C / 2]."""
  y = layers.group_norm(x.shape[-1], groups, name=f"{name}_gn")(x)
  y = tf.keras.layers.Activation(activation, name=f"{name}_act")(y)
  y = _conv(conv, int(x.shape[-1] * COMPRESSION), 1, 1, f"{name}_conv")(y)
  return tf.keras.layers.AveragePooling2D(2, name=f"{name}_pool")(y)


_conv = layers.conv_before_norm
