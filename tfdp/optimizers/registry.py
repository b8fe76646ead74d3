"""Registry from flag names to optimizers.

Every optimizer is a Keras 2 (legacy) optimizer: TF Privacy 0.9.0's DP classes subclass those, and the
non-private baselines use the same classes so that a comparison differs only in privacy.
"""

import dataclasses
from typing import Callable, Dict

import tensorflow as tf

from tfdp.optimizers import dp_keras

_legacy = tf.keras.optimizers.legacy


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  make: Callable[..., tf.keras.optimizers.Optimizer]
  private: bool
  default_learning_rate: float
  uses_momentum: bool = False


# Default learning rates are the usual starting points for each update rule, not tuned values.
OPTIMIZERS: Dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(_legacy.SGD, False, 0.1, uses_momentum=True),
    "adam": OptimizerSpec(_legacy.Adam, False, 1e-3),
    "rmsprop": OptimizerSpec(_legacy.RMSprop, False, 1e-3, uses_momentum=True),
    "adagrad": OptimizerSpec(_legacy.Adagrad, False, 0.05),
    "dp_sgd": OptimizerSpec(dp_keras.make_dp_sgd, True, 0.1, uses_momentum=True),
    "dp_adam": OptimizerSpec(dp_keras.make_dp_adam, True, 1e-3),
    "dp_rmsprop": OptimizerSpec(dp_keras.make_dp_rmsprop, True, 1e-3, uses_momentum=True),
    "dp_adagrad": OptimizerSpec(dp_keras.make_dp_adagrad, True, 0.05),
}


def _spec(name: str) -> OptimizerSpec:
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
  return OPTIMIZERS[name]


def is_private(name: str) -> bool:
  return _spec(name).private


def default_learning_rate(name: str) -> float:
  return _spec(name).default_learning_rate


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.0,
                    l2_norm_clip: float = 1.0, noise_multiplier: float = 0.0):
  """Builds the optimizer `name`.

  Args:
    name: a key of OPTIMIZERS.
    learning_rate: step size.
    momentum: for sgd/rmsprop variants (ignored by the others, which have none).
    l2_norm_clip: per-example L2 clip norm C (DP optimizers only).
    noise_multiplier: σ; the noise std on the clipped sum is σ * C (DP optimizers only).
  """
  spec = _spec(name)
  kwargs = {"learning_rate": learning_rate}
  if spec.uses_momentum:
    kwargs["momentum"] = momentum
  if spec.private:
    kwargs.update(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier)
  return spec.make(**kwargs)
