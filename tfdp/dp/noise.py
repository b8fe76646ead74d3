"""The noise primitives (DPQueries) the mechanisms build (tfdp.privacy.mechanisms), secret coins only.

The clipping engines (tfdp.dp.clipping) clip and sum; these DPQueries only add the noise, through
`get_noised_result`, inside the DP optimizers (tfdp.optimizers.dp_keras):
- Gaussian, one std σC for every coordinate: TF Privacy's GaussianSumQuery, drawing its noise from
  the run's secret coins (SecretGaussianSumQuery).
- Gaussian per group (--layer_noise): a NestedSumQuery of those with std s_k for the variables of
  group k; the accountant uses σ_eff = 1 / sqrt(Σ C_k² / s_k²) (tfdp.privacy.mechanisms).
- Adaptive clipping: TF Privacy's QuantileAdaptiveClipSumQuery (Andrew et al. 2021) with both of
  its Gaussian queries (the sum's and the unclipped count's) replaced by secret ones.
- Laplace (--noise=laplace): LaplaceSumQuery below, for sums of L1-clipped gradients.
- Discrete Gaussian (--noise=discrete_gaussian): DiscreteGaussianSumQuery below, on an integer
  grid, for users who need the noise hardened against floating-point attacks (its float64 sampler's
  distance from the ideal one is bounded and added to δ: tfdp.privacy.mechanisms).

Every query here draws its noise with tfdp.dp.randomness inside `randomness.keyed_noise(seed)`, the
step's secret key; none calls TensorFlow's stateful samplers, which the public seed would fix.
"""

import collections
import math
from typing import List, Sequence

import dp_accounting
import tensorflow as tf
from tfdp.compat.tf_privacy import dp_query
from tfdp.compat.tf_privacy import gaussian_query
from tfdp.compat.tf_privacy import nested_query
from tfdp.compat.tf_privacy import normalized_query
from tfdp.compat.tf_privacy import quantile_adaptive_clip_sum_query
from tfdp.compat.tf_privacy import quantile_estimator_query

from tfdp.dp import randomness
from tfdp.privacy import mechanisms


def _with_noise(sample_state, draw):
  """Every tensor of `sample_state` plus draw(its shape), added in float64 (tfdp.dp.randomness)."""
  return tf.nest.map_structure(lambda v: randomness.add_noise(v, draw(tf.shape(v))), sample_state)


class SecretGaussianSumQuery(gaussian_query.GaussianSumQuery):
  """TF Privacy's Gaussian sum query with float64 noise keyed by the step's secret seed.

  Release: sum + N(0, stddev²) per coordinate; with records clipped to L2 norm C the sensitivity
  is C and the noise multiplier stddev / C (randomness.gaussian: Box-Muller with its radius capped
  at 12.13 stds; its distance from the ideal Gaussian, 2^-106 per coordinate, the ledger adds to δ).
  """

  def get_noised_result(self, sample_state, global_state):
    noised = _with_noise(sample_state, lambda shape: randomness.gaussian(shape, global_state.stddev))
    event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
    return noised, global_state, event


class LaplaceSumQuery(dp_query.SumAggregationDPQuery):
  """Sum of records clipped to L1 norm `l1_norm_clip`, plus Laplace(b) noise on every coordinate.

  Adding or removing one record moves the sum by at most `l1_norm_clip` in L1 norm, so the release
  is the Laplace mechanism with dp_accounting noise multiplier b / l1_norm_clip. The float64
  inverse-CDF sampler (randomness.laplace) is not hardened against floating-point attacks.
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
    noised = _with_noise(sample_state, lambda shape: randomness.laplace(shape, global_state.scale))
    event = dp_accounting.LaplaceDpEvent(global_state.scale / global_state.l1_norm_clip)
    return noised, global_state, event


class DiscreteGaussianSumQuery(dp_query.SumAggregationDPQuery):
  """Sums on an integer grid plus discrete Gaussian noise: no floating-point noise is released.

  Mechanism (Kairouz, Liu & Steinke 2021, with deterministic rounding of the sum):
    z = round(s / γ)                  s the clipped sum (L2 sensitivity C), γ the grid step
    release γ · (z + Y),  Y_j ~ N_Z(0, scale²) i.i.d. on the integers (randomness.discrete_gaussian)
  Sensitivity of z: |round(a) - round(b) - (a - b)| < 1 per coordinate, so for neighbouring sums
  ||z - z'||₂ <= C / γ + sqrt(d) = Δ. With γ = ρ C / sqrt(d) (ρ = rounding_inflation), Δ γ = C (1 + ρ):
  rounding inflates the sensitivity by the factor 1 + ρ. The integer scale is
  ceil(σ Δ) >= σ Δ, so the release is the multivariate discrete Gaussian mechanism with
  sensitivity-to-scale ratio at most 1 / σ: (α, α / (2σ²))-RDP for every α (Canonne, Kamath &
  Steinke 2020), which tfdp.privacy.accounting amplifies by Poisson subsampling with a bound that
  holds for any mechanism (no continuous-Gaussian assumption). The multiplication by γ and the
  cast to float are post-processing. Two gaps, both in the statement: the sampler is float64
  inside, within total variation mechanisms.discrete_gaussian_tail(scale) of N_Z per coordinate
  (added to δ); and s is the engines' float32 sum, whose rounding error (neighbouring batches are
  summed in different orders) the bound on ||z - z'|| does not include.

  Args:
    l2_norm_clip: C, the per-example clip (what the engines clip to).
    noise_multiplier: σ, relative to the inflated sensitivity C (1 + ρ).
    coordinates: d, the number of noised coordinates (trainable parameters).
    rounding_inflation: ρ > 0.
  """

  _GlobalState = collections.namedtuple("_GlobalState", ["l2_norm_clip", "stddev", "grid"])

  def __init__(self, l2_norm_clip: float, noise_multiplier: float, coordinates: int,
               rounding_inflation: float):
    if coordinates < 1 or rounding_inflation <= 0:
      raise ValueError(f"need coordinates >= 1 and rounding_inflation > 0, got {coordinates}, "
                       f"{rounding_inflation}")
    self._l2_norm_clip = l2_norm_clip
    self._grid = rounding_inflation * l2_norm_clip / math.sqrt(coordinates)
    self._sensitivity = l2_norm_clip / self._grid + math.sqrt(coordinates)  # Δ in grid units.
    self._stddev = noise_multiplier * self._sensitivity * self._grid  # σ C (1 + ρ).

  @property
  def grid(self) -> float:
    return self._grid

  @property
  def grid_sensitivity(self) -> float:
    """Δ = C / γ + sqrt(d): the L2 sensitivity of the rounded sum, in grid units."""
    return self._sensitivity

  def initial_global_state(self):
    return self._GlobalState(tf.constant(self._l2_norm_clip, tf.float32),
                             tf.constant(self._stddev, tf.float64),
                             tf.constant(self._grid, tf.float64))

  def derive_sample_params(self, global_state):
    return global_state.l2_norm_clip

  def get_noised_result(self, sample_state, global_state):
    scale = tf.cast(tf.math.ceil(global_state.stddev / global_state.grid), tf.int64)

    def add_noise(v):
      on_grid = tf.cast(tf.round(tf.cast(v, tf.float64) / global_state.grid), tf.int64)
      noised = on_grid + randomness.discrete_gaussian(tf.shape(v), scale)
      return tf.cast(tf.cast(noised, tf.float64) * global_state.grid, v.dtype)

    return tf.nest.map_structure(add_noise, sample_state), global_state, (
        dp_accounting.UnsupportedDpEvent())


class _SecretQuantileEstimatorQuery(quantile_estimator_query.QuantileEstimatorQuery):
  """TF Privacy's quantile estimator with the unclipped count noised by the secret coins."""

  def _construct_below_estimate_query(self, below_estimate_stddev, expected_num_records):
    return normalized_query.NormalizedQuery(
        SecretGaussianSumQuery(l2_norm_clip=0.5, stddev=below_estimate_stddev),
        denominator=expected_num_records)


class SecretAdaptiveClipSumQuery(quantile_adaptive_clip_sum_query.QuantileAdaptiveClipSumQuery):
  """TF Privacy's adaptive-clip query whose two Gaussian queries draw from the secret coins."""

  def __init__(self, initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile,
               learning_rate, clipped_count_stddev, expected_num_records, geometric_update=True):
    super().__init__(initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile,
                     learning_rate, clipped_count_stddev, expected_num_records, geometric_update)
    self._quantile_estimator_query = _SecretQuantileEstimatorQuery(
        initial_l2_norm_clip, target_unclipped_quantile, learning_rate, clipped_count_stddev,
        expected_num_records, geometric_update)
    self._sum_query = SecretGaussianSumQuery(initial_l2_norm_clip,
                                             noise_multiplier * initial_l2_norm_clip)


class GroupedGaussianSumQuery(nested_query.NestedSumQuery):
  """One secret Gaussian query per variable (its group's bound C_g and std s_g), which knows C.

  Attributes:
    l2_norm_clip: C = sqrt(Σ_g C_g²), the bound on each example's whole gradient, which the engines
      divide among the groups themselves.
  """

  def __init__(self, l2_norm_clip: float, queries):
    super().__init__(queries)
    self.l2_norm_clip = l2_norm_clip


SECRET_LEAVES = (SecretGaussianSumQuery, LaplaceSumQuery, DiscreteGaussianSumQuery)


def noise_leaves(query: dp_query.DPQuery) -> List[dp_query.DPQuery]:
  """The queries under `query` (itself included) that hold no further query: those that noise."""
  children = [item for value in vars(query).values() for item in tf.nest.flatten(value)
              if isinstance(item, dp_query.DPQuery)]
  if not children:
    return [query]
  return [leaf for child in children for leaf in noise_leaves(child)]


def check_secret(query: dp_query.DPQuery) -> None:
  """Raises ValueError unless every noising query under `query` draws from the keyed samplers.

  TF Privacy's own queries draw from TensorFlow's stateful generator, which the public seed fixes
  (tf.keras.utils.set_random_seed): a run noised by them would be reproducible by anyone.
  """
  foreign = sorted({type(leaf).__name__ for leaf in noise_leaves(query)
                    if not isinstance(leaf, SECRET_LEAVES)})
  if foreign:
    raise ValueError(f"noise queries {foreign} do not draw from tfdp's secret coins; build the "
                     f"query with tfdp.dp.noise ({', '.join(c.__name__ for c in SECRET_LEAVES)})")


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
    return SecretGaussianSumQuery(l2_norm_clip, l2_norm_clip * noise_multiplier)
  stddevs = group_stddevs(l2_norm_clip, noise_multiplier, groups, layer_noise)
  bounds = group_bounds(l2_norm_clip, groups)
  return GroupedGaussianSumQuery(
      l2_norm_clip, [SecretGaussianSumQuery(bounds[g], stddevs[g]) for g in groups])


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
  return SecretAdaptiveClipSumQuery(
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
  if isinstance(global_state, DiscreteGaussianSumQuery._GlobalState):  # pylint: disable=protected-access
    return global_state._replace(stddev=global_state.stddev * tf.cast(factor, tf.float64))
  if isinstance(global_state, list):
    return [scale_noise(state, factor) for state in global_state]
  raise ValueError("noise schedules apply to Gaussian, discrete Gaussian and Laplace queries, not "
                   f"{type(global_state).__name__}")
