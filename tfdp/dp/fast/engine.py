"""The fast engine: one forward, one backward, then per-layer closed forms.

Rows stay independent: without BatchNorm, row i of every layer's input `a` and output gradient `dz`
comes from example i alone, and each rule's squared norms read row i alone. The weighted sums
contract over rows, so before them the rows of weight 0 (padding, or an example whose gradient norm
is not finite) are zeroed in `a` and `dz` by selection: a zero weight times an inf or NaN would
still be NaN. A dropped example thus contributes exactly 0 (tfdp.dp.groups); the sensitivity is C.

Where a layer's per-example parts are kept (materialized kernel gradients of a convolution, the
(gamma, beta) gradients of a normalization layer), the norms and the weighted sum are both taken
from those same [B, ...] tensors, so the sum is the sum of exactly the gradients whose norms set
the clip factors; their rows of weight 0 are zeroed the same way. The (gamma, beta) gradients that
tfdp's GroupNormalization forms in its own backward pass (recorded there, by layer) are that
layer's per-example gradients by the same formula as its rule's: row i reads example i's input and
output gradient alone. The order in which layers are processed (one at a time, for memory) changes
no value. Nothing here is released but the noised sum (the optimizers add the noise).
"""

from typing import List

from absl import logging
import tensorflow as tf

from tfdp.dp.fast import graph
from tfdp.dp.fast import rules
from tfdp.dp import groups as groups_lib
from tfdp.dp import per_example
from tfdp import precision
from tfdp.models import layers as model_layers


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
    with model_layers.recording_example_gradients() as recorded:
      output_grads = tape.gradient(total, outputs,
                                   unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    # Under a mixed policy a and dz are bfloat16: every contraction from here on is float32, so
    # nothing is rounded after the clip (tfdp.precision).
    inputs = [graph.map_tensors(precision.to_float32, a) for a in inputs]
    output_grads = [precision.to_float32(dz) for dz in output_grads]
    fallback_grads = self._fallback_gradients(loss_fn, images, labels)
    materialized, layer_norms = self._layer_norms(inputs, output_grads, outputs, recorded)

    squared = self._in_model_order(
        [n for norms in layer_norms for n in norms],
        [rules._row_squared_norms(g) for g in fallback_grads])  # pylint: disable=protected-access
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

  def _layer_norms(self, inputs, output_grads, outputs, recorded):
    """({layer index: per-example parts}, per layer its variables' [B] squared norms).

    A layer whose rule keeps its per-example parts (rules.LayerRule.keeps_per_example: normalization
    and embedding layers, whose per-example gradients are small; convolutions where the norms
    materialize the kernel gradients anyway) has them computed once here, for both its norms and
    its weighted sum; none are kept with augmult > 1. Parts that the backward pass recorded (the
    per-example gradients tfdp's GroupNormalization forms there anyway: `recorded`, by layer id)
    are taken as they are.
    The layers go one after another, last first (the order the backward pass yields their dz), so
    one layer's intermediates are alive at a time and a layer's dz can be freed as soon as its
    parts are computed, instead of every layer's at once.
    """
    kept, norms, previous = {}, [None] * len(self.fast_layers), []
    for i in reversed(range(len(self.fast_layers))):
      layer, rule = self.fast_layers[i], rules.rule_for(self.fast_layers[i])
      a, dz, z = _after(previous, inputs[i], output_grads[i], outputs[i])
      if self._augmult == 1 and rule.keeps_per_example(layer, a, dz):
        kept[i] = recorded.get(id(layer)) or rule.per_example_parts(layer, a, dz)
        norms[i] = rule.squared_norms_of_parts(layer, kept[i])
      else:
        # dz already carries the 1/augmult of the mean: an example's gradient is its rows' sum.
        norms[i] = rule.squared_norms_given_output(layer, a, dz, z, self._augmult)
      previous = norms[i]
    return kept, norms

  def _in_model_order(self, per_layer_values, fallback_values) -> List[tf.Tensor]:
    ordered = [None] * len(self._position)
    variables = [v for layer in self.fast_layers for v in layer.trainable_weights]
    for variable, value in zip(variables + self._fallback_variables,
                               per_layer_values + list(fallback_values)):
      ordered[self._position[variable.ref()]] = value
    return ordered

  def _weighted_sums(self, inputs, output_grads, fallback_grads, weights, materialized):
    weight_of = {v.ref(): weights[i] for v, i in
                 ((v, self._position[v.ref()]) for v in self._model.trainable_variables)}
    per_layer, previous = [None] * len(self.fast_layers), []
    for i in reversed(range(len(self.fast_layers))):  # One layer at a time, as _layer_norms.
      layer = self.fast_layers[i]
      layer_weights = weight_of[layer.trainable_weights[0].ref()]  # One group per layer.
      if i in materialized:  # Rows of weight 0 (inf or NaN) zeroed first.
        kept = tf.not_equal(layer_weights, 0)
        parts = [groups_lib.zero_rows(g, kept) for g in _after(previous, *materialized[i])]
        per_layer[i] = rules.rule_for(layer).sum_of_parts(layer, parts, layer_weights)
      else:
        layer_weights = groups_lib.repeat_rows(layer_weights, self._augmult)
        kept = tf.not_equal(layer_weights, 0)
        a, dz = _after(previous, inputs[i], output_grads[i])
        a = graph.map_tensors(lambda t, kept=kept: groups_lib.zero_rows(t, kept), a)
        dz = groups_lib.zero_rows(dz, kept)
        per_layer[i] = rules.rule_for(layer).weighted_sum(layer, a, dz, layer_weights)
      previous = per_layer[i]
    per_layer = [value for sums in per_layer for value in sums]
    fallback = [groups_lib.weighted_sum(weight_of[v.ref()], g)
                for v, g in zip(self._fallback_variables, fallback_grads)]
    return self._in_model_order(per_layer, fallback)


def _after(previous: List[tf.Tensor], *values):
  """`values` (tensors or CallInputs), read only once every tensor of `previous` is computed.

  In a graph this orders the per-layer work, which would otherwise all become ready together at
  the end of the backward pass and hold every layer's intermediates at once; eagerly it is a no-op.
  """
  with tf.control_dependencies(previous):
    return [graph.map_tensors(tf.identity, v) for v in values]


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
