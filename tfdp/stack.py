"""Which TensorFlow and which Keras this process runs tfdp on.

tfdp's models, per-example engines and DP optimizers are Keras 2 code (TF Privacy's Keras
optimizers are Keras 2 only). TensorFlow 2.15 brings Keras 2 as `tf.keras`. From 2.16 on,
`pip install tensorflow` brings Keras 3, and `tf.keras` is Keras 2 only when TF_USE_LEGACY_KERAS
is set and the `tf_keras` package is installed; TensorFlow reads the variable when `tf.keras` is
first reached. So `import tfdp` sets TF_USE_LEGACY_KERAS=1 where Keras 3 is installed and
`tf_keras` is too, unless the user set the variable, the way tfdp.cpu sets oneDNN. A user's own
Keras 3 model (`import keras`) still reaches tfdp.keras.make_private (tfdp.keras.keras3 says how).

This module imports no TensorFlow at load time.
"""

import importlib.metadata
import importlib.util
import os
from typing import Dict, MutableMapping, Optional

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"
_TRUE = ("1", "true", "True")
_ORIGIN: Dict[str, str] = {}  # Who decided the variable: recorded once, at `import tfdp`.


def version_of(distribution: str) -> Optional[str]:
  """The installed version of a distribution ('2.21.0'), None if it is not installed."""
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def major(version: Optional[str]) -> int:
  """2 for '2.15.0', 0 for None."""
  return int(version.split(".")[0]) if version else 0


def release(version: Optional[str]) -> tuple:
  """(2, 21) for '2.21.0', () for None."""
  return tuple(int(part) for part in version.split(".")[:2]) if version else ()


def keras_3_installed() -> bool:
  """Whether `import keras` gives Keras 3 (TF >= 2.16 brings it)."""
  return major(version_of("keras")) >= 3


def default_keras_2(environ: MutableMapping[str, str] = os.environ) -> str:
  """Sets TF_USE_LEGACY_KERAS=1 where Keras 3 and tf_keras are both installed, unless the user
  set it; returns who decided: 'user', 'tfdp', or 'tensorflow' (Keras 2 is TensorFlow's own
  `tf.keras` here, or tf_keras is missing and nothing can be chosen)."""
  if LEGACY_KERAS_VARIABLE in environ:
    origin = "user"
  elif keras_3_installed() and importlib.util.find_spec("tf_keras") is not None:
    environ[LEGACY_KERAS_VARIABLE] = "1"
    origin = "tfdp"
  else:
    origin = "tensorflow"
  _ORIGIN.setdefault("origin", origin)
  return origin


def tf_keras_is_keras_2(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Whether `tf.keras` is Keras 2 in this process (without importing TensorFlow)."""
  if not keras_3_installed():
    return True
  return (environ.get(LEGACY_KERAS_VARIABLE) in _TRUE
          and importlib.util.find_spec("tf_keras") is not None)


def require_keras_2(environ: MutableMapping[str, str] = os.environ) -> None:
  """Raises, naming the cause, where `tf.keras` would be Keras 3: tfdp cannot run there."""
  if tf_keras_is_keras_2(environ):
    return
  if importlib.util.find_spec("tf_keras") is None:
    raise ImportError(
        f"tfdp needs Keras 2 as tf.keras; this TensorFlow {version_of('tensorflow')} brings "
        f"Keras {version_of('keras')}, and the tf_keras package is missing: pip install "
        f"'tf-keras~={'.'.join(map(str, release(version_of('tensorflow'))))}.0' "
        "(or install tfdp with -c constraints-tf2.21.txt)")
  raise ImportError(
      f"tfdp needs Keras 2 as tf.keras, but {LEGACY_KERAS_VARIABLE}="
      f"{environ.get(LEGACY_KERAS_VARIABLE)!r} makes it Keras {version_of('keras')}: unset it "
      "(tfdp then sets it to 1) or set it to 1. Your Keras 3 models still go through "
      "tfdp.keras.make_private.")


def keras_status() -> str:
  """One phrase for logs and benchmark headers, e.g.
  'Keras 2 as tf.keras (tf_keras 2.21.0, TF_USE_LEGACY_KERAS=1 set by tfdp)'."""
  if not keras_3_installed():
    return f"Keras 2 as tf.keras (keras {version_of('keras')}, TensorFlow's own)"
  value = os.environ.get(LEGACY_KERAS_VARIABLE)
  who = {"user": "set by the user", "tfdp": "set by tfdp"}.get(_ORIGIN.get("origin"), "")
  setting = f"{LEGACY_KERAS_VARIABLE}={value}{', ' + who if who else ''}"
  if tf_keras_is_keras_2():
    return f"Keras 2 as tf.keras (tf_keras {version_of('tf-keras')}, {setting})"
  return f"Keras {version_of('keras')} as tf.keras ({setting}): tfdp cannot run"


def describe() -> str:
  """One line: 'TensorFlow 2.21.0, Keras 2 as tf.keras (...), TF Privacy 0.9.0'."""
  return (f"TensorFlow {version_of('tensorflow')}, {keras_status()}, TF Privacy "
          f"{version_of('tensorflow-privacy')}")
