"""The Laplace mechanism on the L1-clipped sum (--noise=laplace). No TensorFlow.

Release per step: the sum of the sampled examples' gradients, each clipped to L1 norm C₁, plus
Laplace(b) on every coordinate. One example moves the sum by at most C₁ in L1 norm, so a step is
the Laplace mechanism with noise multiplier σ = b / C₁ (dp_accounting's convention), amplified by
Poisson sampling. RDP has no bound for it here; the PLD accountant composes the steps.

>>> MECHANISM.describe(2.0)
'Laplace noise, b / L1 clip = 2.0000'
"""

from typing import Optional

import dp_accounting

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import floats
from tfdp.privacy.mechanisms import gaussian


class Laplace(base.Mechanism):
  """L1 clipping to l1_norm_clip and Laplace noise of scale σ · l1_norm_clip."""
  name = "laplace"
  family = "laplace"
  accountants = ("pld",)
  theorem = "Poisson-subsampled Laplace mechanism, composed by PLD (Koskela et al. 2020)"

  def applies(self, settings: base.Settings) -> bool:
    return settings.noise == "laplace"

  def check(self, settings: base.Settings) -> None:
    base.require(settings.noise != "laplace" or settings.clipping == "vectorized",
                 "--noise=laplace clips per-example L1 norms, which need the materialized "
                 "per-example gradients of --clipping=vectorized")

  def resume_fields(self, settings: base.Settings):
    return {"l2_norm_clip": None, "l1_norm_clip": settings.l1_norm_clip}

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del groups, coordinates
    return queries.LaplaceSumQuery(settings.l1_norm_clip, sigma * settings.l1_norm_clip)

  def dp_event(self, sigma: float, sampling_probability: float):
    return dp_accounting.PoissonSampledDpEvent(sampling_probability,
                                               dp_accounting.LaplaceDpEvent(sigma))

  def float_tail(self, grid_scale: Optional[int] = None) -> float:
    return floats.LAPLACE_TAIL

  def describe(self, sigma: float) -> str:
    return f"Laplace noise, b / L1 clip = {sigma:.4f}"

  def epsilon_text(self, epsilon_by) -> str:
    return f"ε = {epsilon_by('pld'):.3f} (PLD accountant)"

  def float_note(self, extra_delta, coordinates, grid_scale):
    return gaussian.float_note("float64 Laplace noise, NOT hardened against floating-point "
                               "attacks (use --noise=discrete_gaussian)", extra_delta, coordinates)


MECHANISM = Laplace()
