"""TF Privacy's DP Keras optimizers, extended with a noise-once-per-logical-step entry point.

TF Privacy's own `_compute_gradients` clips, sums, noises and averages in one call, so a logical batch
split into several physical chunks would be noised once per chunk. These subclasses keep TF Privacy's
class and its `GaussianSumQuery` (the noise), and expose `noised_mean`, which the training step calls
once per logical step on the clipped sum it accumulated over all chunks.
"""

from typing import Sequence

import tensorflow as tf
from tensorflow_privacy.privacy.dp_query import gaussian_query
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras


class PrivateGradientMixin:
  """Adds `noised_mean` to a TF Privacy DP Keras optimizer class."""

  @property
  def l2_norm_clip(self) -> float:
    return float(self._dp_sum_query._l2_norm_clip)  # pylint: disable=protected-access

  @property
  def noise_multiplier(self) -> float:
    query = self._dp_sum_query
    return float(query._stddev / query._l2_norm_clip)  # pylint: disable=protected-access

  def noised_mean(self, clipped_sum: Sequence[tf.Tensor],
                  expected_batch_size: float) -> list:
    """The Gaussian mechanism on a clipped gradient sum, then the average.

    Args:
      clipped_sum: per variable, the sum over the logical batch of per-example gradients each
        clipped to L2 norm `l2_norm_clip` (jointly over all variables). Private; L2 sensitivity
        `l2_norm_clip` under adding or removing one example.
      expected_batch_size: q * N, a public constant (dividing by the drawn batch size would leak it).

    Returns:
      (clipped_sum + N(0, (σ C)^2 I)) / expected_batch_size per variable: differentially private.
    """
    self._was_dp_gradients_called = True  # Unlocks TF Privacy's apply_gradients guard honestly.
    noised, _, _ = self._dp_sum_query.get_noised_result(list(clipped_sum), self._global_state)
    return [g / expected_batch_size for g in noised]


def _gaussian(cls):
  """Constructor of `cls` that takes (l2_norm_clip, noise_multiplier) as TF Privacy's do."""

  def make(l2_norm_clip: float, noise_multiplier: float, **kwargs):
    query = gaussian_query.GaussianSumQuery(l2_norm_clip, l2_norm_clip * noise_multiplier)
    return cls(dp_sum_query=query, **kwargs)

  make.__name__ = cls.__name__
  return make


class DPSGD(PrivateGradientMixin, dp_optimizer_keras.GenericDPSGDOptimizer):
  """TF Privacy's DP-SGD Keras optimizer with `noised_mean`."""


class DPAdam(PrivateGradientMixin, dp_optimizer_keras.GenericDPAdamOptimizer):
  """TF Privacy's DP-Adam Keras optimizer with `noised_mean`."""


class DPAdagrad(PrivateGradientMixin, dp_optimizer_keras.GenericDPAdagradOptimizer):
  """TF Privacy's DP-Adagrad Keras optimizer with `noised_mean`."""


class DPRMSprop(PrivateGradientMixin,
                dp_optimizer_keras.make_keras_generic_optimizer_class(
                    tf.keras.optimizers.legacy.RMSprop)):
  """DP-RMSProp from TF Privacy's class factory, with `noised_mean`."""


make_dp_sgd = _gaussian(DPSGD)
make_dp_adam = _gaussian(DPAdam)
make_dp_adagrad = _gaussian(DPAdagrad)
make_dp_rmsprop = _gaussian(DPRMSprop)
