"""Registry from flag names to optimizers.

Every optimizer is a Keras 2 (legacy) optimizer: TF Privacy 0.9.0's DP classes subclass those, and the
non-private baselines use the same classes so that a comparison differs only in privacy. The DP
variants' moment updates (Adam, RMSProp, Adagrad) read only the noised gradient: post-processing, so
their hyperparameters cost no privacy.
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from tfdp import names
from tfdp.dp import noise
from tfdp.optimizers import dp_keras

_legacy = tf.keras.optimizers.legacy

_SGD = ("momentum",)
_ADAM = ("epsilon", "beta_1", "beta_2")
_RMSPROP = ("epsilon", "rho", "momentum")
_ADAGRAD = ("epsilon", "initial_accumulator_value")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  make: Callable[..., tf.keras.optimizers.Optimizer]
  private: bool
  default_learning_rate: float
  hyperparameters: Tuple[str, ...] = ()  # Keras keyword arguments a run may set.
  proven: bool = True  # Private only: whether a proof backs the ε the accountant computes.


# Default learning rates are the usual starting points for each update rule, not tuned values.
OPTIMIZERS: Dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(_legacy.SGD, False, 0.1, _SGD),
    "adam": OptimizerSpec(_legacy.Adam, False, 1e-3, _ADAM),
    "rmsprop": OptimizerSpec(_legacy.RMSprop, False, 1e-3, _RMSPROP),
    "adagrad": OptimizerSpec(_legacy.Adagrad, False, 0.05, _ADAGRAD),
    "dp_sgd": OptimizerSpec(dp_keras.DPSGD, True, 0.1, _SGD),
    "dp_adam": OptimizerSpec(dp_keras.DPAdam, True, 1e-3, _ADAM),
    "dp_rmsprop": OptimizerSpec(dp_keras.DPRMSprop, True, 1e-3, _RMSPROP),
    "dp_adagrad": OptimizerSpec(dp_keras.DPAdagrad, True, 0.05, _ADAGRAD),
    "dice_sgd": OptimizerSpec(dp_keras.DiceSGD, True, 0.1, _SGD, proven=False),  # See its class.
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of OPTIMIZERS."""
  names.check("optimizer", name, sorted(OPTIMIZERS))


def _spec(name: str) -> OptimizerSpec:
  check_name(name)
  return OPTIMIZERS[name]


def is_private(name: str) -> bool:
  return _spec(name).private


def has_privacy_proof(name: str) -> bool:
  """Whether optimizer `name` is private and a proof backs the ε the accountant reports for it."""
  spec = _spec(name)
  return spec.private and spec.proven


def default_learning_rate(name: str) -> float:
  return _spec(name).default_learning_rate


def check_hyperparameters(name: str, hyperparameters: Mapping[str, Any]) -> None:
  """Raises ValueError naming any hyperparameter optimizer `name` does not take."""
  accepted = _spec(name).hyperparameters
  unknown = sorted(set(hyperparameters) - set(accepted))
  if unknown:
    raise ValueError(f"optimizer {name} does not take {', '.join(unknown)}; it takes "
                     f"{', '.join(accepted) or 'none'}")


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.0,
                    hyperparameters: Optional[Mapping[str, Any]] = None,
                    l2_norm_clip: float = 1.0, noise_multiplier: float = 0.0,
                    dp_query=None, error_clip: Optional[float] = None):
  """Builds the optimizer `name`.

  Args:
    name: a key of OPTIMIZERS.
    learning_rate: step size.
    momentum: for sgd/rmsprop variants (ignored by the others, which have none).
    hyperparameters: Keras keyword arguments (epsilon, beta_1, ...), checked against the spec.
    l2_norm_clip: per-example L2 clip norm C (DP optimizers without `dp_query` only).
    noise_multiplier: σ; the noise std on the clipped sum is σ * C (DP, without `dp_query`).
    dp_query: the noise DPQuery (tfdp.dp.noise); default: Gaussian with (l2_norm_clip, σ).
    error_clip: DiceSGD's C2 (default: l2_norm_clip).
  """
  spec = _spec(name)
  kwargs = dict(hyperparameters or {})
  check_hyperparameters(name, kwargs)
  if "momentum" in spec.hyperparameters:
    kwargs.setdefault("momentum", momentum)
  kwargs["learning_rate"] = learning_rate
  if spec.private:
    kwargs["dp_sum_query"] = dp_query or noise.gaussian(l2_norm_clip, noise_multiplier)
  if spec.make is dp_keras.DiceSGD:
    kwargs["error_clip"] = error_clip or l2_norm_clip
  return spec.make(**kwargs)
