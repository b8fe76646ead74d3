"""Dense: example i's kernel gradient is sum_t a_it^T dz_it; its bias gradient sum_t dz_it."""

import tensorflow as tf

from tfdp.dp.fast import rules


def _flatten_tokens(x):
  """[B, ..., d] -> [B, T, d] (T = 1 for plain [B, d] inputs)."""
  return tf.reshape(x, [tf.shape(x)[0], -1, tf.shape(x)[-1]])


@rules.register(tf.keras.layers.Dense)
class DenseRule(rules.LayerRule):
  """Exact per-example gradients of tf.keras.layers.Dense (any input rank, any activation: the
  engine hands every rule the gradient of the pre-activation output)."""

  def per_example_gradients(self, layer, a, dz):
    a, dz = _flatten_tokens(a), _flatten_tokens(dz)
    grads = [tf.einsum("bti,bto->bio", a, dz)]
    if layer.use_bias:
      grads.append(tf.reduce_sum(dz, axis=1))
    return grads

  def squared_norms(self, layer, a, dz):
    a, dz = _flatten_tokens(a), _flatten_tokens(dz)
    tokens = a.shape[1]
    if tokens == 1:  # Ghost norm: ||a^T dz||^2 = ||a||^2 ||dz||^2 without forming the outer product.
      kernel = tf.reduce_sum(tf.square(a), axis=[1, 2]) * tf.reduce_sum(tf.square(dz), axis=[1, 2])
    elif tokens * tokens <= a.shape[2] * dz.shape[2]:  # Ghost norm over token pairs is cheaper.
      kernel = tf.reduce_sum(tf.matmul(a, a, transpose_b=True) * tf.matmul(dz, dz, transpose_b=True),
                             axis=[1, 2])
    else:
      kernel = rules._row_squared_norms(tf.einsum("bti,bto->bio", a, dz))  # pylint: disable=protected-access
    norms = [kernel]
    if layer.use_bias:
      norms.append(tf.reduce_sum(tf.square(tf.reduce_sum(dz, axis=1)), axis=1))
    return norms

  def weighted_sum(self, layer, a, dz, weights):
    a, dz = _flatten_tokens(a), _flatten_tokens(dz)
    weighted = dz * weights[:, None, None]
    sums = [tf.einsum("bti,bto->io", a, weighted)]
    if layer.use_bias:
      sums.append(tf.reduce_sum(weighted, axis=[0, 1]))
    return sums
