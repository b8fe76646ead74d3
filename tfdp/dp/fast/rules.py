"""Registry of per-layer rules: layer class -> closed-form per-example gradients.

A rule answers, for one layer with inputs `a` [B, ...] and output gradients `dz` [B, ...] (the
gradient of the *summed* loss with respect to the layer's output; rows do not interact because the
model has no BatchNorm, so row i of dz is example i's own output gradient):
- `squared_norms(layer, a, dz)`: per variable in `layer.trainable_weights` order, [B] squared norms
  of each example's gradient;
- `squared_norms_of_copies(layer, a, dz, copies)`: with augmentation multiplicity, rows
  i*copies .. i*copies + copies - 1 are example i's copies and its gradient is their rows' sum;
  per variable, [B] squared norms of those sums (default: from materialized per-row gradients);
- `weighted_sum(layer, a, dz, weights)`: per variable, sum_i weights[i] * (example i's gradient).
  The engine zeroes the rows of `a` and `dz` whose weight is 0 before calling it (they may hold inf
  or NaN from a dropped example), so a rule may contract over rows with plain products.
A rule that overrides neither (it only gives `per_example_gradients`, small for normalization and
embedding layers) is `materializes`: the engine computes its per-example gradients once, takes the
norms from them, and zeroes the rows of weight 0 in them before the weighted sum.
A rule with closed forms may still say, per layer shape, that keeping its per-example parts is
cheaper (`keeps_per_example`): the engine then computes `per_example_parts` once and takes the norms
(`squared_norms_of_parts`) and the sum (`sum_of_parts`) from them, as for a rule that materializes.
"""

from typing import Callable, Dict, List, Optional, Type

import tensorflow as tf


class LayerRule:
  """Base rule: squared norms from materialized per-example gradients of one layer."""

  def supports(self, layer: tf.keras.layers.Layer) -> bool:  # pylint: disable=unused-argument
    return True

  def per_example_gradients(self, layer, a, dz) -> List[tf.Tensor]:
    raise NotImplementedError

  def squared_norms(self, layer, a, dz) -> List[tf.Tensor]:
    return [_row_squared_norms(g) for g in self.per_example_gradients(layer, a, dz)]

  def squared_norms_of_copies(self, layer, a, dz, copies: int) -> List[tf.Tensor]:
    return [_row_squared_norms(_copy_sums(g, copies))
            for g in self.per_example_gradients(layer, a, dz)]

  def weighted_sum(self, layer, a, dz, weights) -> List[tf.Tensor]:
    return [tf.tensordot(weights, g, axes=1) for g in self.per_example_gradients(layer, a, dz)]

  def squared_norms_given_output(self, layer, a, dz, z, copies: int) -> List[tf.Tensor]:
    """`squared_norms` (copies == 1) or `squared_norms_of_copies`, for a rule that can also read
    the layer's pre-activation output z (rows as dz's, in the model's compute dtype) instead of
    recomputing it. The engine calls this one."""
    del z
    if copies == 1:
      return self.squared_norms(layer, a, dz)
    return self.squared_norms_of_copies(layer, a, dz, copies)

  def keeps_per_example(self, layer, a, dz) -> bool:  # pylint: disable=unused-argument
    """Whether, for this layer and these shapes, the engine should compute the per-example parts
    once and take both the norms and the weighted sum from them."""
    return self.materializes

  def per_example_parts(self, layer, a, dz) -> List[tf.Tensor]:
    """[B, ...] tensors from which `squared_norms_of_parts` and `sum_of_parts` answer; row i is
    example i's alone. Default: the per-example gradients of the layer's variables."""
    return self.per_example_gradients(layer, a, dz)

  def squared_norms_of_parts(self, layer, parts) -> List[tf.Tensor]:
    """Per variable, [B] squared norms of each example's gradient, from `per_example_parts`."""
    del layer
    return [_row_squared_norms(g) for g in parts]

  def sum_of_parts(self, layer, parts, weights) -> List[tf.Tensor]:
    """Per variable, sum_i weights[i] * (example i's gradient), from `per_example_parts` whose rows
    of weight 0 the engine has zeroed."""
    del layer
    return [tf.tensordot(weights, g, axes=1) for g in parts]

  @property
  def materializes(self) -> bool:
    """Whether both answers come from materialized per-example gradients (no closed form for
    either), so the engine may compute those once and take the norms and the sum from them."""
    rule = type(self)
    return (rule.squared_norms is LayerRule.squared_norms
            and rule.weighted_sum is LayerRule.weighted_sum)


def _row_squared_norms(per_example: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.reshape(tf.square(per_example), [tf.shape(per_example)[0], -1]), axis=1)


def _copy_sums(per_row: tf.Tensor, copies: int) -> tf.Tensor:
  """[B * copies, ...] -> [B, ...], the sum over each example's consecutive rows."""
  shape = tf.shape(per_row)
  return tf.reduce_sum(tf.reshape(per_row, tf.concat([[-1, copies], shape[1:]], 0)), axis=1)


RULES: Dict[Type[tf.keras.layers.Layer], List[LayerRule]] = {}


def register(*layer_classes: Type[tf.keras.layers.Layer]) -> Callable:
  """Class decorator: registers one instance of the rule for each layer class (exact type), after
  the rules already registered for it (rule_for takes the first that supports a layer)."""

  def add(rule_class):
    for layer_class in layer_classes:
      RULES.setdefault(layer_class, []).append(rule_class())
    return rule_class

  return add


def rule_for(layer: tf.keras.layers.Layer) -> Optional[LayerRule]:
  """The first rule registered for `layer`'s exact class that supports its configuration."""
  for rule in RULES.get(type(layer), ()):
    if rule.supports(layer):
      return rule
  return None
