"""The tapped graph: a functional model re-wired so every trainable layer's rule can be read.

The fast engine needs, for each trainable layer, its input `a` and the gradient `dz` of the summed
loss with respect to its *pre-activation* output. A Keras layer written the usual way fuses its
activation (`Dense(64, activation="relu")`), so its output is act(z), not z. `tap` rebuilds the
model's graph over the same layer objects (same variables) with three changes:
- a layer with a rule and a fused activation is called through `PreActivation` (its output z, the
  activation switched off for that call) followed by an `Activation` layer with the same function,
  so the graph computes the same values and z is a tensor of its own;
- nested functional and Sequential models are expanded in place, so their layers get rules too;
- a layer called more than once (shared weights) gets no rule: its per-example gradient is the sum
  over its calls, which the per-layer closed forms do not compute.

Nothing here changes what a layer computes for one example; rows stay independent exactly when
they were in the original model (which the Keras front door checks: tfdp.keras.validation).
"""

import collections
import contextlib
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

import tensorflow as tf

LINEAR = tf.keras.activations.linear


@dataclasses.dataclass
class CallInputs:
  """The inputs of a layer called with more than one tensor (MultiHeadAttention's query, value).

  Attributes:
    args, kwargs: the call's arguments, with every tensor replaced by its index in `tensors`.
    tensors: the tensors, each [B, ...] with row i example i's.
  """
  args: Sequence[Any]
  kwargs: Dict[str, Any]
  tensors: List[Any]

  def call(self, layer, tensors=None, **overrides):
    """Calls `layer` on `tensors` (default: self.tensors) in this call's argument structure."""
    values = self.tensors if tensors is None else tensors
    fill = lambda x: values[x.index] if isinstance(x, _Slot) else x
    args = tf.nest.map_structure(fill, list(self.args))
    kwargs = tf.nest.map_structure(fill, dict(self.kwargs))
    kwargs.update(overrides)
    return layer(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Slot:
  index: int


@dataclasses.dataclass
class TappedGraph:
  """A model's graph with each ruled layer's input and pre-activation output exposed.

  Attributes:
    model: the tap, inputs -> [model output, a_1..a_n flattened, z_1..z_n].
    layers: the n layers with rules, in graph order.
    inputs: per layer, None (a single tensor input) or the CallInputs structure (its tensors are
      slots into the tap's outputs).
    fallback_layers: trainable layers without a usable rule (no rule, or called more than once),
      and opaque nested models.
  """
  model: tf.keras.Model
  layers: List[tf.keras.layers.Layer]
  inputs: List[Optional[CallInputs]]
  fallback_layers: List[tf.keras.layers.Layer]

  def split(self, outputs):
    """Tap outputs -> (model output, per-layer a (tensor or CallInputs), per-layer z)."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]  # Keras unwraps [x].
    flat_inputs = outputs[1:-len(self.layers)] if self.layers else []
    zs = outputs[len(outputs) - len(self.layers):] if self.layers else []
    a, start = [], 0
    for structure in self.inputs:
      if structure is None:
        a.append(flat_inputs[start])
        start += 1
      else:
        count = len(structure.tensors)
        a.append(dataclasses.replace(structure, tensors=list(flat_inputs[start:start + count])))
        start += count
    return outputs[0], a, list(zs)


class PreActivation(tf.keras.layers.Layer):
  """Calls a layer with its activation switched off: outputs its pre-activation z.

  The wrapped layer's variables are its own (shared, not copied); the switch lasts for the call
  only, which runs while a graph is traced.
  """

  def __init__(self, layer: tf.keras.layers.Layer, **kwargs):
    super().__init__(name=f"{layer.name}_preactivation", dtype=layer.dtype, **kwargs)
    self._wrapped = layer
    self.supports_masking = layer.supports_masking

  def call(self, *args, **kwargs):
    layer = self._wrapped
    if not layer._expects_training_arg:  # pylint: disable=protected-access
      kwargs.pop("training", None)
    if not layer._expects_mask_arg:  # pylint: disable=protected-access
      kwargs.pop("mask", None)
    with activation_off(layer):
      return layer(*args, **kwargs)

  def compute_mask(self, inputs, mask=None):
    return self._wrapped.compute_mask(inputs, mask)


@contextlib.contextmanager
def activation_off(layer):
  """Within the block, `layer` (if it has a fused activation) outputs its pre-activation z."""
  if not has_fused_activation(layer):
    yield
    return
  activation = layer.activation
  layer.activation = LINEAR
  try:
    yield
  finally:
    layer.activation = activation


def map_tensors(fn: Callable, a):
  """fn applied to a layer's input tensor, or to each tensor of its CallInputs."""
  if isinstance(a, CallInputs):
    return dataclasses.replace(a, tensors=[fn(t) for t in a.tensors])
  return fn(a)


# Layers that apply `activation` to their whole output last, so switching it off leaves z (an
# RNN's activation is inside its recurrence: not one of these).
OUTPUT_ACTIVATION_LAYERS = tuple(
    getattr(tf.keras.layers, name) for name in (
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D") if hasattr(tf.keras.layers, name))


def has_fused_activation(layer) -> bool:
  """Whether `layer` applies a non-linear activation to its whole output (Dense, Conv, ...)."""
  return (isinstance(layer, OUTPUT_ACTIVATION_LAYERS)
          and getattr(layer, "activation", None) not in (None, LINEAR))


def is_graph_model(layer) -> bool:
  return isinstance(layer, tf.keras.Model) and getattr(layer, "_is_graph_network", False)


def leaf_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """Every layer of `model`, nested functional/Sequential models expanded, in model order."""
  leaves = []
  for layer in model.layers:
    leaves.extend(leaf_layers(layer) if is_graph_model(layer) else [layer])
  return leaves


def _call_counts(model, times: int = 1, counts=None) -> collections.Counter:
  """How many nodes of `model`'s own graph call each leaf layer, nested models expanded (by id).

  Only this graph's nodes count: a layer also called by another model built over it (a tap, a
  feature extractor) still has one call here.
  """
  counts = collections.Counter() if counts is None else counts
  for nodes in model._nodes_by_depth.values():  # pylint: disable=protected-access
    for node in nodes:
      if node.is_input:
        continue
      if is_graph_model(node.layer):
        _call_counts(node.layer, times, counts)
      else:
        counts[id(node.layer)] += times
  return counts


def tap(model: tf.keras.Model, rule_for: Callable) -> TappedGraph:
  """Rebuilds `model`'s graph exposing every ruled layer's (a, z); see the module docstring.

  Args:
    model: a functional or Sequential Keras model.
    rule_for: layer -> its rule or None (tfdp.dp.fast.rules.rule_for).
  """
  counts = _call_counts(model)
  builder = _Builder(lambda layer: counts[id(layer)] == 1 and rule_for(layer) is not None)
  inputs = [tf.keras.Input(type_spec=x.type_spec) for x in model.inputs]
  outputs = builder.expand(model, inputs)
  flat_a = []
  for a in builder.a:
    flat_a.extend(a.tensors if isinstance(a, CallInputs) else [a])
  tapped = tf.keras.Model(inputs, [tf.nest.flatten(outputs)[0]] + flat_a + builder.z)
  structures = [CallInputs(a.args, a.kwargs, [None] * len(a.tensors))
                if isinstance(a, CallInputs) else None for a in builder.a]
  return TappedGraph(tapped, builder.layers, structures, builder.fallback)


class _Builder:
  """Walks a functional graph depth by depth (as Keras's own `_run_internal_graph`)."""

  def __init__(self, ruled: Callable):
    self._ruled = ruled
    self.layers, self.a, self.z, self.fallback = [], [], [], []
    self._seen_fallback = set()

  def expand(self, model: tf.keras.Model, inputs: Sequence[Any]):
    values = {id(ref): value for ref, value in zip(model.inputs, inputs)}
    for depth in sorted(model._nodes_by_depth, reverse=True):  # pylint: disable=protected-access
      for node in model._nodes_by_depth[depth]:  # pylint: disable=protected-access
        if node.is_input:
          continue
        lookup = _Lookup(values)
        args, kwargs = node.map_arguments(lookup)
        outputs = self._call(node.layer, args, kwargs)
        for ref, value in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
          values[id(ref)] = value
    return tf.nest.pack_sequence_as(model._nested_outputs,  # pylint: disable=protected-access
                                    [values[id(ref)] for ref in model.outputs])

  def _call(self, layer, args, kwargs):
    if is_graph_model(layer):
      inner_inputs = tf.nest.flatten(args[0] if len(args) == 1 else args)
      return self.expand(layer, inner_inputs)
    if not layer.trainable_weights:
      return layer(*args, **kwargs)
    if not self._ruled(layer):
      if id(layer) not in self._seen_fallback:
        self._seen_fallback.add(id(layer))
        self.fallback.append(layer)
      return layer(*args, **kwargs)
    return self._tapped_call(layer, args, kwargs)

  def _tapped_call(self, layer, args, kwargs):
    tensors = [x for x in tf.nest.flatten((args, kwargs)) if _is_tensor(x)]
    if len(args) == 1 and len(tensors) == 1:
      self.a.append(args[0])
    else:
      self.a.append(_call_inputs(args, kwargs))
    fused = has_fused_activation(layer)
    z = PreActivation(layer)(*args, **kwargs) if fused else layer(*args, **kwargs)
    self.layers.append(layer)
    self.z.append(z)
    return tf.keras.layers.Activation(layer.activation, name=f"{layer.name}_activation")(z) \
        if fused else z


class _Lookup(dict):
  """What Node.map_arguments reads: id -> a list it pops one value from (never runs out)."""

  def __init__(self, values):
    super().__init__()
    self._values = values

  def __getitem__(self, key):
    return _Endless(self._values[int(key)])

  def __contains__(self, key):
    return int(key) in self._values


class _Endless:
  def __init__(self, value):
    self._value = value

  def pop(self):
    return self._value


def _is_tensor(x) -> bool:
  return tf.is_tensor(x)  # KerasTensors too: they are tensor-like.


def _call_inputs(args, kwargs) -> CallInputs:
  tensors = []

  def slot(x):
    if _is_tensor(x):
      tensors.append(x)
      return _Slot(len(tensors) - 1)
    return x

  structure_args = tf.nest.map_structure(slot, list(args))
  structure_kwargs = tf.nest.map_structure(slot, dict(kwargs))
  return CallInputs(structure_args, structure_kwargs, tensors)
