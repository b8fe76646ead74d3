"""Keras 3 models (`import keras`, TensorFlow backend) through make_private: trained by a Keras 2 twin.

tfdp's per-example engines, validator and DP optimizers are Keras 2 code, and TF Privacy's Keras
optimizers are Keras 2 only; its DP queries are plain TensorFlow. A Keras 3 Sequential or
functional model built from Keras's own layers is therefore trained through its *twin*: the same
architecture rebuilt as a `tf.keras` (Keras 2, `tf_keras`) model from the Keras 3 model's
config, layer by layer under the same names, holding a copy of its weights. make_private then
treats the twin as any Keras 2 model: the validator, the fast engine, the TF Privacy DP query
of the chosen mechanism, the ledger, ε in History, the budget guard and the export are the
Keras 2 path's, unchanged.

Privacy argument. The twin's `fit` is PrivateModel's fit, so what it releases and how ε composes
is tfdp.keras.private_model's argument word for word. The Keras 3 model receives a copy of the
twin's weights after every epoch and at the end of fit: post-processing of the noised releases.
Nothing flows from the Keras 3 model into training after make_private copied its starting
weights (the same starting point a Keras 2 user passes in), so it carries no state of its own
that the data could update.

The twin must compute what the Keras 3 model computes, or the guarantee holds for a model the user
never asked for, and the Keras 3 model would receive weights trained for another function.
`twin` therefore refuses, naming the layer and the setting: a model that is not Sequential or
functional (a subclassed `call` has no config to rebuild), a layer of a class Keras 2 lacks, and
a setting Keras 2 has no equivalent for (a LoRA rank, a quantization), rather than dropping it;
and it compares the two models' outputs on a public probe input (inference mode) before handing
the twin out.
"""

import inspect
from typing import Any, Callable, Dict, List

import numpy as np
import tensorflow as tf

from tfdp import stack

# Keyword arguments every Keras 2 layer takes through **kwargs (base_layer.Layer.__init__).
_KERAS_2_BASE_KWARGS = frozenset({
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
    "batch_size", "weights", "activity_regularizer", "autocast", "input_length", "implementation"})
_DTYPE_POLICIES = ("DTypePolicy", "FloatDTypePolicy")
_MODEL_CLASSES = ("Sequential", "Functional", "Model")
PROBE_TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # Float32 twins agree to rounding.


class TwinError(ValueError):
  """A Keras 3 model that has no faithful Keras 2 twin; the message names the cause."""


def is_keras_3_model(model) -> bool:
  """Whether `model` is a Keras 3 model (from `import keras` on Keras >= 3), not a tf.keras one."""
  if isinstance(model, tf.keras.Model) or not stack.keras_3_installed():
    return False
  import keras  # pylint: disable=import-outside-toplevel
  return isinstance(model, keras.Model)


def twin(model) -> tf.keras.Model:
  """The Keras 2 (`tf.keras`) twin of a Keras 3 model: same layers, names, weights and outputs.

  Raises:
    TwinError: the backend is not TensorFlow, the model is subclassed, a layer or a setting has
      no Keras 2 equivalent, or the twin's outputs differ from the model's on the probe input.
  """
  _require_tensorflow_backend()
  config = _model_config(model)
  builder = tf.keras.Sequential if type(model).__name__ == "Sequential" else tf.keras.Model
  try:
    keras_2 = builder.from_config(to_keras_2_config(config))
  except TwinError:
    raise
  except (TypeError, ValueError, KeyError, AttributeError) as error:
    raise TwinError(f"the Keras 3 model {model.name!r} could not be rebuilt as a Keras 2 model "
                    f"for training: {error}") from error
  copy_weights(model, keras_2)
  _check_same_outputs(model, keras_2)
  return keras_2


def to_keras_2_config(config: Any) -> Any:
  """A Keras 3 model config, rewritten in Keras 2's terms (the input layer's shape key, dtype
  policies as names, graph nodes as [layer, node, tensor, kwargs] lists); a Keras 3 setting with
  no Keras 2 keyword is dropped only when unset (None), else refused."""
  if isinstance(config, list):
    return [to_keras_2_config(item) for item in config]
  if not isinstance(config, dict):
    return config
  if config.get("class_name") in _DTYPE_POLICIES:
    return config["config"]["name"]
  out = {key: to_keras_2_config(value) for key, value in config.items()}
  if isinstance(config.get("layers"), list):  # A model's config: its graph's nodes.
    nested = _nested_graph_models(config["layers"])
    for layer in out["layers"]:
      if isinstance(layer, dict) and "inbound_nodes" in layer:
        layer["inbound_nodes"] = [_node(node, nested) for node in layer["inbound_nodes"]]
    for key in ("input_layers", "output_layers"):
      if key in out:
        out[key] = _endpoints(out[key], nested)
  if isinstance(out.get("config"), dict) and "class_name" in out:
    _check_module(out)
    REWRITES.get(out["class_name"], _keep_known_keywords)(out)
  return out


def copy_weights(source, target) -> None:
  """Copies every layer's weights from `source` to the layer of the same name in `target` (a
  Keras 3 model and its twin, either way round)."""
  for layer in source.layers:
    if layer.weights:
      target.get_layer(layer.name).set_weights(layer.get_weights())


class MirrorWeights(tf.keras.callbacks.Callback):
  """Copies the twin's weights into the user's Keras 3 model after every epoch and at the end of
  fit (post-processing of the noised releases), so the model the user holds is the one trained."""

  def __init__(self, keras_3_model):
    super().__init__()
    self._target = [keras_3_model]  # In a list: Keras tracks no second model through it.

  def on_epoch_end(self, epoch, logs=None):
    copy_weights(self.model, self._target[0])

  def on_train_end(self, logs=None):
    copy_weights(self.model, self._target[0])


def keras_2_object(value, module: str):
  """A Keras 3 loss or metric object as its Keras 2 twin (by class name and config); names and
  functions pass through. `module` is 'losses' or 'metrics'."""
  keras_2_kinds = (str, type(None), tf.keras.losses.Loss, tf.keras.metrics.Metric)
  if not stack.keras_3_installed() or isinstance(value, keras_2_kinds):
    return value  # On TF 2.15 the package named keras is Keras 2: nothing to translate.
  if not getattr(value, "__module__", type(value).__module__).startswith("keras."):
    return value
  if not hasattr(value, "get_config"):
    return getattr(getattr(tf.keras, module), value.__name__, value)  # A Keras 3 function.
  spec = to_keras_2_config({"module": f"keras.{module}", "class_name": type(value).__name__,
                            "config": value.get_config()})
  return getattr(tf.keras, module).deserialize({"class_name": spec["class_name"],
                                                "config": spec["config"]})


def _require_tensorflow_backend() -> None:
  import keras  # pylint: disable=import-outside-toplevel
  if keras.backend.backend() != "tensorflow":
    raise TwinError(f"this Keras 3 model runs on the {keras.backend.backend()} backend; "
                    "tfdp trains on TensorFlow: set KERAS_BACKEND=tensorflow before importing "
                    "keras (JAX users: jax_privacy, PyTorch users: Opacus)")


def _model_config(model) -> dict:
  """The config of a Sequential or functional model (a subclassed one's lists no layers)."""
  try:
    config = model.get_config()
  except NotImplementedError:
    config = {}
  if "layers" not in config:
    raise TwinError(
        f"{type(model).__name__} {model.name!r} is a subclassed Keras 3 model: its `call` is "
        "Python that tfdp cannot rebuild as Keras 2 to train, nor prove per-example. Write it "
        "as a keras.Sequential or functional keras.Model of Keras layers")
  return config


def _check_module(spec: dict) -> None:
  module = spec.get("module") or ""
  if spec["class_name"] in _MODEL_CLASSES or not module.startswith("keras"):
    if spec["class_name"] in _MODEL_CLASSES:
      return
    raise TwinError(f"layer {spec['config'].get('name')!r} is of the custom class "
                    f"{spec['class_name']!r} ({module or 'registered by the user'}), which has "
                    "no Keras 2 twin; build the model from Keras's own layers")


def _keras_2_class(spec: dict):
  for module in (tf.keras.layers, tf.keras.initializers, tf.keras.regularizers,
                 tf.keras.constraints, tf.keras.losses, tf.keras.metrics):
    cls = getattr(module, spec["class_name"], None)
    if isinstance(cls, type):
      return cls
  return None


def _keep_known_keywords(spec: dict) -> None:
  """Drops the Keras 3 settings that the Keras 2 class does not take when they are unset (None
  or False); a set one is refused (its meaning would be lost)."""
  cls = _keras_2_class(spec)
  if cls is None:
    if spec["class_name"] in _MODEL_CLASSES:
      return
    raise TwinError(f"{spec['class_name']} {spec['config'].get('name', '')!r} is a Keras 3 "
                    "class that Keras 2 lacks: it has no twin to train")
  accepted = _keywords(cls)
  for key in [k for k in spec["config"] if k not in accepted]:
    if spec["config"][key] not in (None, False):
      raise TwinError(f"{spec['class_name']} {spec['config'].get('name', '')!r} sets "
                      f"{key}={spec['config'][key]!r}, which Keras 2 has no equivalent for; "
                      "leave it unset to train this model privately")
    del spec["config"][key]


def _keywords(cls) -> set:
  """The keyword arguments a Keras 2 class takes: its own and, where it passes **kwargs on, its
  bases' (BatchNormalization's renorm lives on BatchNormalizationBase)."""
  accepted = set(_KERAS_2_BASE_KWARGS)
  for klass in cls.__mro__:
    if "__init__" not in vars(klass):
      continue
    parameters = inspect.signature(klass.__init__).parameters
    accepted |= set(parameters)
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
      break
  return accepted


def _input_layer(spec: dict) -> None:
  config = spec["config"]
  if "batch_shape" in config:
    config["batch_input_shape"] = config.pop("batch_shape")
  if config.pop("optional", False):
    raise TwinError(f"input {config.get('name')!r} is optional; Keras 2 has no optional inputs")


def _nested_graph_models(layers: list) -> set:
  """The names of the layers that are models with their own inputs (functional, or Sequential
  from an Input): Keras 2 gives such a model a node of its own (index 0) when it is built, so
  its calls in the outer graph are numbered from 1, where Keras 3 numbers them from 0."""
  names = set()
  for layer in layers:
    inner = layer.get("config", {}).get("layers") if isinstance(layer.get("config"), dict) else None
    if layer.get("class_name") == "Functional" or (
        layer.get("class_name") == "Sequential" and inner and inner[0].get("class_name") == "InputLayer"):
      names.add(layer["config"].get("name", layer.get("name")))
  return names


def _endpoints(links: list, nested_models: set) -> list:
  """A model's input or output layers, ['name', node, tensor] or a list of them, with the node
  index of a nested model's call shifted as in _node."""
  if links and isinstance(links[0], str):
    name, node_index, tensor_index = links
    return [name, node_index + (name in nested_models), tensor_index]
  return [_endpoints(link, nested_models) for link in links]


def _node(node, nested_models: frozenset = frozenset()) -> List[list]:
  """A Keras 3 graph node ({'args': [tensors], 'kwargs': {...}}) as Keras 2's list of
  [layer name, node index, tensor index, kwargs]."""
  if not isinstance(node, dict):
    return node
  first = node["args"][0] if node.get("args") else []
  tensors = first if isinstance(first, list) else [first]
  kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
  links = []
  for tensor in tensors:
    name, node_index, tensor_index = tensor["config"]["keras_history"]
    links.append([name, node_index + (name in nested_models), tensor_index, kwargs])
  return links


REWRITES: Dict[str, Callable[[dict], None]] = {"InputLayer": _input_layer}


def _probe_input(model) -> List[np.ndarray]:
  """Public inputs of the model's shapes (a fixed public seed: no secret is involved)."""
  rng = np.random.default_rng(0)
  probes = []
  for tensor in model.inputs:
    shape = [2 if d is None else d for d in tensor.shape]
    dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
    probes.append(rng.integers(0, 2, size=shape).astype(dtype) if dtype.kind in "iu"
                  else rng.normal(size=shape).astype(dtype))
  return probes


def _check_same_outputs(keras_3_model, keras_2_model) -> None:
  probe = _probe_input(keras_3_model)
  probe = probe[0] if len(probe) == 1 else probe
  want = np.asarray(keras_3_model(probe, training=False))
  got = np.asarray(keras_2_model(probe, training=False))
  if want.shape != got.shape or not np.allclose(got, want, **PROBE_TOLERANCE):
    raise TwinError(f"the Keras 2 twin of {keras_3_model.name!r} computes another function "
                    f"(largest output difference {np.max(np.abs(got - want)):.3g} on a probe "
                    "input): a layer's Keras 3 semantics have no Keras 2 equivalent here")
