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
from typing import Callable, Dict, List, Sequence

# The float64 noise samplers of tfdp.dp.randomness draw from 53-bit uniforms in (0, 1].
FLOAT_UNIT = 2.0 ** -53
GAUSSIAN_MAX = math.sqrt(-2.0 * math.log(FLOAT_UNIT))  # Largest |Gaussian draw|, in stds: 8.57.
GAUSSIAN_TAIL = math.erfc(GAUSSIAN_MAX / math.sqrt(2.0))  # Ideal mass beyond it: 1.0e-17.
LAPLACE_TAIL = FLOAT_UNIT  # Ideal Laplace mass beyond the largest draw, 53 ln 2 = 36.7 scales.
_TAILS = {"gaussian": GAUSSIAN_TAIL, "laplace": LAPLACE_TAIL, "discrete_gaussian": 0.0}


def float_tail_delta(epsilon: float, steps: int, coordinates: int, noise: str) -> float:
  """What the float64 samplers' missing tails add to δ after `steps` steps of `coordinates`.

  The drawn noise is the ideal noise truncated where the sampler's largest draw lies; the truncated
  mechanism is within total variation η = steps · coordinates · tail of the ideal one, so an
  (ε, δ)-DP ideal run makes the drawn one (ε, δ + (1 + e^ε) η)-DP. 0 for the discrete Gaussian,
  whose integer sampler has no such truncation at any relevant scale.

  >>> f"{float_tail_delta(3.0, steps=2000, coordinates=272_474, noise='gaussian'):.2g}"
  '1.2e-07'
  >>> float_tail_delta(3.0, steps=2000, coordinates=272_474, noise="discrete_gaussian")
  0.0
  """
  if noise not in _TAILS:
    raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(_TAILS)}")
  if not math.isfinite(epsilon):
    return 1.0
  return min(1.0, (1.0 + math.exp(min(epsilon, 700.0))) * steps * coordinates * _TAILS[noise])

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
