"""Conv2D and WSConv2D: per-example kernel gradients from image patches.

Example i's kernel gradient is patches(a_i)^T dz_i: [kh*kw*cin, T] x [T, cout] over the T output
positions. The weighted sum over examples is TensorFlow's own filter-gradient op applied to the
reweighted output gradients, so it costs what a non-private backward pass costs for that layer.
For weight-standardized convolutions the gradient with respect to the standardized kernel is carried
back to the raw kernel through the standardization's (linear) vector-Jacobian product.
"""

import tensorflow as tf

from tfdp.dp.fast import rules
from tfdp.models import layers as model_layers


def _patches(layer, a):
  """[B, H, W, cin] -> [B, T, kh*kw*cin], ordered like the kernel's [kh, kw, cin] axes."""
  kh, kw = layer.kernel_size
  patches = tf.image.extract_patches(
      a, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
      rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
  return tf.reshape(patches, [tf.shape(a)[0], -1, kh * kw * a.shape[-1]])


def _per_example_kernel_grads(layer, a, dz):
  """[B, kh, kw, cin, cout]: each example's gradient w.r.t. the kernel used in the convolution."""
  dz_tokens = tf.reshape(dz, [tf.shape(dz)[0], -1, dz.shape[-1]])
  grads = tf.einsum("btk,btc->bkc", _patches(layer, a), dz_tokens)
  return tf.reshape(grads, [-1, *layer.kernel.shape])


def standardize_vjp(kernel: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
  """Gradient w.r.t. the raw kernel, given gradients w.r.t. standardize(kernel).

  With w_hat = (w - mean) / s and s = sqrt(var + eps) per output channel over axes [0, 1, 2]:
  dL/dw = (G - mean(G) - w_hat * mean(G * w_hat)) / s. Linear in G, so it applies to per-example
  gradients [B, kh, kw, cin, cout] and to their weighted sums [kh, kw, cin, cout] alike.
  """
  mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
  scale = tf.math.rsqrt(var + model_layers.WS_EPSILON)
  w_hat = (kernel - mean) * scale
  axes = [-4, -3, -2]
  return (grads - tf.reduce_mean(grads, axis=axes, keepdims=True)
          - w_hat * tf.reduce_mean(grads * w_hat, axis=axes, keepdims=True)) * scale


@rules.register(tf.keras.layers.Conv2D, model_layers.WSConv2D)
class Conv2DRule(rules.LayerRule):
  """Exact per-example gradients of Conv2D / WSConv2D (any stride, padding, kernel, dilation)."""

  def supports(self, layer) -> bool:
    return (layer.groups == 1 and layer.data_format == "channels_last"
            and layer.activation is tf.keras.activations.linear)

  def _to_raw(self, layer, kernel_grads):
    if isinstance(layer, model_layers.WSConv2D):
      return standardize_vjp(layer.kernel, kernel_grads)
    return kernel_grads

  def per_example_gradients(self, layer, a, dz):
    grads = [self._to_raw(layer, _per_example_kernel_grads(layer, a, dz))]
    if layer.use_bias:
      grads.append(tf.reduce_sum(dz, axis=[1, 2]))
    return grads

  def weighted_sum(self, layer, a, dz, weights):
    weighted = dz * weights[:, None, None, None]
    kernel_sum = tf.compat.v1.nn.conv2d_backprop_filter(
        a, tf.shape(layer.kernel), weighted, strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(), dilations=[1, *layer.dilation_rate, 1])
    sums = [self._to_raw(layer, kernel_sum)]
    if layer.use_bias:
      sums.append(tf.reduce_sum(weighted, axis=[0, 1, 2]))
    return sums
