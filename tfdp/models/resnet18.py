"""CIFAR ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition", the ImageNet
18-layer net with the CIFAR stem used by most CIFAR code), BatchNorm-free: GroupNorm after each
convolution and weight-standardized kernels.

    stem:   conv3x3 64 -> GN -> act (no 7x7 stride-2 conv and no max pool: 32x32 inputs are small)
    stage1: 2 basic blocks, 64 filters
    stage2: 2 basic blocks, 128 filters, the first with stride 2
    stage3: 2 basic blocks, 256 filters, the first with stride 2
    stage4: 2 basic blocks, 512 filters, the first with stride 2
    head:   global average pool -> dense num_classes (logits)

Shortcuts are identities, or 1x1 projections (GN-normalized) where the shape changes. 11,173,962
parameters for 10 classes, the usual 11.2 M: GroupNorm has as many as BatchNorm's scale and offset.

    model = models.build_model("resnet18", num_classes=10, input_shape=(32, 32, 3))
"""


from tfdp.models import registry
from tfdp.models import resnet

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2  # 4 stages x 2 blocks x 2 convs + stem + dense = 18 weighted layers.


@registry.register("resnet18")
def resnet18(
    num_classes, input_shape, groupnorm_groups=32, activation="relu", weight_standardization=True
):
  """Builds a BatchNorm-free CIFAR ResNet-18.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; any size from 1x1 up (the three
          stride-2 stages use "same" padding).
      groupnorm_groups: Groups per GroupNorm, lowered to divide the channel count; 32 is Wu & He's
          default ("Group Normalization", 2018), 2 to 16 channels per group here.
      activation: Keras activation name used after each normalization.
      weight_standardization: Whether convolutions are `layers.WSConv2D` rather than plain Conv2D.

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      layers such as "stage4_block1_shortcut_conv".

  Raises:
      ValueError: If `groupnorm_groups` is not a positive int or `activation` is unknown.
  """
  # The blocks are ResNet-20's (same layout, same names), only wider and in four stages.
  return resnet.cifar_resnet(num_classes, input_shape, STAGE_FILTERS, BLOCKS_PER_STAGE,
                             groupnorm_groups, activation, weight_standardization,
                             name="resnet18")
