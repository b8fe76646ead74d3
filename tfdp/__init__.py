"""tfdp: differentially private training of image classifiers with TensorFlow/Keras."""

from tfdp import cpu as _cpu

# Before anything of tfdp imports TensorFlow, which reads them once (tfdp.cpu says why).
_cpu.default_onednn_on()
_cpu.default_quiet_logs()

__version__ = "0.1.0"

# Subpackages load on first access (`tfdp.optimizers`), so that `import tfdp.privacy`, which
# imports no TensorFlow, does not pay for the rest.
_SUBPACKAGES = ("data", "export", "keras", "models", "optimizers", "privacy")


def __getattr__(name):
  if name in _SUBPACKAGES:
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module(f"tfdp.{name}")
  raise AttributeError(f"module 'tfdp' has no attribute {name!r}")
