"""The discrete Gaussian on an integer grid (--noise=discrete_gaussian). No TensorFlow.

Release per step (tfdp.dp.noise.DiscreteGaussianSumQuery): the clipped sum s (L2 sensitivity C)
rounded to the grid γ = ρ C / sqrt(d), z = round(s / γ), plus N_Z(0, t²) per coordinate on the
integers, t = ceil(σ Δ) with Δ = C/γ + sqrt(d) the rounded sum's sensitivity in grid units
(rounding inflates the sensitivity by 1 + ρ). The unsampled release is (α, α / (2σ²))-RDP for every
α (Canonne, Kamath & Steinke 2020), but the exact subsampled-Gaussian analysis relies on the
continuous mixture, so Poisson subsampling is bounded by Zhu & Wang 2019's general bound at integer
orders (tfdp.privacy.subsampling), and the RDP accountant converts it to (ε, δ). There is no
dp_accounting event for it: the PLD accountant refuses it. The float64 sampler's distance from
N_Z (below) is added to δ; the engines' float32 sum's rounding error is not in the sensitivity
bound, and the statement says so.

>>> f"{discrete_gaussian_tail(1000):.2g}"
'2.6e-14'
"""

import functools
import math
from typing import List, Optional, Tuple

import numpy as np

from tfdp.privacy import subsampling
from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import floats

FLOAT_UNIT = floats.FLOAT_UNIT

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



@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(noise_multiplier: float, sampling_probability: float) -> np.ndarray:
  unsampled = lambda order: order / (2.0 * noise_multiplier ** 2)
  return np.array([subsampling.subsampled_rdp_any_mechanism(unsampled, sampling_probability, order)
                   for order in subsampling.INTEGER_ORDERS])


class DiscreteGaussian(base.Mechanism):
  """Integer-grid noise of scale ceil(σ Δ) on the rounded clipped sum."""
  name = "discrete_gaussian"
  family = "discrete_gaussian"
  accountants = ("rdp",)
  theorem = ("discrete Gaussian mechanism (Canonne, Kamath & Steinke 2020) under Zhu & Wang "
             "2019's general Poisson-subsampling bound, by RDP")

  def applies(self, settings: base.Settings) -> bool:
    return settings.noise == "discrete_gaussian"

  def check(self, settings: base.Settings) -> None:
    base.require(0 < settings.discrete_rounding_inflation <= 1,
                 f"discrete_rounding_inflation must be in (0, 1], got "
                 f"{settings.discrete_rounding_inflation}")
    base.require(settings.noise != "discrete_gaussian"
                 or (settings.layer_noise == "uniform" and settings.adaptive_clip_quantile is None),
                 "--noise=discrete_gaussian adds one integer-grid noise scale to the whole clipped "
                 "sum: it cannot be combined with --layer_noise or --adaptive_clip_quantile")

  def notes(self, settings: base.Settings, sigma: float) -> List[str]:
    return [f"discrete Gaussian: the clipped sum is rounded to an integer grid fine enough "
            f"that the sensitivity grows by {settings.discrete_rounding_inflation:.0%}, and σ "
            "above is relative to that inflated sensitivity"]

  def resume_fields(self, settings: base.Settings):
    return {"l2_norm_clip": settings.l2_norm_clip,
            "discrete_rounding_inflation": settings.discrete_rounding_inflation}

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del groups
    return queries.DiscreteGaussianSumQuery(settings.l2_norm_clip, sigma, coordinates,
                                            settings.discrete_rounding_inflation)

  def dp_event(self, sigma: float, sampling_probability: float):
    raise ValueError(f"the PLD accountant has no {self.family} mechanism; use the RDP accountant")

  def rdp_orders(self) -> Tuple[float, ...]:
    return subsampling.INTEGER_ORDERS

  def rdp_of_step(self, sigma: float, sampling_probability: float) -> np.ndarray:
    return _rdp_of_one_step(sigma, sampling_probability)

  def float_tail(self, grid_scale: Optional[int] = None) -> float:
    if grid_scale is None:
      raise ValueError("the discrete Gaussian's distance from the ideal depends on its integer "
                       "scale: give grid_scale")
    return discrete_gaussian_tail(grid_scale)

  def describe(self, sigma: float) -> str:
    return (f"discrete Gaussian noise on an integer grid, σ = {sigma:.4f} of the "
            "rounding-inflated sensitivity")

  def epsilon_text(self, epsilon_by) -> str:
    return f"ε = {epsilon_by('rdp'):.3f} (RDP accountant, general Poisson-subsampling bound)"

  def float_note(self, extra_delta, coordinates, grid_scale):
    if not coordinates:
      return "discrete Gaussian noise: the guarantee is at δ plus a term that grows with the model"
    return (f"discrete Gaussian noise on an integer grid, drawn by a float64 sampler within "
            f"total variation {discrete_gaussian_tail(grid_scale):.2g} of the "
            f"ideal per coordinate: the guarantee is at δ + {extra_delta:.2g} for it; the float32 "
            "clipped sum is rounded to the grid, and its float32 error is not in the "
            "sensitivity bound")


MECHANISM = DiscreteGaussian()
