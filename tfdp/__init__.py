"""tfdp: differentially private training of image classifiers with TensorFlow/Keras."""

from tfdp import cpu as _cpu

# Before anything of tfdp imports TensorFlow, which reads it once (tfdp.cpu says why).
_cpu.default_onednn_on()

__version__ = "0.1.0"
