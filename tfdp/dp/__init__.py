"""The private step: per-example gradients -> clip -> masked sum (noise lives in the DP optimizer)."""

from tfdp import stack as _stack

_stack.require_keras_2()  # The engines are Keras 2 code: refuse Keras 3 as tf.keras by name.
