"""tfdp: differentially private training of image classifiers with TensorFlow/Keras."""

__version__ = "0.1.0"
