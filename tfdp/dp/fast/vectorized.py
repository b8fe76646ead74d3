"""The per-layer vectorized rule: any per-example layer, one layer (not the model) per example.

Example i's gradient of a layer's weights is the vector-Jacobian product of the layer's
pre-activation output at row i with the output gradient dz_i (the chain rule; row i of dz is
example i's own when no layer mixes examples). This rule computes that product for every row at
once with `tf.vectorized_map` over the layer alone, so it needs no closed form: it covers layers
that take several inputs (MultiHeadAttention's query and value), EinsumDense, PReLU, normalization
over other axes, and custom layers registered with tfdp.keras.register_rule. Its per-example
gradients are materialized, and the engine takes both the norms and the clipped sum from the same
tensors, so the sensitivity bound holds even if the recomputed call differed from the forward pass
(a layer with dropout inside: the recomputation runs in inference mode).
"""

import tensorflow as tf

from tfdp.dp import per_example
from tfdp.dp.fast import graph
from tfdp.dp.fast import rules
from tfdp.models import layers as model_layers


class VectorizedRule(rules.LayerRule):
  """Per-example gradients of any layer by a vectorized per-row vector-Jacobian product."""

  vectorize = True  # False: one row after another (ops TensorFlow cannot vectorize).

  def per_example_gradients(self, layer, a, dz):
    tensors = a.tensors if isinstance(a, graph.CallInputs) else [a]
    call = (lambda values: a.call(layer, values)) if isinstance(a, graph.CallInputs) else (
        lambda values: layer(values[0]))

    def one_example(example):
      inputs, output_grad = example
      with tf.GradientTape() as tape:
        with graph.activation_off(layer):
          z = call([t[None] for t in inputs])
      return tape.gradient(z, layer.trainable_weights, output_gradients=output_grad[None],
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return list(per_example.map_examples(one_example, (tensors, dz), self.vectorize))


class SequentialRule(VectorizedRule):
  """The same products one example after another: for Keras's LSTM and GRU, whose kernels
  tf.vectorized_map cannot convert. Exact; slower than a closed form, but per layer, not per
  whole model."""

  vectorize = False


def register_rule(layer_class, rule=None) -> None:
  """Registers `rule` for `layer_class` ahead of any rule it had (tfdp.keras.register_rule).

  Args:
    layer_class: the exact layer class (subclasses need their own registration).
    rule: a tfdp.dp.fast.rules.LayerRule instance or subclass; None registers VectorizedRule,
      exact for any layer that treats each example alone.

  A rule's answers must be example i's own gradient for row i: check yours against one example at
  a time, as tests/test_keras_models.py does.
  """
  rule = VectorizedRule() if rule is None else rule
  if isinstance(rule, type):
    rule = rule()
  if not isinstance(rule, rules.LayerRule):
    raise ValueError(f"rule must be a tfdp.dp.fast.rules.LayerRule, got {type(rule).__name__}")
  rules.RULES[layer_class] = [rule] + rules.RULES.get(layer_class, [])


rules.register(tf.keras.layers.EinsumDense, tf.keras.layers.MultiHeadAttention,
               tf.keras.layers.PReLU, tf.keras.layers.LayerNormalization,
               tf.keras.layers.GroupNormalization, model_layers.GroupNormalization,
               tf.keras.layers.SeparableConv1D, tf.keras.layers.DepthwiseConv1D,
               tf.keras.layers.SimpleRNN, tf.keras.layers.TimeDistributed)(VectorizedRule)
rules.register(tf.keras.layers.LSTM, tf.keras.layers.GRU,
               tf.keras.layers.Bidirectional)(SequentialRule)
