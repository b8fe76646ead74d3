"""Conv2D and WSConv2D: per-example kernel gradients from image patches.

Example i's kernel gradient is patches(a_i)^T dz_i: [kh*kw*cin, T] x [T, cout] over the T output
positions. The weighted sum over examples is TensorFlow's own filter-gradient op applied to the
reweighted output gradients, so it costs what a non-private backward pass costs for that layer.
For weight-standardized convolutions the gradient with respect to the standardized kernel is carried
back to the raw kernel through the standardization's (linear) vector-Jacobian product.
"""

import functools

import numpy as np
import tensorflow as tf

from tfdp import cpu
from tfdp.dp.fast import rules
from tfdp.models import layers as model_layers


def _patches(layer, a):
  """[B, H, W, cin] -> [B, T, kh*kw*cin], ordered like the kernel's [kh, kw, cin] axes."""
  kh, kw = layer.kernel_size
  patches = tf.image.extract_patches(
      a, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
      rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
  return tf.reshape(patches, [tf.shape(a)[0], -1, kh * kw * a.shape[-1]])


def _same_padding(size: int, kernel: int, stride: int, dilation: int):
  """(before, after) padding of one spatial axis under padding='same', as TF convolutions pad."""
  effective = (kernel - 1) * dilation + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + effective - size, 0)
  return total // 2, total - total // 2


def _shifted_kernel_grads(layer, a, dz):
  """Stride-1 path: one batched matmul per kernel offset over shifted views of the input.

  Avoids materializing all kh*kw patches at once; measured about 1.7x faster than extract_patches
  for ResNet-20's stride-1 layers on CPU.
  """
  out_h, out_w = dz.shape[1], dz.shape[2]
  dz_tokens = tf.reshape(dz, [tf.shape(dz)[0], -1, dz.shape[-1]])
  rows = []
  for window in _shifted_windows(layer, a, out_h, out_w):
    window = tf.reshape(window, [tf.shape(a)[0], -1, a.shape[-1]])
    rows.append(tf.linalg.matmul(window, dz_tokens, transpose_a=True))  # [B, cin, cout]
  return tf.reshape(tf.stack(rows, axis=1), [-1, *layer.kernel.shape])


# Examples per grouped filter-gradient call (_grouped_kernel_grads). ResNet-20, 64 rows, AMD EPYC
# (AVX-512), against the nine shifted matmuls: 32x32x16 layers about 1.7x faster with 16 (8: 1.5x,
# 64 in one call: 1.1x, 2 or 4: slower), 16x16x32 about 1.15x; 8x8x64 slower (those take the
# Gram path anyway). benchmarks/fast_engine_parts.py measures the whole engine.
EXAMPLES_PER_GROUPED_CALL = 16


@functools.lru_cache(maxsize=None)
def grouped_filter_gradients() -> bool:
  """Whether this TensorFlow computes grouped filter gradients: with oneDNN's kernels on (which
  tfdp sets by default). TensorFlow's own CPU kernel refuses a grouped Conv2DBackpropFilter."""
  return cpu.onednn_enabled()


def _grouped_kernel_grads(layer, a, dz):
  """[B, kh, kw, cin, cout] as grouped filter gradients, EXAMPLES_PER_GROUPED_CALL at a time.

  n examples side by side on the channel axis ([1, H, W, n * cin], example-major) are one image
  whose convolution with n groups is each example's own convolution; the filter gradient of that
  grouped convolution is [kh, kw, cin, n * cout], group g's block example g's kernel gradient.
  One oneDNN call per n examples instead of B small matmuls per kernel offset. Needs a static B.
  """
  per_call, grads = EXAMPLES_PER_GROUPED_CALL, []
  for start in range(0, a.shape[0], per_call):
    a_part, dz_part = a[start:start + per_call], dz[start:start + per_call]
    count = a_part.shape[0]
    image = tf.reshape(tf.transpose(a_part, [1, 2, 0, 3]), [1, *a.shape[1:3], count * a.shape[3]])
    grad = tf.reshape(tf.transpose(dz_part, [1, 2, 0, 3]),
                      [1, *dz.shape[1:3], count * dz.shape[3]])
    kernel = tf.compat.v1.nn.conv2d_backprop_filter(
        image, [*layer.kernel.shape[:3], count * dz.shape[3]], grad,
        strides=[1, *layer.strides, 1], padding=layer.padding.upper(),
        dilations=[1, *layer.dilation_rate, 1])
    grads.append(tf.transpose(tf.reshape(kernel, [*layer.kernel.shape[:3], count, dz.shape[3]]),
                              [3, 0, 1, 2, 4]))
  return tf.concat(grads, axis=0)


def _per_example_kernel_grads(layer, a, dz):
  """[B, kh, kw, cin, cout]: each example's gradient w.r.t. the kernel used in the convolution."""
  if grouped_filter_gradients() and a.shape[0] is not None:
    return _grouped_kernel_grads(layer, a, dz)
  if tuple(layer.strides) == (1, 1):
    return _shifted_kernel_grads(layer, a, dz)
  dz_tokens = tf.reshape(dz, [tf.shape(dz)[0], -1, dz.shape[-1]])
  grads = tf.linalg.matmul(_patches(layer, a), dz_tokens, transpose_a=True)
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


def standardized_vjp_squared_norms(kernel: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
  """[B] squared norms of standardize_vjp(kernel, grads[i]), without forming the vjp.

  With m1 = mean(G), m2 = mean(G * w_hat), r = mean(w_hat^2) per output channel over n entries:
  ||G - m1 - m2 w_hat||^2 = ||G||^2 - n m1^2 - n m2^2 (2 - r) (w_hat has zero mean), divided by s^2.
  """
  mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
  inv_var = 1.0 / (var + model_layers.WS_EPSILON)
  w_hat = (kernel - mean) * tf.sqrt(inv_var)
  n = float(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
  axes = [1, 2, 3]
  m1 = tf.reduce_mean(grads, axis=axes)  # [B, cout]
  m2 = tf.reduce_mean(grads * w_hat, axis=axes)
  ratio = tf.reduce_mean(tf.square(w_hat), axis=[0, 1, 2])  # [cout]
  per_channel = (tf.reduce_sum(tf.square(grads), axis=axes) - n * tf.square(m1)
                 - n * tf.square(m2) * (2.0 - ratio))
  return tf.reduce_sum(per_channel * tf.reshape(inv_var, [-1]), axis=1)


def _ghost_kernel_squared_norms(layer, a, dz, copies: int = 1, z=None):
  """[B] squared kernel-gradient norms from T x T Gram matrices, never forming the gradient.

  With P_i = patches(a_i) [T, K] and D_i = dz_i [T, C], example i's gradient is G_i = P_i^T D_i and
  ||G_i[:, c]||^2 = D_i[:, c]^T (P_i P_i^T) D_i[:, c]: cost T^2 (K + C) instead of T K C, chosen when
  T^2 < K C (late layers with small feature maps). For WSConv2D the closed form of
  `standardized_vjp_squared_norms` needs only per-channel means of G and of G * w_hat, which are
  (sum_k P) D / n and (P w_hat) . D / n. With `copies` > 1, rows i*copies .. i*copies + copies - 1
  of `a` and `dz` are example i's copies, whose gradient is the sum of theirs: their T positions
  each are concatenated into example i's copies * T. P w_hat is the convolution the layer computed:
  read from its pre-activation output `z` (minus the bias) where z is float32, else recomputed.
  """
  d = tf.reshape(dz, [-1, copies * dz.shape[1] * dz.shape[2], dz.shape[-1]])  # [B, T', C]
  if tuple(layer.strides) == (1, 1):
    gram = _patch_gram_from_inputs(layer, a, dz.shape[1], dz.shape[2], copies)
  else:
    gram = _patch_gram(_example_patches(layer, a, copies))
  per_channel = tf.reduce_sum(tf.linalg.matmul(gram, d) * d, axis=1)  # [B, C] = ||G[:, c]||^2
  if not isinstance(layer, model_layers.WSConv2D):
    return tf.reduce_sum(per_channel, axis=1)
  kernel = layer.kernel
  mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
  inv_var = 1.0 / (var + model_layers.WS_EPSILON)
  w_hat = (kernel - mean) * tf.sqrt(inv_var)  # [kh, kw, cin, C]
  n = float(np.prod(w_hat.shape[:3]))
  patch_sums, projected = _patch_sums_and_projections(layer, a, w_hat, z)
  m1 = tf.einsum("bt,btc->bc", tf.reshape(patch_sums, [-1, d.shape[1]]), d) / n
  m2 = tf.reduce_sum(tf.reshape(projected, tf.shape(d)) * d, axis=1) / n
  w_hat = tf.reshape(w_hat, [-1, w_hat.shape[-1]])  # [K, C]
  ratio = tf.reduce_mean(tf.square(w_hat), axis=0)
  corrected = per_channel - n * tf.square(m1) - n * tf.square(m2) * (2.0 - ratio)
  return tf.reduce_sum(corrected * tf.reshape(inv_var, [-1]), axis=1)


def _patch_sums_and_projections(layer, a, w_hat, z):
  """Each output position's patch summed (P 1, [R, oh, ow]) and projected on w_hat (P w_hat,
  [R, oh, ow, C]): convolutions of the input, the layer's own strides, padding and dilation making
  its patches. P 1 convolves the channel sum with ones. P w_hat is z minus the bias when the
  layer's output z is float32 (not rounded), else it is recomputed."""
  conv = lambda x, kernel: tf.nn.conv2d(x, kernel, strides=layer.strides,
                                        padding=layer.padding.upper(),
                                        dilations=layer.dilation_rate)
  patch_sums = conv(tf.reduce_sum(a, axis=-1, keepdims=True),
                    tf.ones([*w_hat.shape[:2], 1, 1], w_hat.dtype))[..., 0]
  if z is not None and z.dtype == tf.float32:
    return patch_sums, (z - layer.bias if layer.use_bias else z)
  return patch_sums, conv(a, w_hat)


def _example_patches(layer, a, copies: int):
  """[B, copies * T, K]: each example's patches, its copies' positions one after another."""
  patches = _patches(layer, a)  # [R, T, K]
  return tf.reshape(patches, [-1, copies * patches.shape[1], patches.shape[2]])


def _patch_gram(patches):
  return tf.linalg.matmul(patches, patches, transpose_b=True)


def _patch_gram_from_inputs(layer, a, out_h: int, out_w: int, copies: int):
  """[B, T', T'] = P P^T of each example's patches (stride 1), from its input positions' Gram.

  A patch is the concatenation over kernel offsets o of the padded input at t + o, so
  (P P^T)[t, s] = sum_o G[t + o, s + o] with G the Gram of the padded input positions (all of an
  example's copies together; a copy's positions never reach another's). That costs Tp^2 cin for G
  (Tp padded positions) instead of T'^2 kh kw cin, then kh + kw slices.
  """
  (kh, kw), (dh, dw) = layer.kernel_size, layer.dilation_rate
  if layer.padding == "same":
    pads = [_same_padding(a.shape[1], kh, 1, dh), _same_padding(a.shape[2], kw, 1, dw)]
    a = tf.pad(a, [[0, 0], pads[0], pads[1], [0, 0]])
  height, width, channels = a.shape[1], a.shape[2], a.shape[3]
  tokens = tf.reshape(a, [-1, copies * height * width, channels])
  gram = tf.reshape(tf.linalg.matmul(tokens, tokens, transpose_b=True),
                    [-1, copies, height, width, copies, height, width])
  # The sum over offsets (u, v) taken as a sum over v, then one over u: kh + kw slices instead of
  # kh * kw, the last kh of them over out_w of the width only.
  cols = [slice(v * dw, v * dw + out_w) for v in range(kw)]
  by_column = tf.add_n([gram[:, :, :, c, :, :, c] for c in cols])  # [B, K, H, out_w, K, H, out_w]
  rows = [slice(u * dh, u * dh + out_h) for u in range(kh)]
  total = tf.add_n([by_column[:, :, r, :, :, r, :] for r in rows])  # [B, K, oh, ow, K, oh, ow]
  outputs = copies * out_h * out_w
  return tf.reshape(total, [-1, outputs, outputs])


def _ghost_is_cheaper(layer, dz, copies: int) -> bool:
  """Whether T'^2 (an example's output positions, its copies' together, squared) is below K*C:
  the Gram matrices then cost less than the materialized kernel gradients."""
  positions = copies * dz.shape[1] * dz.shape[2]
  return positions * positions < np.prod(layer.kernel.shape)


def _bias_squared_norms(dz, copies: int = 1):
  """[B] squared norms of each example's bias gradient: its rows' dz summed over positions."""
  per_row = tf.reduce_sum(dz, axis=[1, 2])  # [R, C]
  return tf.reduce_sum(tf.square(tf.reduce_sum(
      tf.reshape(per_row, [-1, copies, per_row.shape[-1]]), axis=1)), axis=1)


@rules.register(tf.keras.layers.Conv2D, model_layers.WSConv2D)
class Conv2DRule(rules.LayerRule):
  """Exact per-example gradients of Conv2D / WSConv2D (any stride, padding, kernel, dilation)."""

  def supports(self, layer) -> bool:  # Any activation: the engine gives the pre-activation dz.
    return layer.groups == 1 and layer.data_format == "channels_last"

  def _to_raw(self, layer, kernel_grads):
    if isinstance(layer, model_layers.WSConv2D):
      return standardize_vjp(layer.kernel, kernel_grads)
    return kernel_grads

  def squared_norms(self, layer, a, dz):
    return self.squared_norms_of_copies(layer, a, dz, 1)

  def squared_norms_of_copies(self, layer, a, dz, copies: int):
    return self.squared_norms_given_output(layer, a, dz, None, copies)

  def squared_norms_given_output(self, layer, a, dz, z, copies: int):
    if _ghost_is_cheaper(layer, dz, copies):
      kernel = _ghost_kernel_squared_norms(layer, a, dz, copies, z)
    else:
      kernel = self._materialized_kernel_squared_norms(layer, a, dz, copies)
    norms = [kernel]
    if layer.use_bias:
      norms.append(_bias_squared_norms(dz, copies))
    return norms

  def _materialized_kernel_squared_norms(self, layer, a, dz, copies: int):
    kernel_grads = _per_example_kernel_grads(layer, a, dz)
    if copies > 1:
      kernel_grads = rules._copy_sums(kernel_grads, copies)  # pylint: disable=protected-access
    return self._kernel_squared_norms_of(layer, kernel_grads)

  def _kernel_squared_norms_of(self, layer, kernel_grads):
    """[B] squared norms of the raw-kernel gradients, given those w.r.t. the kernel used."""
    if isinstance(layer, model_layers.WSConv2D):
      return standardized_vjp_squared_norms(layer.kernel, kernel_grads)
    return rules._row_squared_norms(kernel_grads)  # pylint: disable=protected-access

  def per_example_gradients(self, layer, a, dz):
    return [self._to_raw(layer, g) if k == 0 else g
            for k, g in enumerate(self.per_example_parts(layer, a, dz))]

  def keeps_per_example(self, layer, a, dz) -> bool:
    """Where the norms come from materialized kernel gradients anyway, the weighted sum is a
    contraction of those ([B] x [B, K*C]) instead of a second filter-gradient pass over a and dz."""
    return not _ghost_is_cheaper(layer, dz, 1)

  def per_example_parts(self, layer, a, dz):
    """Kernel gradients w.r.t. the kernel the convolution used (the standardized one for
    WSConv2D: the vjp to the raw kernel is linear, so it is applied to the sum alone), and bias
    gradients."""
    parts = [_per_example_kernel_grads(layer, a, dz)]
    if layer.use_bias:
      parts.append(tf.reduce_sum(dz, axis=[1, 2]))
    return parts

  def squared_norms_of_parts(self, layer, parts):
    return [self._kernel_squared_norms_of(layer, parts[0])] + [
        rules._row_squared_norms(g) for g in parts[1:]]  # pylint: disable=protected-access

  def sum_of_parts(self, layer, parts, weights):
    sums = [tf.tensordot(weights, g, axes=1) for g in parts]
    return [self._to_raw(layer, sums[0])] + sums[1:]

  def weighted_sum(self, layer, a, dz, weights):
    weighted = dz * weights[:, None, None, None]
    kernel_sum = tf.compat.v1.nn.conv2d_backprop_filter(
        a, tf.shape(layer.kernel), weighted, strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(), dilations=[1, *layer.dilation_rate, 1])
    sums = [self._to_raw(layer, kernel_sum)]
    if layer.use_bias:
      sums.append(tf.reduce_sum(weighted, axis=[0, 1, 2]))
    return sums


def _shifted_windows(layer, a, out_h: int, out_w: int):
  """Yields, per kernel offset (u, v) in kernel order, the input window each output reads there.

  Each window is [B, out_h, out_w, cin]: input[h * stride + u * dilation, w * stride + v * dilation]
  after the layer's padding.
  """
  (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
  if layer.padding == "same":
    pads = [_same_padding(a.shape[1], kh, sh, dh), _same_padding(a.shape[2], kw, sw, dw)]
    a = tf.pad(a, [[0, 0], pads[0], pads[1], [0, 0]])
  for u in range(kh):
    for v in range(kw):
      yield a[:, u * dh:u * dh + (out_h - 1) * sh + 1:sh, v * dw:v * dw + (out_w - 1) * sw + 1:sw, :]


def depthwise_kernel_grads(layer, a, dz):
  """[B, kh, kw, cin, multiplier]: each example's depthwise-kernel gradient (channels last)."""
  batch, out_h, out_w = tf.shape(dz)[0], dz.shape[1], dz.shape[2]
  channels, multiplier = a.shape[-1], layer.depth_multiplier
  dz_split = tf.reshape(dz, [batch, out_h, out_w, channels, multiplier])
  # A product and a sum over positions per offset: an einsum here became a transposed batched
  # matmul per channel, several times slower on CPU.
  offsets = [tf.reduce_sum(window[..., None] * dz_split, axis=[1, 2])  # [B, C, m]
             for window in _shifted_windows(layer, a, out_h, out_w)]
  return tf.reshape(tf.stack(offsets, axis=1), [-1, *layer.depthwise_kernel.shape])


@rules.register(tf.keras.layers.DepthwiseConv2D)
class DepthwiseConv2DRule(rules.LayerRule):
  """Exact per-example gradients of DepthwiseConv2D (any stride, padding, depth multiplier).

  Example i's kernel gradient at offset (u, v), channel c, multiplier m is
  sum over output positions of window_uv[i, ., ., c] * dz[i, ., ., c * multiplier + m].
  """

  def supports(self, layer) -> bool:
    return layer.data_format == "channels_last"

  def per_example_gradients(self, layer, a, dz):
    grads = [depthwise_kernel_grads(layer, a, dz)]
    if layer.use_bias:
      grads.append(tf.reduce_sum(dz, axis=[1, 2]))
    return grads

  def weighted_sum(self, layer, a, dz, weights):
    weighted = dz * weights[:, None, None, None]
    kernel_sum = tf.compat.v1.nn.depthwise_conv2d_native_backprop_filter(
        a, tf.shape(layer.depthwise_kernel), weighted, strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(), dilations=[1, *layer.dilation_rate, 1])
    sums = [kernel_sum]
    if layer.use_bias:
      sums.append(tf.reduce_sum(weighted, axis=[0, 1, 2]))
    return sums
