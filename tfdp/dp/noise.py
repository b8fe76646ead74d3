"""The DPQueries that noise a clipped gradient sum, built from the run's privacy plan.

The clipping engines (tfdp.dp.clipping) clip and sum; these TF Privacy DPQueries only add the noise,
through `get_noised_result`, inside the DP optimizers (tfdp.optimizers.dp_keras):
- Gaussian, one std σC for every coordinate: TF Privacy's GaussianSumQuery.
- Gaussian per group (--layer_noise): a NestedSumQuery of GaussianSumQuery with std s_k for the
  variables of group k; the accountant uses σ_eff = 1 / sqrt(Σ C_k² / s_k²)
  (tfdp.privacy.mechanisms).
- Adaptive clipping: TF Privacy's QuantileAdaptiveClipSumQuery (Andrew et al. 2021).
- Laplace (--noise=laplace): LaplaceSumQuery below, for sums of L1-clipped gradients.
"""

import collections
from typing import List, Sequence

import dp_accounting
import tensorflow as tf
from tensorflow_privacy.privacy.dp_query import dp_query
from tensorflow_privacy.privacy.dp_query import gaussian_query
from tensorflow_privacy.privacy.dp_query import nested_query
from tensorflow_privacy.privacy.dp_query import quantile_adaptive_clip_sum_query

from tfdp.privacy import mechanisms


def sample_laplace(shape, scale: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
  """Laplace(0, scale) draws: the difference of two Exp(1) draws, times the scale."""
  tiny = tf.constant(1e-12, dtype)
  exponentials = -tf.math.log(tf.random.uniform(tf.concat([[2], shape], 0), tiny, 1.0, dtype))
  return tf.cast(scale, dtype) * (exponentials[0] - exponentials[1])


class LaplaceSumQuery(dp_query.SumAggregationDPQuery):
  """Sum of records clipped to L1 norm `l1_norm_clip`, plus Laplace(b) noise on every coordinate.

  Adding or removing one record moves the sum by at most `l1_norm_clip` in L1 norm, so the release
  is the Laplace mechanism with dp_accounting noise multiplier b / l1_norm_clip.
  """

  _GlobalState = collections.namedtuple("_GlobalState", ["l1_norm_clip", "scale"])

  def __init__(self, l1_norm_clip: float, scale: float):
    self._l1_norm_clip = l1_norm_clip
    self._scale = scale

  def make_global_state(self, l1_norm_clip, scale):
    return self._GlobalState(tf.cast(l1_norm_clip, tf.float32), tf.cast(scale, tf.float32))

  def initial_global_state(self):
    return self.make_global_state(self._l1_norm_clip, self._scale)

  def derive_sample_params(self, global_state):
    return global_state.l1_norm_clip

  def preprocess_record(self, params, record):
    leaves = tf.nest.flatten(record)
    norm = tf.add_n([tf.reduce_sum(tf.abs(leaf)) for leaf in leaves])
    factor = tf.minimum(1.0, params / tf.maximum(norm, 1e-30))
    return tf.nest.map_structure(lambda leaf: leaf * factor, record)

  def get_noised_result(self, sample_state, global_state):
    noised = tf.nest.map_structure(
        lambda v: v + sample_laplace(tf.shape(v), global_state.scale, v.dtype), sample_state)
    event = dp_accounting.LaplaceDpEvent(global_state.scale / global_state.l1_norm_clip)
    return noised, global_state, event


def gaussian(l2_norm_clip: float, noise_multiplier: float, groups: Sequence[int] = (0,),
             layer_noise: str = "uniform") -> dp_query.SumAggregationDPQuery:
  """The Gaussian query for clipped sums with effective noise multiplier `noise_multiplier`.

  Args:
    l2_norm_clip: C, the whole sum's L2 sensitivity; group k of G is clipped to C_k = C / sqrt(G).
    noise_multiplier: σ_eff, what the accountant composes.
    groups: the clipping group of every trainable variable (tfdp.dp.groups.variable_groups).
    layer_noise: a tfdp.privacy.mechanisms.LAYER_NOISE name.
  """
  if layer_noise == "uniform":
    return gaussian_query.GaussianSumQuery(l2_norm_clip, l2_norm_clip * noise_multiplier)
  stddevs = group_stddevs(l2_norm_clip, noise_multiplier, groups, layer_noise)
  bounds = group_bounds(l2_norm_clip, groups)
  return nested_query.NestedSumQuery(
      [gaussian_query.GaussianSumQuery(bounds[g], stddevs[g]) for g in groups])


def group_bounds(l2_norm_clip: float, groups: Sequence[int]) -> List[float]:
  count = max(groups) + 1
  return [l2_norm_clip / count ** 0.5] * count


def group_stddevs(l2_norm_clip: float, noise_multiplier: float, groups: Sequence[int],
                  layer_noise: str) -> List[float]:
  """Noise std of every group (index = group) whose effective noise multiplier is σ."""
  return mechanisms.group_noise_stddevs(noise_multiplier, group_bounds(l2_norm_clip, groups),
                                        layer_noise)


def adaptive(initial_l2_norm_clip: float, noise_multiplier: float, target_quantile: float,
             learning_rate: float, count_stddev: float, expected_batch_size: float):
  """TF Privacy's QuantileAdaptiveClipSumQuery with the budget split of Andrew et al.

  `noise_multiplier` is the total σ the accountant composes; the gradient sum gets
  σ_Δ = (σ^-2 - (2 count_stddev)^-2)^-1/2 and the unclipped count gets std `count_stddev`.
  """
  return quantile_adaptive_clip_sum_query.QuantileAdaptiveClipSumQuery(
      initial_l2_norm_clip=initial_l2_norm_clip,
      noise_multiplier=mechanisms.adaptive_gradient_noise_multiplier(noise_multiplier,
                                                                     count_stddev),
      target_unclipped_quantile=target_quantile, learning_rate=learning_rate,
      clipped_count_stddev=count_stddev, expected_num_records=expected_batch_size,
      geometric_update=True)


def scale_noise(global_state, factor: tf.Tensor):
  """A global state whose noise stds are multiplied by `factor` (a noise schedule's step)."""
  if isinstance(global_state, gaussian_query.GaussianSumQuery._GlobalState):  # pylint: disable=protected-access
    return global_state._replace(stddev=global_state.stddev * factor)
  if isinstance(global_state, LaplaceSumQuery._GlobalState):  # pylint: disable=protected-access
    return global_state._replace(scale=global_state.scale * factor)
  if isinstance(global_state, list):
    return [scale_noise(state, factor) for state in global_state]
  raise ValueError("noise schedules apply to Gaussian and Laplace queries, not "
                   f"{type(global_state).__name__}")
