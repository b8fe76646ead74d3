"""The Gaussian mechanism on the clipped sum: DP-SGD's noise (Abadi et al. 2016). No TensorFlow.

Release per step: the sum of the sampled examples' gradients, each clipped to L2 norm C, plus
N(0, σ²C²) on every coordinate. Adding or removing one example moves the sum by at most C, so a
step is the Gaussian mechanism with noise multiplier σ, amplified by Poisson sampling at rate q;
what carries over between steps (weights, optimizer slots) is post-processing of earlier releases.
The accountant composes PoissonSampled(q, Gaussian(σ)) over the steps: RDP (Mironov et al. 2019)
enforces the budget, PLD is reported beside it.

>>> MECHANISM.describe(1.1)
'Gaussian noise, σ = 1.1000'
"""

import functools
from typing import Callable, Optional, Tuple

import dp_accounting
import numpy as np

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import floats


@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(noise_multiplier: float, sampling_probability: float) -> np.ndarray:
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)))
  return np.array(accountant._rdp)  # pylint: disable=protected-access  (RDP is linear in steps)


def float_note(head: str, extra_delta: float, coordinates: int) -> str:
  """The statement's note on a float sampler described by `head`, with its term in δ."""
  if not coordinates:  # A plan without a model (tfdp.privacy.planner).
    return f"{head}: the guarantee is at δ plus a tail that grows with the parameter count"
  return f"{head}: the guarantee is at δ + {extra_delta:.2g} for its distance from the ideal noise"


class Gaussian(base.Mechanism):
  """One noise std σC on every coordinate of the L2-clipped sum."""
  name = "gaussian"
  family = "gaussian"
  accountants = ("rdp", "pld")
  theorem = ("Poisson-subsampled Gaussian mechanism, composed by RDP (Mironov et al. 2019) and "
             "PLD (Koskela et al. 2020)")

  def applies(self, settings: base.Settings) -> bool:
    return settings.noise == "gaussian"

  def resume_fields(self, settings: base.Settings):
    return {"l2_norm_clip": settings.l2_norm_clip}

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del groups, coordinates  # One std for every coordinate.
    return queries.SecretGaussianSumQuery(settings.l2_norm_clip, settings.l2_norm_clip * sigma)

  def dp_event(self, sigma: float, sampling_probability: float):
    return dp_accounting.PoissonSampledDpEvent(sampling_probability,
                                               dp_accounting.GaussianDpEvent(sigma))

  def rdp_orders(self) -> Tuple[float, ...]:
    return tuple(dp_accounting.rdp.RdpAccountant()._orders)  # pylint: disable=protected-access

  def rdp_of_step(self, sigma: float, sampling_probability: float) -> np.ndarray:
    return _rdp_of_one_step(sigma, sampling_probability)

  def float_tail(self, grid_scale: Optional[int] = None) -> float:
    return floats.GAUSSIAN_TAIL

  def describe(self, sigma: float) -> str:
    return f"Gaussian noise, σ = {sigma:.4f}"

  def epsilon_text(self, epsilon_by: Callable[[str], float]) -> str:
    return f"ε = {epsilon_by('rdp'):.3f} (RDP accountant; PLD: {epsilon_by('pld'):.3f})"

  def float_note(self, extra_delta, coordinates, grid_scale):
    return float_note(f"float64 Box-Muller noise, radius capped at {floats.GAUSSIAN_MAX:.2f} stds",
                      extra_delta, coordinates)


MECHANISM = Gaussian()
