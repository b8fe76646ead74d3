"""Which layers of a Keras model can be trained privately, and a fix for BatchNorm.

    tfdp.keras.check(model)            # raises PrivacyValidationError naming every refused layer
    model = tfdp.keras.fix(model)      # every BatchNormalization -> GroupNormalization
    for v in tfdp.keras.inspect(model):
      print(v.path, v.layer_class, v.verdict, v.reason)

Why layers are refused. A private `fit` reads each trainable layer's input and output gradient from
one batched forward and backward pass and turns row i into example i's gradient. That is example
i's gradient only if no layer mixes the examples of a batch: row i of every activation must
depend on example i alone. And whatever a layer keeps that `fit` updates from the private batches
(BatchNorm's moving mean and variance, a stateful RNN's carried states) would be released with
the weights, without noise. BatchNormalization fails both.

Verdicts, one per layer (nested functional and Sequential models are walked, InputLayer skipped):
- "fast": trainable weights and a rule of the fast engine (tfdp.dp.fast.rules.rule_for).
- "fallback": trainable weights, a known per-example class, no fast rule: per-example gradients
  are computed one example at a time (correct, slow).
- "stateless": no trainable weights, a known per-example class (frozen layers included).
- "refused": BatchNorm, state `fit` may update, a class nobody vouched for, a subclassed model.
"""

import dataclasses
from typing import Iterator, List, Optional, Tuple, Type

import tensorflow as tf

from tfdp.dp import fast  # noqa: F401  pylint: disable=unused-import  (registers the fast rules)
from tfdp.dp.fast import rules
from tfdp.dp.fast import vectorized
from tfdp.keras import keras3
from tfdp.models import layers as model_layers
from tfdp.models import scatter
from tfdp.models import vit

VERDICTS = ("fast", "fallback", "stateless", "refused")

_KERAS_PER_EXAMPLE = (
    "InputLayer",
    # Noise and regularization: each row gets its own draw; nothing kept.
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    # Shape, activations and pooling within one example.
    "Flatten", "Reshape", "Permute", "RepeatVector", "Activation", "ReLU", "LeakyReLU", "ELU",
    "Softmax", "ThresholdedReLU", "PReLU",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
    "Masking", "Rescaling", "Resizing", "CenterCrop",
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomCrop",
    "RandomContrast", "RandomBrightness", "RandomHeight", "RandomWidth",
    # Layers with weights whose output row i reads input row i only.
    "Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
    "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "Embedding", "EinsumDense", "MultiHeadAttention", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "LocallyConnected1D", "LocallyConnected2D",
    "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed",
    "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
)

# Preprocessing whose non-trainable weights come from adapt() or the constructor; fit never
# changes them.
_KERAS_FIXED_STATE = ("Normalization", "Discretization", "StringLookup", "IntegerLookup",
                      "TextVectorization", "Hashing", "CategoryEncoding")

_ADAPTED = "if adapted on the private data they are an unnoised release"
_KERAS_REMARKS = {
    "Normalization": f"its mean and variance come from adapt(): {_ADAPTED}",
    "Discretization": f"its bin boundaries may come from adapt(): {_ADAPTED}",
    "StringLookup": f"its vocabulary may come from adapt(): {_ADAPTED}",
    "IntegerLookup": f"its vocabulary may come from adapt(): {_ADAPTED}",
    "TextVectorization": f"its vocabulary may come from adapt(): {_ADAPTED}",
}


def _keras_classes(names) -> set:
  """The classes of tf.keras.layers with these names; a name this Keras lacks is skipped."""
  found = (getattr(tf.keras.layers, name, None) for name in names)
  return {cls for cls in found if isinstance(cls, type)}


# Row-independent classes with no state updated by fit. Exact classes: a subclass may override
# `call`. register_per_example adds to it.
PER_EXAMPLE_LAYERS = _keras_classes(_KERAS_PER_EXAMPLE) | {
    model_layers.WSConv2D, model_layers.GroupNormalization,
    vit.ClassToken, vit.PositionEmbedding, vit.DotProductAttention,
    scatter.Scattering,  # A fixed transform of each image, no weights.
}

# Classes whose non-trainable weights fit never changes (set by adapt(), by the constructor, or
# once from a DP release: FeatureStandardization's moments).
FIXED_STATE_LAYERS = _keras_classes(_KERAS_FIXED_STATE) | {scatter.FeatureStandardization}

_REMARKS = {getattr(tf.keras.layers, name): remark for name, remark in _KERAS_REMARKS.items()
            if hasattr(tf.keras.layers, name)}

_BATCHNORM_FIXABLE = tuple(_keras_classes(["BatchNormalization"])) + tuple(
    cls for cls in [getattr(tf.keras.layers.experimental, "SyncBatchNormalization", None)]
    if isinstance(cls, type))

_BATCHNORM_REASON = ("mixes the examples of a batch and updates moving statistics from the "
                     "private batches")
_BATCHNORM_FIX = "tfdp.keras.fix(model) replaces it by GroupNormalization"
_UNKNOWN_REASON = "cannot prove it treats each example alone"
_UNKNOWN_FIX = ("if it never mixes the examples of a batch and keeps no state updated by fit, "
                "declare it with tfdp.keras.register_per_example({cls}) (and register a fast rule "
                "with tfdp.keras.register_rule if it has weights)")
_FALLBACK_REASON = ("no fast rule: per-example gradients one example at a time (slow); register "
                    "one with tfdp.keras.register_rule")
_ONE_IN_ONE_OUT = "make_private takes one input and one output"
MAX_GROUPS = 16  # Wu & He (2018) use 32 on 64+ channels; fewer suits the small models trained here.
MIN_GROUP_SIZE = 4  # Channels per group: fewer makes GroupNorm close to InstanceNorm.


class PrivacyValidationError(ValueError):
  """A model has layers that cannot be trained privately; the message lists each with its fix."""


@dataclasses.dataclass(frozen=True)
class LayerVerdict:
  """What a private `fit` can do with one layer.

  Attributes:
    path: the layer's name, nested models' names before it joined by '/' ("backbone/block1_bn");
      for a verdict on the whole model, the model's name.
    layer_class: the layer's class name, e.g. "BatchNormalization".
    verdict: one of VERDICTS: "fast", "fallback", "stateless" or "refused".
    reason: why; for "refused", what is wrong.
    fix: for "refused", what to do; '' otherwise.
  """
  path: str
  layer_class: str
  verdict: str
  reason: str
  fix: str = ""


def register_per_example(*layer_classes: Type[tf.keras.layers.Layer]):
  """Declares layer classes per-example: row i of the output reads row i of the input only, and
  no state is updated by fit. Exact classes: subclasses are not covered.

  Usable as a class decorator (`@tfdp.keras.register_per_example`). A class with trainable weights
  and no fast rule then trains through the slow path ("fallback").

  Args:
    *layer_classes: one or more tf.keras.layers.Layer subclasses.

  Returns:
    The first class given, so that the call decorates a class.

  Raises:
    TypeError: if an argument is not a Layer subclass.
    ValueError: if none is given, or one is a BatchNorm class (it mixes the examples).
  """
  if not layer_classes:
    raise ValueError("register_per_example needs at least one layer class, got none")
  for cls in layer_classes:
    if not (isinstance(cls, type) and issubclass(cls, tf.keras.layers.Layer)):
      raise TypeError(f"register_per_example takes tf.keras.layers.Layer subclasses, got {cls!r}")
    if _is_batchnorm_class(cls):
      raise ValueError(f"{cls.__name__} is a BatchNorm: it {_BATCHNORM_REASON}; "
                       f"{_BATCHNORM_FIX}")
  PER_EXAMPLE_LAYERS.update(layer_classes)
  return layer_classes[0]


# tfdp.keras.register_rule(LayerClass[, rule]): a fast rule for a layer class (by default the
# vectorized one, exact for any layer that treats each example alone); the class then counts as
# per-example.
register_rule = vectorized.register_rule


def inspect(model: tf.keras.Model) -> List[LayerVerdict]:
  """The verdict on every layer of `model`, in model order.

  Nested functional and Sequential models are walked (their layers are listed, the nested model
  itself is not); InputLayer is skipped. A first verdict on the model itself (path = model.name)
  is there only if it is refused: a subclassed top model, or more than one input or output.

  Args:
    model: a tf.keras.Model, or a Keras 3 model, judged through its Keras 2 twin
      (tfdp.keras.keras3): the layers keep their names. One with no faithful twin gets a
      single refused verdict saying why.

  Returns:
    One LayerVerdict per layer; never raises for a refused layer.

  Raises:
    TypeError: if `model` is neither.
  """
  if keras3.is_keras_3_model(model):
    try:
      model = keras3.twin(model)
    except keras3.TwinError as error:
      return [LayerVerdict(model.name, type(model).__name__, "refused", str(error),
                           "build it from Keras's own layers as a Sequential or functional model")]
  if not isinstance(model, tf.keras.Model):
    raise TypeError(f"inspect takes a tf.keras.Model, got {type(model).__name__}: {model!r}")
  top = _model_verdicts(model)
  if not _is_graph(model):
    return top
  return top + [_verdict(path, layer) for path, layer in _walk(model, prefix="")]


def validate(model: tf.keras.Model) -> List[LayerVerdict]:
  """The refused verdicts of `inspect(model)`: [] when `model` can be trained privately."""
  return [v for v in inspect(model) if v.verdict == "refused"]


def check(model: tf.keras.Model) -> None:
  """Raises unless every layer of `model` can be trained privately.

  Raises:
    PrivacyValidationError: one message listing every refused layer by path, class, reason and
      fix.
  """
  refused = validate(model)
  if refused:
    lines = [f"  - {v.path} ({v.layer_class}): {v.reason}; fix: {v.fix}" for v in refused]
    raise PrivacyValidationError("this model cannot be trained privately as it is:\n"
                                 + "\n".join(lines))


def group_count(channels: int) -> int:
  """GroupNorm groups for `channels`: the largest divisor g of channels with g <= 16 and
  channels // g >= 4 if there is one, else the largest divisor g <= 16 (3 -> 3, 16 -> 4,
  32 -> 8, 96 -> 16)."""
  if not (isinstance(channels, int) and channels >= 1):
    raise ValueError(f"channels must be an int >= 1, got {channels!r}")
  divisors = [g for g in range(1, MAX_GROUPS + 1) if channels % g == 0]
  wide = [g for g in divisors if channels // g >= MIN_GROUP_SIZE]
  return max(wide or divisors)


def fix(model: tf.keras.Model) -> tf.keras.Model:
  """A copy of `model` with every BatchNormalization replaced by GroupNormalization.

  Each BatchNormalization (or SyncBatchNormalization) of C channels becomes
  tf.keras.layers.GroupNormalization(groups=group_count(C)) with the same name, axis, epsilon,
  center, scale, initializers, regularizers and constraints, and gamma and beta copied; the
  moving mean and variance are dropped. group_count(C) is the largest divisor g of C with
  g <= 16 and C // g >= 4 if there is one, else the largest divisor g <= 16. Every other layer
  keeps its weights; nested functional and Sequential models are fixed the same way. The copy
  keeps model.name and is not compiled. Prints one line per replacement and a summary.

  Args:
    model: a built functional or Sequential tf.keras.Model, or a Keras 3 one, fixed as its Keras 2
      twin (tfdp.keras.keras3): the result is then a tf.keras model, which make_private takes.

  Returns:
    The new model. Layers fix does not replace (a BatchNorm inside a wrapper, custom layers)
    are kept: validate(result) still lists them.

  Raises:
    ValueError: if `model`, or a model inside it, is subclassed, or a BatchNorm is not built or
      normalizes more than one axis.
  """
  if keras3.is_keras_3_model(model):
    model = keras3.twin(model)
  _require_graph(model, model.name)
  replaced = []
  fixed = _clone(model, prefix="", replaced=replaced)
  if model.built and not fixed.built:
    fixed.build(model.input_shape)  # A Sequential built without an Input clones unbuilt.
  _copy_weights(model, fixed)
  if not model.trainable:
    fixed.trainable = False
  for path, channels, groups in replaced:
    print(f"replaced {path} (BatchNormalization, {channels} channels) by "
          f"GroupNormalization(groups={groups})")
  if replaced:
    print(f"fix: replaced {len(replaced)} BatchNormalization layers of {model.name} by "
          "GroupNormalization (gamma and beta kept, moving statistics dropped)")
  else:
    print(f"fix: {model.name} has no BatchNormalization; nothing replaced, same weights")
  return fixed


# Walking the model.


def _is_graph(model: tf.keras.Model) -> bool:
  """Whether the layers of `model` and how they connect can be seen (functional or Sequential)."""
  return type(model) is tf.keras.Sequential or getattr(model, "_is_graph_network", False)


def _walk(model: tf.keras.Model, prefix: str) -> Iterator[Tuple[str, tf.keras.layers.Layer]]:
  """(path, layer) for every layer below `model`, depth first; a seen nested model is not listed
  itself, a subclassed one is (as one layer)."""
  for layer in model.layers:
    path = prefix + layer.name
    if isinstance(layer, tf.keras.layers.InputLayer):
      continue
    if isinstance(layer, tf.keras.Model) and _is_graph(layer):
      yield from _walk(layer, prefix=path + "/")
    else:
      yield path, layer


def _model_verdicts(model: tf.keras.Model) -> List[LayerVerdict]:
  """The refusals of the model as a whole: subclassed, or not one input and one output."""
  if not _is_graph(model):
    return [LayerVerdict(model.name, type(model).__name__, "refused",
                         "a subclassed model: its layers and how they connect cannot be seen",
                         "build it as a functional or Sequential model")]
  if not model.built:  # A Sequential without an Input: one input and one output, once built.
    return []
  inputs, outputs = len(model.inputs), len(model.outputs)
  if inputs == 1 and outputs == 1:
    return []
  return [LayerVerdict(model.name, type(model).__name__, "refused",
                       f"{inputs} inputs and {outputs} outputs", _ONE_IN_ONE_OUT)]


# The verdict on one layer: the first refusal that applies, else fast, fallback or stateless.


def _is_batchnorm_class(cls: type) -> bool:
  # Class names in the MRO also catch SyncBatchNormalization, the v1 layer and subclasses, which
  # do not all share tf.keras.layers.BatchNormalization.
  return any("BatchNorm" in base.__name__ for base in cls.__mro__)


def _rule(layer: tf.keras.layers.Layer) -> Optional[rules.LayerRule]:
  try:
    return rules.rule_for(layer)
  except AttributeError:  # A rule's `supports` reads layer.input: Keras refuses a shared layer's.
    return None


def _is_known(layer: tf.keras.layers.Layer) -> bool:
  cls = type(layer)
  return cls in PER_EXAMPLE_LAYERS or cls in FIXED_STATE_LAYERS or _rule(layer) is not None


def _subclassed_model(layer) -> Optional[Tuple[str, str]]:
  if isinstance(layer, tf.keras.Model):  # _walk yields only the nested models it cannot see in.
    return ("a subclassed model inside: its layers cannot be seen",
            "build it as a functional model")
  return None


def _batchnorm(layer) -> Optional[Tuple[str, str]]:
  return (_BATCHNORM_REASON, _BATCHNORM_FIX) if _is_batchnorm_class(type(layer)) else None


def _stateful(layer) -> Optional[Tuple[str, str]]:
  recurrent = (tf.keras.layers.RNN, tf.keras.layers.Bidirectional)
  if isinstance(layer, recurrent) and getattr(layer, "stateful", False):
    return ("stateful=True carries each private batch's final states into the next batch, "
            "without noise", "build it with stateful=False")
  return None


def _wrapped(layer) -> Optional[Tuple[str, str]]:
  if not isinstance(layer, tf.keras.layers.Wrapper):
    return None
  inner = layer.layer
  refusal = _refusal(inner)
  if refusal is None:
    return None
  reason, fix_ = refusal
  return f"wraps {inner.name} ({type(inner).__name__}), which {reason}", fix_


def _unknown(layer) -> Optional[Tuple[str, str]]:
  if _is_known(layer):
    return None
  reason = _UNKNOWN_REASON
  if getattr(layer, "symbol", None):  # TFOpLambda: a TensorFlow op called on a Keras tensor.
    reason = f"calls {layer.symbol} on a Keras tensor: {reason}"
  if layer.non_trainable_weights:
    names = ", ".join(w.name for w in layer.non_trainable_weights)
    reason += f", and it keeps non-trainable weights fit may update ({names})"
  return reason, _UNKNOWN_FIX.format(cls=type(layer).__name__)


_REFUSALS = (_subclassed_model, _batchnorm, _stateful, _wrapped, _unknown)


def _refusal(layer) -> Optional[Tuple[str, str]]:
  """(reason, fix) of the first refusal that applies to `layer`, or None."""
  for refusal in _REFUSALS:
    found = refusal(layer)
    if found is not None:
      return found
  return None


def _stateless_reason(layer) -> str:
  if not layer.weights:
    reason = "no weights"
  else:
    reason = "frozen: no trainable weights" if not layer.trainable else "no trainable weights"
  remark = _REMARKS.get(type(layer))
  return f"{reason}; {remark}" if remark else reason


def _verdict(path: str, layer: tf.keras.layers.Layer) -> LayerVerdict:
  cls = type(layer).__name__
  refusal = _refusal(layer)
  if refusal is not None:
    return LayerVerdict(path, cls, "refused", *refusal)
  if not layer.trainable_weights:
    return LayerVerdict(path, cls, "stateless", _stateless_reason(layer))
  if _rule(layer) is not None:
    return LayerVerdict(path, cls, "fast", "per-example gradients from the batched pass")
  return LayerVerdict(path, cls, "fallback", _FALLBACK_REASON)


# fix.


def _require_graph(model: tf.keras.Model, path: str) -> None:
  if not isinstance(model, tf.keras.Model) or not _is_graph(model):
    raise ValueError(f"fix cannot see inside {path} ({type(model).__name__}): it is not a "
                     "functional or Sequential model; build it as a functional model")


def _clone(model: tf.keras.Model, prefix: str, replaced: list) -> tf.keras.Model:
  """The structure of `model` with BatchNorms replaced (weights are copied afterwards)."""

  def clone_layer(layer):
    path = prefix + layer.name
    if isinstance(layer, tf.keras.Model):
      _require_graph(layer, path)
      return _clone(layer, prefix=path + "/", replaced=replaced)
    if isinstance(layer, _BATCHNORM_FIXABLE):
      group_norm = _group_norm_for(layer, path)
      replaced.append((path, _channels(layer, path), group_norm.groups))
      return group_norm
    return layer.__class__.from_config(layer.get_config())

  fixed = tf.keras.models.clone_model(model, clone_function=clone_layer)
  fixed._name = model.name  # pylint: disable=protected-access  (clone_model may rename)
  return fixed


def _channels(batchnorm, path: str) -> int:
  if not batchnorm.built:
    raise ValueError(f"fix needs {path} built to count its channels: build the model first "
                     "(start it with tf.keras.Input or call model.build(input_shape))")
  if len(batchnorm.axis) != 1:
    raise ValueError(f"{path} normalizes over axes {list(batchnorm.axis)}; fix replaces only a "
                     "BatchNorm over one channel axis: replace it by hand")
  return int(batchnorm.moving_mean.shape[-1])


def _group_norm_for(batchnorm, path: str) -> tf.keras.layers.GroupNormalization:
  channels = _channels(batchnorm, path)
  return tf.keras.layers.GroupNormalization(
      groups=group_count(channels), axis=int(batchnorm.axis[0]), epsilon=batchnorm.epsilon,
      center=batchnorm.center, scale=batchnorm.scale,
      beta_initializer=batchnorm.beta_initializer, gamma_initializer=batchnorm.gamma_initializer,
      beta_regularizer=batchnorm.beta_regularizer, gamma_regularizer=batchnorm.gamma_regularizer,
      beta_constraint=batchnorm.beta_constraint, gamma_constraint=batchnorm.gamma_constraint,
      name=batchnorm.name, trainable=batchnorm.trainable)


def _copy_weights(source: tf.keras.Model, target: tf.keras.Model) -> None:
  """Copies each layer's weights from `source` to its namesake in `target`; a replaced BatchNorm
  gives its GroupNormalization its gamma and beta (created in that order by both)."""
  for layer in source.layers:
    if isinstance(layer, tf.keras.layers.InputLayer):
      continue
    twin = target.get_layer(layer.name)
    if isinstance(layer, tf.keras.Model):
      _copy_weights(layer, twin)
    elif isinstance(layer, _BATCHNORM_FIXABLE):
      twin.set_weights([w.numpy() for w in (layer.gamma, layer.beta) if w is not None])
    else:
      twin.set_weights(layer.get_weights())
