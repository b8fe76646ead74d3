"""Layers for BatchNorm-free image models: weight-standardized convolution and group norm.

Under DP-SGD every example's gradient must depend on that example alone, so the models cannot use
BatchNorm. Group normalization of the activations plus weight standardization of the kernels
recovers most of what BatchNorm gives to optimisation (Qiao et al. 2019, "Micro-Batch Training with
Batch-Channel Normalization and Weight Standardization"; De et al. 2022, "Unlocking High-Accuracy
Differentially Private Image Classification through Scale").
"""

import contextlib
import threading
from typing import Dict, List

import tensorflow as tf

# The variance of a He-normal 3x3 kernel is 2 / fan_in, about 3.5e-3 at fan_in = 576 (3x3x64), so
# 1e-5 changes the scale of a live kernel by under 0.2%, yet keeps the division finite for an output
# channel whose weights are all equal (variance 0), e.g. after zero initialisation.
WS_EPSILON = 1e-5
GN_EPSILON = 1e-5  # Keras' default 1e-3 is large against per-group variances of small activations.


def standardize(kernel, epsilon=WS_EPSILON):
  """Standardizes a convolution kernel per output channel.

  Args:
      kernel: Tensor of shape [kh, kw, in_channels, out_channels].
      epsilon: Added to the variance before the square root, so constant channels stay finite.

  Returns:
      Tensor of the same shape and dtype: (kernel - mean) / sqrt(var + epsilon), with mean and var
      taken over the axes [0, 1, 2], i.e. one mean and one variance per output channel.
  """
  # Moments in float32 at least: float16 loses most digits of variances around 1e-3.
  compute_dtype = tf.float64 if kernel.dtype == tf.float64 else tf.float32
  weights = tf.cast(kernel, compute_dtype)
  mean, var = tf.nn.moments(weights, axes=[0, 1, 2], keepdims=True)
  standardized = (weights - mean) * tf.math.rsqrt(var + epsilon)
  return tf.cast(standardized, kernel.dtype)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class WSConv2D(tf.keras.layers.Conv2D):
  """Conv2D whose kernel is standardized per output channel before each convolution.

  The trainable variable is the raw kernel; the convolution uses `standardize(kernel)`, so
  gradients flow back through the standardization to the raw weights. Takes the arguments of
  `tf.keras.layers.Conv2D` and nothing else, so `get_config`/`from_config` need no override.

  Input shape: [batch, height, width, in_channels]. Output shape: as for Conv2D.
  """

  def convolution_op(self, inputs, kernel):
    # In the input's dtype: under a mixed precision policy the kernel may arrive as float32.
    return super().convolution_op(inputs, tf.cast(standardize(kernel), inputs.dtype))


def _group_mean(per_channel, groups):
  """[B, C] -> [B, C]: each channel's value replaced by the mean over its group's channels."""
  batch, channels = tf.shape(per_channel)[0], per_channel.shape[-1]
  grouped = tf.reshape(per_channel, [batch, groups, channels // groups])
  mean = tf.reduce_mean(grouped, axis=2, keepdims=True)
  return tf.reshape(tf.broadcast_to(mean, tf.shape(grouped)), [batch, channels])


# Up to this many channels, per-channel dot products come from a batched C x C matmul's diagonal.
# It costs B N C^2 multiply-adds but reads each input once, where the elementwise product makes an
# extra trip through memory: GroupNorm's forward and backward at C = 16 measured 1.8x faster with it.
# Beyond, the C^2 work and [B, C, C] intermediates grow (DenseNet-121 reaches C = 1024).
GRAM_MAX_CHANNELS = 64


def _channel_dots(a, b):
  """[B, N, C] x [B, N, C] -> [B, C]: sum over N of a * b per channel."""
  if a.shape[-1] <= GRAM_MAX_CHANNELS:
    return tf.linalg.diag_part(tf.linalg.matmul(a, b, transpose_a=True))
  return tf.reduce_sum(a * b, axis=1)


def group_statistics(flat, groups, epsilon):
  """Per example, each channel's group mean and 1 / std: ([B, C], [B, C]) from flat [B, N, C].

  var = E[x^2] - E[x]^2 over the N positions and the group's channels, in float32. Against the
  two-pass variance this loses about eps32 * (1 + mean^2 / var) relative precision (tested).
  """
  count = tf.cast(tf.shape(flat)[1], tf.float32)
  mean = _group_mean(tf.reduce_sum(flat, axis=1), groups) / count
  mean_square = _group_mean(_channel_dots(flat, flat), groups) / count
  variance = tf.maximum(mean_square - tf.square(mean), 0.0)
  return mean, tf.math.rsqrt(variance + epsilon)


def group_norm_example_gradients(layer, inputs, output_grads):
  """Each example's (gamma, beta) gradients, [B, C] each, of a GroupNormalization layer.

  Args:
      layer: the GroupNormalization (or tf.keras GroupNormalization over the last axis).
      inputs: the layer's input [B, ..., C].
      output_grads: gradient of the summed loss w.r.t. the layer's output, same shape; row i is
          example i's own (no BatchNorm), so row i of each result is example i's gradient.
  """
  channels = inputs.shape[-1]
  flat = tf.reshape(inputs, [tf.shape(inputs)[0], -1, channels])
  dy = tf.reshape(output_grads, [tf.shape(output_grads)[0], -1, channels])
  mean, inv_std = group_statistics(flat, layer.groups, layer.epsilon)
  return _affine_gradients(flat, dy, mean, inv_std)


def _affine_gradients(flat, dy, mean, inv_std):
  """Per example, ([B, C] sum over N of dy * x_hat, [B, C] sum over N of dy), x_hat never formed:
  sum_n dy * x_hat = inv_std * (sum_n dy * x - mean * sum_n dy)."""
  dy_sum = tf.reduce_sum(dy, axis=1)
  return inv_std * (_channel_dots(dy, flat) - mean * dy_sum), dy_sum


# Open records of per-example gradients (`recording_example_gradients`), innermost last, per
# thread: a distribution strategy traces its replicas' steps in threads of their own, each with its
# own tensors of the same layers.
_LOCAL = threading.local()


def _open_records() -> List[Dict[int, List[tf.Tensor]]]:
  if not hasattr(_LOCAL, "records"):
    _LOCAL.records = []
  return _LOCAL.records


@contextlib.contextmanager
def recording_example_gradients():
  """Within the block, a gradient computed through this module's GroupNormalization records that
  layer's per-example (gamma, beta) gradients, [B, C] each, which its backward pass forms anyway.

  Yields {id(layer): [gamma gradients, beta gradients]}, filled as gradients are taken in the block
  (while a tf.function is traced, or eagerly). Row i is example i's gradient of the summed loss:
  the layer normalizes each example alone. A layer whose gradient was not taken (or that ran on
  the parent's path: a mask, another axis or dtype) is absent; one called twice holds its last call.
  """
  record, records = {}, _open_records()
  records.append(record)
  try:
    yield record
  finally:
    records.pop()


def _group_norm(x, gamma, beta, groups, epsilon, layer_id=None):
  """y = gamma * (x - mean) / std + beta per example and group, with a hand-written gradient.

  Keras' GroupNormalization goes through weighted moments with an all-ones mask and autodiff of
  the broadcasts, about ten passes over the activations each way; here the statistics are two
  passes (a sum and a batched matmul) and the output one multiply-add, and the gradient needs
  two reductions and one affine map of dy and x. Same result to float32 rounding (tested).
  """
  shape, channels = tf.shape(x), x.shape[-1]
  flat = tf.reshape(x, [shape[0], -1, channels])
  mean, inv_std = group_statistics(flat, groups, epsilon)
  scale = inv_std * gamma  # [B, C]
  y = flat * scale[:, None, :] + (beta - mean * scale)[:, None, :]

  def gradient(dy):
    dy = tf.reshape(dy, [shape[0], -1, channels])
    count = tf.cast(tf.shape(flat)[1], tf.float32)
    dy_xhat, dy_sum = _affine_gradients(flat, dy, mean, inv_std)  # [B, C] each
    records = _open_records()
    if records and layer_id is not None:
      records[-1][layer_id] = [dy_xhat, dy_sum]
    # dx = inv_std * (dxh - mean_g(dxh) - x_hat * mean_g(dxh * x_hat)), dxh = dy * gamma,
    # written as an affine map of dy and x with per-example, per-channel coefficients.
    mean_dxh = _group_mean(dy_sum * gamma, groups) / count
    mean_dxh_xhat = _group_mean(dy_xhat * gamma, groups) / count
    x_coefficient = -tf.square(inv_std) * mean_dxh_xhat
    offset = -inv_std * mean_dxh - x_coefficient * mean
    dx = dy * scale[:, None, :] + (flat * x_coefficient[:, None, :] + offset[:, None, :])
    return tf.reshape(dx, shape), tf.reduce_sum(dy_xhat, axis=0), tf.reduce_sum(dy_sum, axis=0)

  return tf.reshape(y, shape), gradient


@tf.keras.utils.register_keras_serializable(package="tfdp")
class GroupNormalization(tf.keras.layers.GroupNormalization):
  """Keras' GroupNormalization with fewer passes over memory over the last axis (`_group_norm`).

  Same arguments, variables (gamma, beta), names and results as Keras' layer, and the same class
  name, so checkpoints of either (object-based, .h5 by layer name, and Keras' .weights.h5, which
  keys layers by class name) load into the other. Falls back to the parent where the fast path
  does not apply: another axis, no scale or no center, a mask, or a dtype other than float32.
  """

  def _fast(self, inputs, mask):
    return (mask is None and self.scale and self.center and inputs.dtype == tf.float32
            and self.axis in (-1, inputs.shape.rank - 1))

  def call(self, inputs, mask=None):
    if not self._fast(inputs, mask):
      return super().call(inputs, mask=mask)
    return tf.custom_gradient(
        lambda x, gamma, beta: _group_norm(x, gamma, beta, self.groups, self.epsilon, id(self)))(
            inputs, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta))


def group_norm(channels, groups, name=None):
  """Returns a GroupNormalization layer whose group count divides `channels`.

  Args:
      channels: Number of channels of the input it will normalize (last axis).
      groups: Wanted number of groups; lowered to the largest divisor of `channels` not above it.
      name: Optional layer name.

  Returns:
      A `GroupNormalization` (Keras', faster) with epsilon `GN_EPSILON`. It normalizes each
      example on its own, so unlike BatchNorm it is compatible with per-example privacy.

  Raises:
      ValueError: If `channels` or `groups` is not a positive integer.
  """
  for arg, value in (("channels", channels), ("groups", groups)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"group_norm: {arg} must be a positive int, got {value!r}.")
  groups = min(groups, channels)
  while channels % groups:
    groups -= 1
  return GroupNormalization(groups=groups, epsilon=GN_EPSILON, name=name)


def conv_before_norm(conv, filters, kernel_size, strides, name):
  """A 'same'-padded, He-initialized convolution without bias, for use right before a GroupNorm.

  No bias: the normalization that reads the output subtracts its mean, which cancels a bias.
  `conv` is the class (WSConv2D or tf.keras.layers.Conv2D).
  """
  return conv(
      filters,
      kernel_size,
      strides=strides,
      padding="same",
      use_bias=False,
      kernel_initializer="he_normal",
      name=name,
  )
