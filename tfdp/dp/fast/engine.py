"""The fast engine: one forward, one backward, then per-layer closed forms.

Rows stay independent: without BatchNorm, row i of every layer's input `a` and output gradient `dz`
comes from example i alone, and each rule's squared norms read row i alone. The weighted sums
contract over rows, so before them the rows of weight 0 (padding, or an example whose gradient norm
is not finite) are zeroed in `a` and `dz` by selection: a zero weight times an inf or NaN would
still be NaN. A dropped example thus contributes exactly 0 (tfdp.dp.groups); the sensitivity is C.
"""

from typing import List

from absl import logging
import tensorflow as tf

from tfdp.dp.fast import graph
from tfdp.dp.fast import rules
from tfdp.dp import groups as groups_lib
from tfdp.dp import per_example
from tfdp import precision


class FastEngine:
  """Clipped per-example gradient sums of a functional Keras model.

  Args:
    model: a functional (or Sequential) Keras model without BatchNorm.
    clip_groups: None (flat), an int K, or 'layer' (see tfdp.dp.groups).
    scaling: the per-example rule, clip or normalize (see tfdp.dp.groups).
    augmult: copies per example (augmentation multiplicity): rows i*augmult .. i*augmult +
      augmult - 1 of a batch are example i's augmented copies, and example i's gradient is the mean
      of theirs, clipped as one. With augmult > 1 the norms come from each rule's
      squared_norms_of_copies (Conv2D: the copies' positions taken as one example's; other
      layers: materialized per-row gradients, summed per example), one layer at a time.
  """

  def __init__(self, model: tf.keras.Model, clip_groups: groups_lib.ClipGroups = None,
               scaling: groups_lib.Scaling = groups_lib.Scaling(), augmult: int = 1):
    self._model = model
    self._scaling = scaling
    self._augmult = augmult
    self._groups = groups_lib.variable_groups(model, clip_groups)
    self._graph = graph.tap(model, rules.rule_for)
    self.fast_layers = self._graph.layers
    self.fallback_layers = self._graph.fallback_layers
    if self.fallback_layers:
      logging.warning("%s", fallback_warning(self.fallback_layers))
    self._fallback_variables = [v for layer in self.fallback_layers
                                for v in layer.trainable_weights]
    self._position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}

  def __call__(self, loss_fn, images, labels, mask, l2_norm_clip):
    """(clipped sums per variable, losses [R], logits [R, K], whole-gradient L2 norms [B]).

    Args:
      images, labels: R = B * augmult rows, example-major.
      mask: [B], 1 for real examples and 0 for padding.

    Each example's gradient is clipped (per group) so the sum has L2 sensitivity l2_norm_clip;
    examples with mask 0 or a non-finite gradient norm contribute nothing.
    """
    row_mask = groups_lib.repeat_rows(mask, self._augmult)
    with tf.GradientTape() as tape:
      logits, inputs, outputs = self._graph.split(self._graph.model(images, training=True))
      losses = loss_fn(labels, logits)
      # Σ_i mask_i * mean_k loss_ik, padding selected out (its loss is never multiplied).
      total = tf.reduce_sum(tf.where(row_mask > 0, losses, tf.zeros_like(losses))) / self._augmult
    output_grads = tape.gradient(total, outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    # Under a mixed policy a and dz are bfloat16: every contraction from here on is float32, so
    # nothing is rounded after the clip (tfdp.precision).
    inputs = [graph.map_tensors(precision.to_float32, a) for a in inputs]
    output_grads = [precision.to_float32(dz) for dz in output_grads]
    fallback_grads = self._fallback_gradients(loss_fn, images, labels)
    materialized = self._materialized_gradients(inputs, output_grads)

    squared = self._squared_norms(inputs, output_grads, fallback_grads, materialized)
    weights = groups_lib.clip_weights(squared, self._groups, l2_norm_clip, mask, self._scaling)
    sums = self._weighted_sums(inputs, output_grads, fallback_grads, weights, materialized)
    return sums, losses, logits, groups_lib.whole_norms(squared)

  def _fallback_gradients(self, loss_fn, images, labels) -> List[tf.Tensor]:
    """[B, *shape] per-example gradients of the layers without a rule, one example at a time.

    Not the Jacobian of the batch's losses: that contracts every row into every other's gradient,
    so one inf or NaN example would make all of them NaN.
    """
    if not self._fallback_variables:
      return []
    grads, _, _ = per_example.gradients(self._model, loss_fn, images, labels,
                                                            self._fallback_variables)
    return [groups_lib.example_means(g, self._augmult) for g in grads]

  def _materialized_gradients(self, inputs, output_grads):
    """{layer index: per-example gradients [B, ...] per variable} for the rules without closed
    forms (normalization and embedding layers, whose per-example gradients are small), computed
    once and used for both the norms and the weighted sum. Empty with augmult > 1."""
    if self._augmult != 1:
      return {}
    return {i: rules.rule_for(layer).per_example_gradients(layer, a, dz)
            for i, (layer, a, dz) in enumerate(zip(self.fast_layers, inputs, output_grads))
            if rules.rule_for(layer).materializes}

  def _in_model_order(self, per_layer_values, fallback_values) -> List[tf.Tensor]:
    ordered = [None] * len(self._position)
    variables = [v for layer in self.fast_layers for v in layer.trainable_weights]
    for variable, value in zip(variables + self._fallback_variables,
                               per_layer_values + list(fallback_values)):
      ordered[self._position[variable.ref()]] = value
    return ordered

  def _layer_squared_norms(self, layer, a, dz):
    rule = rules.rule_for(layer)
    if self._augmult == 1:
      return rule.squared_norms(layer, a, dz)
    # dz already carries the 1/augmult of the mean, so an example's gradient is its rows' sum.
    return rule.squared_norms_of_copies(layer, a, dz, self._augmult)

  def _squared_norms(self, inputs, output_grads, fallback_grads, materialized):
    per_layer = []
    for i, (layer, a, dz) in enumerate(zip(self.fast_layers, inputs, output_grads)):
      if i in materialized:
        per_layer.extend(rules._row_squared_norms(g) for g in materialized[i])  # pylint: disable=protected-access
      else:
        per_layer.extend(self._layer_squared_norms(layer, a, dz))
    fallback = [rules._row_squared_norms(g) for g in fallback_grads]  # pylint: disable=protected-access
    return self._in_model_order(per_layer, fallback)

  def _weighted_sums(self, inputs, output_grads, fallback_grads, weights, materialized):
    weight_of = {v.ref(): weights[i] for v, i in
                 ((v, self._position[v.ref()]) for v in self._model.trainable_variables)}
    per_layer = []
    for i, (layer, a, dz) in enumerate(zip(self.fast_layers, inputs, output_grads)):
      if i in materialized:  # weighted_sum zeroes the rows of weight 0 (inf or NaN) first.
        per_layer.extend(groups_lib.weighted_sum(weight_of[v.ref()], g)
                         for v, g in zip(layer.trainable_weights, materialized[i]))
        continue
      layer_weights = groups_lib.repeat_rows(weight_of[layer.trainable_weights[0].ref()],
                                             self._augmult)  # One group per layer.
      kept = tf.not_equal(layer_weights, 0)
      a = graph.map_tensors(lambda t: groups_lib.zero_rows(t, kept), a)
      dz = groups_lib.zero_rows(dz, kept)
      per_layer.extend(rules.rule_for(layer).weighted_sum(layer, a, dz, layer_weights))
    fallback = [groups_lib.weighted_sum(weight_of[v.ref()], g)
                for v, g in zip(self._fallback_variables, fallback_grads)]
    return self._in_model_order(per_layer, fallback)


def fallback_warning(layers) -> str:
  """What the slow path costs, which layers take it and why, and how to give them a rule."""
  reasons = []
  for layer in layers:
    why = ("it is called more than once (shared weights)" if rules.rule_for(layer) is not None
           else f"no rule for {type(layer).__name__}" + (
               "" if not isinstance(layer, tf.keras.Model) else " (a model whose layers cannot "
               "be seen: build it as a functional model)"))
    reasons.append(f"{layer.name} ({why})")
  return ("fast clipping has no usable rule for " + ", ".join(reasons) + "; their per-example "
          "gradients are computed by running the whole model one example at a time (slow). "
          "Register a rule for a layer class with tfdp.keras.register_rule(LayerClass) (the "
          "per-layer vectorized rule) or register_rule(LayerClass, YourRule()).")
