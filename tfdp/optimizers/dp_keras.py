"""TF Privacy's DP Keras optimizers, extended with a noise-once-per-logical-step entry point.

TF Privacy's own `_compute_gradients` clips, sums, noises and averages in one call, so a logical batch
split into several physical chunks would be noised once per chunk. These subclasses keep TF Privacy's
classes and DPQueries (the noise), and expose `noised_mean`, which the training step calls once per
logical step on the clipped sum it accumulated over all chunks. The query decides the noise
(tfdp.dp.noise): Gaussian, per-group Gaussian, adaptive clipping, or Laplace.
"""

from typing import Optional, Sequence

import tensorflow as tf
from tfdp.compat.tf_privacy import quantile_adaptive_clip_sum_query
from tfdp.compat.tf_privacy import dp_optimizer_keras

from tfdp.dp import noise as noise_lib
from tfdp.dp import randomness

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
    noise_lib.check_secret(self._dp_sum_query)
    self.noise_scale = tf.Variable(1.0, trainable=False, name="noise_scale")
    self._adaptive_clip = None
    if isinstance(self._dp_sum_query, _AdaptiveQuery):
      initial = self._global_state.sum_state.l2_norm_clip
      # Every replica assigns the same value (tfdp.training.distribution): keep the first's.
      self._adaptive_clip = tf.Variable(initial, trainable=False, name="adaptive_l2_norm_clip",
                                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
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
    """C, the bound on each example's whole gradient: a constant, or the adaptive clip's value.

    The engines take C and divide it among the clipping groups themselves (C / sqrt(G) each in
    L2). With per-group noise the query is nested, one Gaussian query per variable carrying its
    group's bound C_g; C is then the bound the grouped query records, not a group's bound (which
    the engines would divide again).
    """
    if self.adaptive:
      return self._adaptive_clip.read_value()
    if isinstance(self._dp_sum_query, noise_lib.GroupedGaussianSumQuery):
      return float(self._dp_sum_query.l2_norm_clip)
    state = self._global_state
    return float(getattr(state, "l2_norm_clip", getattr(state, "l1_norm_clip", 0.0)))

  def track_variables(self, variables: Sequence[tf.Variable]) -> None:
    """Creates per-variable private state before a checkpoint is restored (none by default)."""
    del variables

  def noised_mean(self, clipped_sum: Sequence[tf.Tensor], expected_batch_size: float, *,
                  noise_seed: tf.Tensor,
                  centered_unclipped_count: Optional[tf.Tensor] = None,
                  plain_sum: Optional[Sequence[tf.Tensor]] = None) -> list:
    """The noise mechanism on a clipped gradient sum, then the average.

    Args:
      clipped_sum: per variable, the sum over the logical batch of per-example gradients each
        clipped (jointly over all variables, or per group) so that the sum's sensitivity is the
        clip norm. Private.
      expected_batch_size: q * N, a public constant (dividing by the drawn batch size would leak it).
      noise_seed: [2] int64, the key of this step's noise (tfdp.dp.randomness): secret, fresh
        from the run's coins for every step, never stored.
      centered_unclipped_count: adaptive clipping only: Σ_i (1[||g_i|| <= clip] - 1/2), each
        example's contribution has sensitivity 1/2; released with noise by the query. Private.
      plain_sum: the unclipped gradient sum (DiceSGD only). Private, never released directly.

    Returns:
      (clipped_sum + noise) / expected_batch_size per variable: differentially private.
    """
    del plain_sum
    self._was_dp_gradients_called = True  # Unlocks TF Privacy's apply_gradients guard honestly.
    with randomness.keyed_noise(noise_seed):
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
  """DiceSGD (Zhang, Bu, Wu, Hong, ICLR 2024): DP-SGD with clipped error feedback, kept as a
  baseline with NO proven differential-privacy guarantee.

  In units of the summed gradient, with per-example clip C1 and error clip C2 >= C1:
    V_t = Σ_{i in B_t} clip(g_i, C1) + clip(E_t, C2)      released with Gaussian noise
    E_{t+1} = E_t + Σ_{i in B_t} g_i - V_t                 hidden error state
  E is a residue of summed gradients, so C2 is the paper's C2 (a bound on the averaged error) times
  the expected batch size B, and C2 >= C1 compares that sum bound with one example's bound. The
  query's noise std is σ C1 sqrt(1 + 2 C2 / C1) (tfdp.privacy.mechanisms.dice_noise_factor), the
  paper's sizing.

  Why no ε is proven here. E_{t+1} keeps g_i - clip(g_i, C1), the unclipped part of every example
  sampled at step t, and clip(E, C2) feeds it into later releases whether or not the example is
  sampled there. One example of gradient norm R, sampled once, thus moves about (R - C1) / C2
  further releases by up to C2 each, and those releases get no amplification by sampling: the
  example's influence rides on E, not on the draw. Per-example gradients are not bounded, so
  neither is R, nor the number of releases it reaches, nor their total sensitivity: no finite ε
  follows from σ. The ε reported beside such a run is DP-SGD's at the same σ (`epsilon_if_dp_sgd`),
  for comparison only, and the config refuses --epsilon with this optimizer.

  E is an unnoised function of unclipped private gradients, so it is never released: it lives in
  variables the optimizer does not track (not Keras slots), hence in no checkpoint and no export. A
  resumed run restarts E at zero, and `not_checkpointed` tells the training loop to say so.

  Args:
    error_clip: C2, the L2 bound on the fed-back error, in summed-gradient units (see above).
  """

  needs_plain_sum = True
  not_checkpointed = ("DiceSGD's error state E is never checkpointed (it is an unnoised function "
                      "of unclipped private gradients): it restarts at zero",)

  def __init__(self, *args, error_clip: float, **kwargs):
    super().__init__(*args, **kwargs)
    self.error_clip = float(error_clip)
    self._errors = None

  def track_variables(self, variables):
    """Creates E = 0 beside `variables`, untracked: no checkpoint or export can hold it."""
    # Under tf.distribute every replica computes the same E from the all-reduced sums.
    self._errors = tuple(tf.Variable(tf.zeros_like(v), trainable=False, name="dice_error",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                         for v in variables)

  @property
  def error(self) -> list:
    """The current hidden error E, one tensor per variable (private: for tests, never release)."""
    return [e.read_value() for e in self._errors]

  def noised_mean(self, clipped_sum, expected_batch_size, *, plain_sum=None, **kwargs):
    """V = clipped_sum + clip(E, C2), noised and averaged; then E += plain_sum - V."""
    if plain_sum is None or self._errors is None:
      raise ValueError("DiceSGD needs track_variables() and the unclipped gradient sum")
    clipped_errors, _ = tf.clip_by_global_norm(self.error, self.error_clip)
    released = [c + e for c, e in zip(clipped_sum, clipped_errors)]
    for error, plain, value in zip(self._errors, plain_sum, released):
      error.assign_add(plain - value)
    return super().noised_mean(released, expected_batch_size, **kwargs)
