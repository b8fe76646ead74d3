"""SeparableConv2D: a depthwise convolution (kernel [kh, kw, cin, m]) followed by a pointwise one
(kernel [1, 1, cin * m, filters]).

With mid = depthwise(a) and dz the gradient at the output, example i's pointwise gradient is
sum over positions of mid_i^T dz_i, and its depthwise gradient is DepthwiseConv2D's with the
gradient at mid, dz_i times the pointwise kernel transposed (a 1x1 convolution, so per position).
"""

import tensorflow as tf

from tfdp.dp.fast import conv
from tfdp.dp.fast import rules


@rules.register(tf.keras.layers.SeparableConv2D)
class SeparableConv2DRule(rules.LayerRule):
  """Exact per-example gradients of SeparableConv2D (channels last, any stride or dilation)."""

  def supports(self, layer) -> bool:
    return layer.data_format == "channels_last"

  def per_example_gradients(self, layer, a, dz):
    mid = tf.nn.depthwise_conv2d(a, layer.depthwise_kernel, strides=[1, *layer.strides, 1],
                                 padding=layer.padding.upper(), dilations=layer.dilation_rate)
    pointwise = layer.pointwise_kernel[0, 0]  # [cin * m, filters]
    mid_grad = tf.einsum("bhwo,co->bhwc", dz, pointwise)
    grads = [conv.depthwise_kernel_grads(layer, a, mid_grad),
             tf.einsum("bhwc,bhwo->bco", mid, dz)[:, None, None]]
    if layer.use_bias:
      grads.append(tf.reduce_sum(dz, axis=[1, 2]))
    return grads
