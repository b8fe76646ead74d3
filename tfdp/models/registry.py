"""Model registry: builders found by name, and the checks every built model must pass.

    model = tfdp.models.build_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
"""

import inspect

import numpy as np
import tensorflow as tf

from tfdp import names

MODELS = {}  # name -> builder(num_classes, input_shape, **kwargs) -> tf.keras.Model

_BATCHNORM_REASON = (
    "BatchNorm normalizes with statistics of the whole batch, so each example's output and "
    "gradient depend on the other examples; per-example clipping then no longer bounds one "
    "example's influence and the DP guarantee fails. Use GroupNormalization "
    "(tfdp.models.layers.group_norm) instead."
)


def register(name):
  """Decorator that adds a model builder to `MODELS` under `name`.

  Args:
      name: Registry key, e.g. "resnet20".

  Returns:
      The decorator; it returns the builder unchanged.

  Raises:
      ValueError: If `name` is already registered.
  """

  def decorator(builder):
    if name in MODELS:
      owner = MODELS[name].__module__
      raise ValueError(f"Model {name!r} is already registered (by {owner}).")
    MODELS[name] = builder
    return builder

  return decorator


def check_name(name):
  """Raises ValueError, listing the valid names, unless `name` is a registered model."""
  names.check("model", name, sorted(MODELS))


def build_model(name, num_classes, input_shape, **kwargs):
  """Builds a registered model and checks that it is BatchNorm-free.

  Args:
      name: Registry key, one of `sorted(MODELS)`.
      num_classes: Number of classes (>= 2); the model outputs this many logits.
      input_shape: (height, width, channels) of one example, positive ints.
      **kwargs: Builder-specific options (e.g. `activation`), each one the builder declares.

  Returns:
      A `tf.keras.Model` mapping float images [batch, height, width, channels] to logits
      [batch, num_classes] (no softmax).

  Raises:
      ValueError: If `name` is unknown, or `num_classes`/`input_shape` are invalid, or the model
          contains BatchNorm.
      TypeError: If `kwargs` holds an option the builder does not take.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid models: {sorted(MODELS)}.")
  _check_num_classes(num_classes)
  input_shape = _check_input_shape(input_shape)
  builder = MODELS[name]
  _check_kwargs(name, builder, kwargs)
  model = builder(num_classes=num_classes, input_shape=input_shape, **kwargs)
  assert_no_batchnorm(model)
  return model


def assert_no_batchnorm(model):
  """Raises if any layer of `model`, nested models included, is a BatchNorm layer.

  Args:
      model: A `tf.keras.Model` (or layer).

  Raises:
      ValueError: Naming the first BatchNorm layer found (as a path "outer/inner/bn") and why
          it is refused under DP.
  """
  for path, layer in _walk(model, prefix=""):
    if _is_batchnorm(layer):
      raise ValueError(
          f"Model {model.name!r} contains BatchNorm layer {path!r} "
          f"({type(layer).__name__}). {_BATCHNORM_REASON}"
      )


def count_params(model):
  """Returns the number of trainable parameters (scalars) of `model` as an int."""
  return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def _walk(layer, prefix):
  """Yields (path, sublayer) for every layer below `layer`, depth first."""
  children = layer.layers if isinstance(layer, tf.keras.Model) else []
  for child in children:
    path = prefix + child.name
    yield path, child
    if isinstance(child, tf.keras.Model):
      yield from _walk(child, prefix=path + "/")
    else:
      # Custom layers can hold other layers as attributes (e.g. a block layer owning a BN).
      for sub in child.submodules:
        if isinstance(sub, tf.keras.layers.Layer):
          yield f"{path}/{sub.name}", sub


def _is_batchnorm(layer):
  # Matching on class names in the MRO also catches the v1, synchronized and subclassed variants,
  # which do not all share the public tf.keras.layers.BatchNormalization class.
  return any("BatchNorm" in cls.__name__ for cls in type(layer).__mro__)


def _check_num_classes(num_classes):
  if not _is_positive_int(num_classes) or num_classes < 2:
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")


def _check_input_shape(input_shape):
  """Returns `input_shape` as a tuple of 3 Python ints, or raises ValueError naming it."""
  try:
    dims = tuple(input_shape)
  except TypeError:
    dims = None
  valid = dims is not None and len(dims) == 3 and all(_is_positive_int(d) for d in dims)
  if not valid:
    raise ValueError(
        f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}."
    )
  return tuple(int(d) for d in dims)


def _is_positive_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_kwargs(name, builder, kwargs):
  required = ("num_classes", "input_shape")
  accepted = [p for p in inspect.signature(builder).parameters if p not in required]
  unexpected = sorted(set(kwargs) - set(accepted))
  if unexpected:
    raise TypeError(
        f"Model {name!r} got unexpected option(s) {unexpected}; it accepts {sorted(accepted)}."
    )


def check_options(name, options):
  """Raises ValueError (naming them) if model `name` does not take every key of `options`."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {sorted(MODELS)}.")
  try:
    _check_kwargs(name, MODELS[name], options)
  except TypeError as error:
    raise ValueError(str(error)) from None
