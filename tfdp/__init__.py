"""tfdp: differentially private training of image classifiers with TensorFlow/Keras."""

from tfdp import cpu as _cpu
from tfdp import stack as _stack

# Before anything of tfdp imports TensorFlow, which reads them once (tfdp.cpu and tfdp.stack say
# why): oneDNN on, quiet C++ logs, and Keras 2 as tf.keras where TF >= 2.16 brings Keras 3.
_cpu.default_onednn_on()
_cpu.default_quiet_logs()
_stack.default_keras_2()
if _cpu.tfdp_command():  # python -m tfdp.train etc.: TensorFlow's import-time lines dropped.
  _cpu.import_tensorflow_quietly()

__version__ = "0.1.0"

# Subpackages load on first access (`tfdp.optimizers`), so that `import tfdp.privacy`, which
# imports no TensorFlow, does not pay for the rest.
_SUBPACKAGES = ("data", "export", "keras", "models", "optimizers", "privacy")


def __getattr__(name):
  if name in _SUBPACKAGES:
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module(f"tfdp.{name}")
  raise AttributeError(f"module 'tfdp' has no attribute {name!r}")
