"""TF Privacy's DP Keras optimizers, extended with a noise-once-per-logical-step entry point.

TF Privacy's own `_compute_gradients` clips, sums, noises and averages in one call, so a logical batch
split into several physical chunks would be noised once per chunk. These subclasses keep TF Privacy's
classes and DPQueries (the noise), and expose `noised_mean`, which the training step calls once per
logical step on the clipped sum it accumulated over all chunks. The query decides the noise
(tfdp.dp.noise): Gaussian, per-group Gaussian, adaptive clipping, or Laplace.
"""

from typing import Optional, Sequence

import tensorflow as tf
from tensorflow_privacy.privacy.dp_query import quantile_adaptive_clip_sum_query
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

from tfdp.dp import noise as noise_lib

_AdaptiveQuery = quantile_adaptive_clip_sum_query.QuantileAdaptiveClipSumQuery


class PrivateGradientMixin:
  """Adds `noised_mean`, a noise-schedule factor and adaptive-clipping state to a DP optimizer.

  Attributes:
    noise_scale: tf.Variable, the current step's factor on every noise std (a noise schedule);
      the training loop sets it from the privacy ledger before each step.
  """

  needs_plain_sum = False  # Whether noised_mean needs the unclipped gradient sum (DiceSGD).

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.noise_scale = tf.Variable(1.0, trainable=False, name="noise_scale")
    self._adaptive_clip = None
    if isinstance(self._dp_sum_query, _AdaptiveQuery):
      initial = self._global_state.sum_state.l2_norm_clip
      self._adaptive_clip = tf.Variable(initial, trainable=False, name="adaptive_l2_norm_clip")
      self._track_trackable(self._adaptive_clip, name="adaptive_l2_norm_clip")

  @property
  def l2_norm_clip(self) -> float:
    return float(self.clip_norm())

  @property
  def noise_multiplier(self) -> float:
    """Noise std / clip of a single Gaussian query (the schedule's factor not applied)."""
    state = self._global_state
    return float(state.stddev / state.l2_norm_clip)

  @property
  def adaptive(self) -> bool:
    return self._adaptive_clip is not None

  def clip_norm(self):
    """The clip bound of this step: a constant, or the adaptive clip's current value."""
    if self.adaptive:
      return self._adaptive_clip.read_value()
    state = self._global_state
    state = state[0] if isinstance(state, list) else state
    return float(getattr(state, "l2_norm_clip", getattr(state, "l1_norm_clip", 0.0)))

  def track_variables(self, variables: Sequence[tf.Variable]) -> None:
    """Creates per-variable private state before a checkpoint is restored (none by default)."""
    del variables

  def noised_mean(self, clipped_sum: Sequence[tf.Tensor], expected_batch_size: float, *,
                  centered_unclipped_count: Optional[tf.Tensor] = None,
                  plain_sum: Optional[Sequence[tf.Tensor]] = None) -> list:
    """The noise mechanism on a clipped gradient sum, then the average.

    Args:
      clipped_sum: per variable, the sum over the logical batch of per-example gradients each
        clipped (jointly over all variables, or per group) so that the sum's sensitivity is the
        clip norm. Private.
      expected_batch_size: q * N, a public constant (dividing by the drawn batch size would leak it).
      centered_unclipped_count: adaptive clipping only: Σ_i (1[||g_i|| <= clip] - 1/2), each
        example's contribution has sensitivity 1/2; released with noise by the query. Private.
      plain_sum: the unclipped gradient sum (DiceSGD only). Private, never released directly.

    Returns:
      (clipped_sum + noise) / expected_batch_size per variable: differentially private.
    """
    del plain_sum
    self._was_dp_gradients_called = True  # Unlocks TF Privacy's apply_gradients guard honestly.
    if self.adaptive:
      noised = self._adaptive_noised_sum(list(clipped_sum), centered_unclipped_count)
    else:
      state = noise_lib.scale_noise(self._global_state, self.noise_scale)
      noised, _, _ = self._dp_sum_query.get_noised_result(list(clipped_sum), state)
    return [g / expected_batch_size for g in noised]

  def _adaptive_noised_sum(self, clipped_sum, centered_unclipped_count):
    if centered_unclipped_count is None:
      raise ValueError("adaptive clipping needs the centered unclipped count of the batch")
    query = self._dp_sum_query
    initial = query.initial_global_state()
    clip = self._adaptive_clip.read_value()
    state = initial._replace(  # pylint: disable=protected-access
        sum_state=query._sum_query.make_global_state(clip, clip * initial.noise_multiplier),
        quantile_estimator_state=initial.quantile_estimator_state._replace(current_estimate=clip))
    sample = query._SampleState(clipped_sum, centered_unclipped_count)  # pylint: disable=protected-access
    noised, new_state, _ = query.get_noised_result(sample, state)
    self._adaptive_clip.assign(new_state.sum_state.l2_norm_clip)
    return noised


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


class DiceSGD(DPSGD):
  """DiceSGD (Zhang, Bu, Wu, Hong, ICLR 2024): DP-SGD with clipped error feedback.

  In units of the summed gradient, with per-example clip C1 and error clip C2 >= C1:
    V_t = Σ_i clip(g_i, C1) + clip(E_t, C2)      released with Gaussian noise
    E_{t+1} = E_t + Σ_i g_i - V_t                 hidden state, never released
  The query's noise std must be σ C1 sqrt(1 + 2 C2 / C1) (tfdp.privacy.mechanisms.dice_noise_factor),
  the paper's sizing for the extra sensitivity the error feedback carries.

  Args:
    error_clip: C2, the L2 bound on the fed-back error (same units as the clipped sum).
  """

  needs_plain_sum = True

  def __init__(self, *args, error_clip: float, **kwargs):
    super().__init__(*args, **kwargs)
    self.error_clip = float(error_clip)
    self._errors = None

  def track_variables(self, variables):
    self._errors = [self.add_slot(v, "dice_error") for v in variables]

  def noised_mean(self, clipped_sum, expected_batch_size, *, centered_unclipped_count=None,
                  plain_sum=None):
    if plain_sum is None or self._errors is None:
      raise ValueError("DiceSGD needs track_variables() and the unclipped gradient sum")
    clipped_errors, _ = tf.clip_by_global_norm([e.read_value() for e in self._errors],
                                               self.error_clip)
    released = [c + e for c, e in zip(clipped_sum, clipped_errors)]
    for error, plain, value in zip(self._errors, plain_sum, released):
      error.assign_add(plain - value)
    return super().noised_mean(released, expected_batch_size,
                               centered_unclipped_count=centered_unclipped_count)
