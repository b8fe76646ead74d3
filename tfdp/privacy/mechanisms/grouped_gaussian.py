"""Gaussian noise with its own std per clipping group (--layer_noise): one Gaussian mechanism.

Release per step: group k of the gradient (clipped to C_k, Σ_k C_k² = C²) summed, plus N(0, s_k²)
per coordinate. Dividing group k by s_k gives unit noise everywhere and an L2 sensitivity of
sqrt(Σ_k C_k² / s_k²), so the step is a Gaussian mechanism with noise multiplier
σ_eff = 1 / sqrt(Σ_k C_k² / s_k²), which the accountant composes exactly as DP-SGD's σ
(tfdp.privacy.mechanisms.gaussian). The stds s_k ∝ LAYER_NOISE[layer_noise](k, G) are public.

>>> round(effective_noise_multiplier([0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]), 6)
1.0
"""

import math
from typing import Callable, Dict, List, Sequence

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import gaussian

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
  base_std = noise_multiplier * math.sqrt(sum((c / w) ** 2 for c, w in zip(clip_bounds, weights)))
  return [base_std * w for w in weights]


class GroupedGaussian(gaussian.Gaussian):
  """Per-group noise stds whose effective noise multiplier is σ."""
  name = "grouped_gaussian"

  def applies(self, settings: base.Settings) -> bool:
    return settings.noise == "gaussian" and settings.layer_noise != "uniform"

  def check(self, settings: base.Settings) -> None:
    base.require(settings.layer_noise in LAYER_NOISE,
                 f"unknown layer_noise {settings.layer_noise!r}; valid: {', '.join(LAYER_NOISE)}")
    base.require(settings.layer_noise == "uniform"
                 or (settings.clip_groups is not None and settings.noise != "laplace"),
                 f"--layer_noise={settings.layer_noise} scales the Gaussian noise per clipping "
                 "group: it needs --clip_groups (K or layer) and --noise=gaussian")

  def notes(self, settings: base.Settings, sigma: float) -> List[str]:
    return [f"per-group noise ({settings.layer_noise}): group stds s_k chosen so that the "
            f"effective σ = 1/sqrt(Σ C_k²/s_k²) is the σ above"]

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del coordinates
    return queries.gaussian(settings.l2_norm_clip, sigma, groups, settings.layer_noise)


MECHANISM = GroupedGaussian()
