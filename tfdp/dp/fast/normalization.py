"""GroupNormalization and LayerNormalization affine parameters.

y = gamma * x_hat + beta, with x_hat normalized within each example, so example i's gradients are
sum over positions of dz_i * x_hat_i (gamma) and of dz_i (beta), per channel.
"""

import tensorflow as tf

from tfdp.dp.fast import rules
from tfdp.models import layers as model_layers


def _layer_normalized(layer, x):
  mean, var = tf.nn.moments(x, axes=layer.axis, keepdims=True)
  return (x - mean) * tf.math.rsqrt(var + layer.epsilon)


class _AffineNormRule(rules.LayerRule):
  """Shared: gradients of (gamma, beta) per example, summed over the non-channel positions."""

  def normalized(self, layer, x):
    raise NotImplementedError

  def per_example_gradients(self, layer, a, dz):
    positions = list(range(1, dz.shape.rank - 1))
    grads = []
    if layer.scale:
      grads.append(tf.reduce_sum(dz * self.normalized(layer, a), axis=positions))
    if layer.center:
      grads.append(tf.reduce_sum(dz, axis=positions))
    return grads


def _normalizes_last_axis_only(layer, axis) -> bool:
  rank = layer.input.shape.rank
  axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
  return axes == [rank - 1]


@rules.register(tf.keras.layers.GroupNormalization, model_layers.GroupNormalization)
class GroupNormRule(_AffineNormRule):
  """Per-channel sums of dz * x_hat and dz from two batched reductions, x_hat never formed."""

  def supports(self, layer) -> bool:
    return _normalizes_last_axis_only(layer, layer.axis) and layer.scale and layer.center

  def per_example_gradients(self, layer, a, dz):
    return list(model_layers.group_norm_example_gradients(layer, a, dz))


@rules.register(tf.keras.layers.LayerNormalization)
class LayerNormRule(_AffineNormRule):

  def supports(self, layer) -> bool:
    return _normalizes_last_axis_only(layer, layer.axis)

  normalized = staticmethod(_layer_normalized)
