"""How each noise variant maps onto the one noise multiplier the accountant composes. No TensorFlow.

Every variant below is a Gaussian mechanism on the clipped sum (plus, for adaptive clipping, on a
count); rescaling each coordinate by its noise std turns it into a mechanism with unit noise, whose L2
sensitivity is 1 / σ_eff. The accountant composes σ_eff.

>>> round(effective_noise_multiplier([0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]), 6)
1.0
>>> round(adaptive_gradient_noise_multiplier(1.0, count_stddev=3.2), 4)
1.0124
"""

import math
from typing import Callable, Dict, List, Optional, Sequence

# The float64 noise samplers of tfdp.dp.randomness draw uniforms in (0, 1] on the 2^-53 grid, and
# the ones whose logarithm sets a tail (Box-Muller's radius, the Laplace magnitude) from two such
# draws, whose smallest value is 2^-106.
FLOAT_UNIT = 2.0 ** -53
TAIL_UNIT = 2.0 ** -106
# Box-Muller's radius sqrt(-2 ln U) is at most sqrt(212 ln 2) = 12.13: that caps the *radius*, not
# each coordinate R cos θ. The sampler differs from the ideal one only where U < 2^-106 (ideal
# mass 2^-106), so each coordinate is within total variation 2^-106 = 1.2e-32 of N(0, 1).
GAUSSIAN_MAX = math.sqrt(-2.0 * math.log(TAIL_UNIT))  # Largest |Gaussian draw|, in stds: 12.13.
GAUSSIAN_TAIL = TAIL_UNIT  # = exp(-GAUSSIAN_MAX² / 2), the ideal P(R > GAUSSIAN_MAX).
LAPLACE_MAX = -math.log(TAIL_UNIT)  # Largest Laplace magnitude, in scales: 106 ln 2 = 73.5.
LAPLACE_TAIL = TAIL_UNIT  # = exp(-LAPLACE_MAX), the ideal P(|Z| > LAPLACE_MAX scales).
_TAILS = {"gaussian": GAUSSIAN_TAIL, "laplace": LAPLACE_TAIL}

# The discrete Gaussian's sampler (randomness.discrete_gaussian, Canonne, Kamath & Steinke's
# Algorithms 2 and 3) is exact on paper and not in float64. Per round it draws U uniform on
# {0..t-1} from 64 bits modulo t (total variation <= t·2^-64 from uniform) and compares 53-bit
# uniforms U' in {k·2^-53} with float64 probabilities p̂: P(U' <= p̂) = floor(p̂·2^53)·2^-53 is
# within 2^-53 of p̂, and p̂ within 3·2^-53 of p for e^(-U/t) (a division and an exp, each within
# an ulp), within 4·2^-53 for the acceptance exp(-(|Y| - t)²/(2t²)) (its argument's relative error
# times x·e^-x <= 1/e, plus the exp's ulp); the sign compares with 1/2 exactly. The geometric
# V = floor(-ln W) has its thresholds at the integers v <= 36: each within 2^-53 + 3·2^-53·v·e^-v
# of e^-v, plus e^-36.7 <= 2^-53 beyond, at most 42·2^-53 in total. So one round, coupled with the
# ideal one, differs with probability at most 51·2^-53 + t·2^-64. The ideal algorithm ends after
# R rounds with E[R] <= 4.5: a round returns a value with probability P(D) · P(not a rejected -0)
# · P(accept) >= (1 - e^-1) · (1 + e^-1)/2 · e^(-1/2)(1 - e^-2) = 0.226 (the acceptance is at least
# e^(-1/2) on |Y| <= 2t, which holds with probability >= 1 - e^-2). By a union bound over rounds,
# each coordinate is within total variation 4.5·(51·2^-53 + t·2^-64) of N_Z(0, t²).
DISCRETE_GAUSSIAN_ROUNDS = 4.5  # E[R] bound above (1 / 0.226 = 4.42).
DISCRETE_GAUSSIAN_ROUND_TV = 51 * FLOAT_UNIT  # Plus t·2^-64 for U.


def discrete_gaussian_tail(scale: float) -> float:
  """Per-coordinate total variation between the discrete Gaussian sampler at integer scale t and
  N_Z(0, t²) (see above): 4.5·(51·2^-53 + t·2^-64).

  >>> f"{discrete_gaussian_tail(1000):.2g}"
  '2.6e-14'
  """
  return DISCRETE_GAUSSIAN_ROUNDS * (DISCRETE_GAUSSIAN_ROUND_TV + scale * 2.0 ** -64)


def discrete_gaussian_scale(noise_multiplier: float, coordinates: int,
                            rounding_inflation: float) -> int:
  """The sampler's integer scale ceil(σ Δ), Δ = C/γ + sqrt(d) = sqrt(d)(1/ρ + 1) in grid units
  (tfdp.dp.noise.DiscreteGaussianSumQuery)."""
  root = math.sqrt(coordinates)
  return math.ceil(noise_multiplier * (root / rounding_inflation + root))


def float_tail_delta(epsilon: float, steps: int, coordinates: int, noise: str,
                     grid_scale: Optional[int] = None) -> float:
  """What the float64 samplers' distance from the ideal noise adds to δ after `steps` steps of
  `coordinates`.

  Each coordinate's draw is within total variation `tail` of the ideal noise (GAUSSIAN_TAIL,
  LAPLACE_TAIL, or discrete_gaussian_tail(grid_scale), the sampler's integer scale), so the run is
  within η = steps · coordinates · tail of the ideal mechanism, and an (ε, δ)-DP ideal run makes the
  drawn one (ε, δ + (1 + e^ε) η)-DP.

  >>> f"{float_tail_delta(3.0, steps=2000, coordinates=272_474, noise='gaussian'):.2g}"
  '1.4e-22'
  >>> f"{float_tail_delta(3.0, 2000, 272_474, 'discrete_gaussian', grid_scale=106_000):.2g}"
  '0.00059'
  """
  if noise == "discrete_gaussian":
    if grid_scale is None:
      raise ValueError("the discrete Gaussian's distance from the ideal depends on its integer "
                       "scale: give grid_scale")
    tail = discrete_gaussian_tail(grid_scale)
  elif noise in _TAILS:
    tail = _TAILS[noise]
  else:
    raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(_TAILS)}, discrete_gaussian")
  if not math.isfinite(epsilon):
    return 1.0
  return min(1.0, (1.0 + math.exp(min(epsilon, 700.0))) * steps * coordinates * tail)

# Relative noise std of group k of G (0 = nearest the input), before normalization.
LAYER_NOISE: Dict[str, Callable[[int, int], float]] = {
    "uniform": lambda k, groups: 1.0,
    "depth_decay": lambda k, groups: 1.0 / (k + 1),  # The studies' 1 / (layer_index + 1).
}


def effective_noise_multiplier(clip_bounds: Sequence[float], stddevs: Sequence[float]) -> float:
  """σ_eff = 1 / sqrt(Σ_k C_k² / s_k²) of group clip bounds C_k and noise stds s_k.

  Dividing group k by s_k gives unit noise everywhere and an L2 sensitivity of sqrt(Σ C_k² / s_k²),
  so the whole release is a Gaussian mechanism with noise multiplier σ_eff.
  """
  if len(clip_bounds) != len(stddevs) or not clip_bounds:
    raise ValueError("need one noise std per clip bound")
  if any(s <= 0 for s in stddevs) or any(c <= 0 for c in clip_bounds):
    raise ValueError(f"clip bounds and noise stds must be > 0, got {clip_bounds}, {stddevs}")
  return 1.0 / math.sqrt(sum((c / s) ** 2 for c, s in zip(clip_bounds, stddevs)))


def group_noise_stddevs(noise_multiplier: float, clip_bounds: Sequence[float],
                        layer_noise: str = "uniform") -> List[float]:
  """Noise std s_k of every group such that effective_noise_multiplier(C, s) == noise_multiplier.

  s_k = s_0 * w_k with w_k = LAYER_NOISE[layer_noise](k, G), and s_0 = σ sqrt(Σ_k C_k² / w_k²).
  """
  if layer_noise not in LAYER_NOISE:
    raise ValueError(f"unknown layer_noise {layer_noise!r}; valid: {', '.join(LAYER_NOISE)}")
  groups = len(clip_bounds)
  weights = [LAYER_NOISE[layer_noise](k, groups) for k in range(groups)]
  base = noise_multiplier * math.sqrt(sum((c / w) ** 2 for c, w in zip(clip_bounds, weights)))
  return [base * w for w in weights]


def adaptive_gradient_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
  """σ_Δ of the gradient sum when adaptive clipping also releases a noised unclipped count.

  Andrew et al. (2021), Section 3: each example adds b_i - 1/2 (sensitivity 1/2) to the count with
  noise std σ_b, and its clipped gradient (sensitivity C) to the sum with std σ_Δ C; the pair is one
  Gaussian mechanism with σ = (σ_Δ^-2 + (2 σ_b)^-2)^-1/2, so σ_Δ = (σ^-2 - (2 σ_b)^-2)^-1/2.
  """
  if not noise_multiplier > 0:
    raise ValueError(f"adaptive clipping needs a noise multiplier > 0, got {noise_multiplier}")
  if not noise_multiplier < 2 * count_stddev:
    raise ValueError(
        f"adaptive clipping: the unclipped-count noise std {count_stddev:g} alone spends more "
        f"than σ = {noise_multiplier:g} allows (needs σ < 2 * count std); raise "
        "--adaptive_clip_count_stddev or the privacy budget")
  return (noise_multiplier ** -2 - (2 * count_stddev) ** -2) ** -0.5


def dice_noise_factor(clip: float, error_clip: float) -> float:
  """sqrt(1 + 2 C2 / C1): DiceSGD's noise std over DP-SGD's at the same σ (Zhang et al. 2024)."""
  if not error_clip >= clip > 0:
    raise ValueError(f"DiceSGD needs error clip C2 >= clip C1 > 0, got C1 = {clip}, "
                     f"C2 = {error_clip}")
  return math.sqrt(1 + 2 * error_clip / clip)
