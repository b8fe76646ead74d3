"""Convolutions of any rank, groups and data format: Conv1D, Conv2D (grouped), Conv3D, and the
transposed convolutions Conv1DTranspose, Conv2DTranspose, Conv3DTranspose.

Example i's kernel gradient at kernel offset u is sum over output positions t of
window_u(a_i)[t]^T dz_i[t], where window_u is the input each output position reads at offset u
(after the layer's padding). With G groups, input channels of group g meet only output channels of
group g. A transposed convolution's kernel gradient is that of the ordinary convolution that maps
its output back to its input: the windows are taken over dz and contracted with a. The per-example
gradients are materialized (one [B, *kernel.shape] tensor), and the engine takes the norms and the
clipped sum from the same tensor.
"""

import itertools
from typing import List, Sequence, Tuple

import tensorflow as tf

from tfdp.dp.fast import conv
from tfdp.dp.fast import rules


def channels_last(layer, x):
  """x in the layer's data format -> channels last."""
  if getattr(layer, "data_format", "channels_last") == "channels_last":
    return x
  rank = x.shape.rank
  return tf.transpose(x, [0, *range(2, rank), 1])


def _pads(padding: str, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilation: Sequence[int]) -> List[Tuple[int, int]]:
  if padding == "same":
    return [conv._same_padding(n, k, s, d)  # pylint: disable=protected-access
            for n, k, s, d in zip(sizes, kernel, strides, dilation)]
  if padding == "causal":  # Conv1D: all the padding before the sequence.
    return [((k - 1) * d, 0) for k, d in zip(kernel, dilation)]
  return [(0, 0)] * len(sizes)


def windows(x, kernel: Sequence[int], strides: Sequence[int], dilation: Sequence[int],
            padding: str, out_sizes: Sequence[int]):
  """Yields, per kernel offset in kernel order, the [B, *out_sizes, C] input window read there."""
  pads = _pads(padding, x.shape[1:-1], kernel, strides, dilation)
  x = tf.pad(x, [[0, 0], *pads, [0, 0]])
  for offset in itertools.product(*(range(k) for k in kernel)):
    index = [slice(None)] + [slice(u * d, u * d + (o - 1) * s + 1, s) for u, d, o, s in
                             zip(offset, dilation, out_sizes, strides)] + [slice(None)]
    yield x[tuple(index)]


def kernel_grads(x, dy, kernel_shape, kernel_size, strides, dilation, padding, groups: int = 1):
  """[B, *kernel_shape] per-example kernel gradients of a convolution x -> y, channels last.

  Args:
    x: [B, *in_sizes, cin], the convolution's input.
    dy: [B, *out_sizes, cout], the gradient of the summed loss w.r.t. its output.
    kernel_shape: (*kernel_size, cin / groups, cout).
  """
  batch = tf.shape(x)[0]
  cin, cout = x.shape[-1], dy.shape[-1]
  out_sizes = dy.shape[1:-1]
  dy = tf.reshape(dy, [batch, -1, groups, cout // groups])
  offsets = []
  for window in windows(x, kernel_size, strides, dilation, padding, out_sizes):
    window = tf.reshape(window, [batch, -1, groups, cin // groups])
    offsets.append(tf.einsum("btgi,btgo->bigo", window, dy))  # [B, cin/G, G, cout/G]
  return tf.reshape(tf.stack(offsets, axis=1), [-1, *kernel_shape])


def _bias_grads(dz):
  return tf.reduce_sum(dz, axis=list(range(1, dz.shape.rank - 1)))


class ConvRule(rules.LayerRule):
  """Exact per-example gradients of ordinary convolutions of any rank, groups and format."""

  def per_example_gradients(self, layer, a, dz):
    a, dz = channels_last(layer, a), channels_last(layer, dz)
    grads = [kernel_grads(a, dz, layer.kernel.shape, layer.kernel_size, layer.strides,
                          layer.dilation_rate, layer.padding, layer.groups)]
    if layer.use_bias:
      grads.append(_bias_grads(dz))
    return grads


class ConvTransposeRule(rules.LayerRule):
  """Exact per-example gradients of transposed convolutions (kernel [*k, filters, in])."""

  def per_example_gradients(self, layer, a, dz):
    a, dz = channels_last(layer, a), channels_last(layer, dz)
    # The ordinary convolution dz -> a with the same kernel, strides and dilation.
    grads = [kernel_grads(dz, a, layer.kernel.shape, layer.kernel_size, layer.strides,
                          layer.dilation_rate, layer.padding)]
    if layer.use_bias:
      grads.append(_bias_grads(dz))
    return grads


rules.register(tf.keras.layers.Conv1D, tf.keras.layers.Conv2D, tf.keras.layers.Conv3D)(ConvRule)
rules.register(tf.keras.layers.Conv1DTranspose, tf.keras.layers.Conv2DTranspose,
               tf.keras.layers.Conv3DTranspose)(ConvTransposeRule)
