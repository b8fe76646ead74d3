"""DiceSGD (Zhang et al. 2024): a labelled baseline with NO proven DP guarantee. No TensorFlow.

Release per step: the clipped sum (clip C1) plus the clipped hidden error (clip C2 >= C1) plus
Gaussian noise of std σ C1 sqrt(1 + 2 C2 / C1), the paper's sizing. The hidden error carries the
unclipped part of a sampled example's gradient into later releases where that example is not
sampled, about (R - C1) / C2 of them for gradient norm R: those releases are not amplified by
sampling, and for unbounded gradients no finite ε holds. So no theorem applies: the ledger marks
the run unproven and reports DP-SGD's ε at the same σ for comparison only, and a target ε (which
would claim a guarantee) is refused.

>>> round(dice_noise_factor(1.0, 1.0), 4)
1.7321
"""

import math
from typing import List

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import gaussian
from tfdp.privacy.mechanisms import grouped_gaussian


def dice_noise_factor(clip: float, error_clip: float) -> float:
  """sqrt(1 + 2 C2 / C1): DiceSGD's noise std over DP-SGD's at the same σ (Zhang et al. 2024)."""
  if not error_clip >= clip > 0:
    raise ValueError(f"DiceSGD needs error clip C2 >= clip C1 > 0, got C1 = {clip}, "
                     f"C2 = {error_clip}")
  return math.sqrt(1 + 2 * error_clip / clip)


class DiceSGD(gaussian.Gaussian):
  """DiceSGD's noise on top of DP-SGD's Gaussian query (per group with --layer_noise)."""
  name = "dice_sgd"
  proven = False
  theorem = "none: DiceSGD has no privacy proof (see tfdp.privacy.mechanisms.dice_sgd)"

  def applies(self, settings: base.Settings) -> bool:
    return settings.optimizer == "dice_sgd"

  def check(self, settings: base.Settings) -> None:
    base.require(settings.dice_error_clip is None
                 or settings.dice_error_clip >= settings.l2_norm_clip,
                 f"dice_error_clip (C2) must be >= l2_norm_clip (C1) = {settings.l2_norm_clip}, "
                 f"got {settings.dice_error_clip}")
    if settings.optimizer is None:  # A privacy config alone: the optimizer is not known yet.
      return
    dice = self.applies(settings)
    base.require(settings.dice_error_clip is None or dice,
                 "--dice_error_clip is DiceSGD's error clip: it needs --optimizer=dice_sgd")
    base.require(not dice or (settings.noise == "gaussian"
                              and settings.adaptive_clip_quantile is None),
                 "--optimizer=dice_sgd uses Gaussian noise with a fixed clip: it cannot be "
                 "combined with --noise=laplace or --adaptive_clip_quantile")
    base.require(not dice or settings.target_epsilon is None,
                 f"--optimizer=dice_sgd cannot take --epsilon={settings.target_epsilon}: DiceSGD "
                 "has no proven DP guarantee (its hidden error re-releases the unclipped part of "
                 "earlier gradients at later steps, unamplified by sampling, so no finite ε holds "
                 "for unbounded gradients). Give --noise_multiplier instead; the run then reports "
                 "DP-SGD's ε at that σ for comparison only, not as a guarantee")

  def notes(self, settings: base.Settings, sigma: float) -> List[str]:
    grouped = grouped_gaussian.MECHANISM
    notes = grouped.notes(settings, sigma) if grouped.applies(settings) else []
    c1, c2 = settings.l2_norm_clip, settings.error_clip
    factor = dice_noise_factor(c1, c2)
    return notes + [
        f"DiceSGD (Zhang et al. 2024), C1 = {c1:g}, C2 = {c2:g} (summed-gradient units): noise "
        f"std σ·C1·sqrt(1 + 2·C2/C1) = {sigma * c1 * factor:.4f}, the paper's sizing. NO PROVEN "
        "DP GUARANTEE: the hidden error feeds the unclipped part of a sampled example's gradient "
        "into later releases where it is not sampled, about (R - C1)/C2 of them for gradient "
        "norm R, unamplified by sampling and unbounded for unbounded gradients; the ε shown is "
        "DP-SGD's at σ, for comparison only"]

  def resume_fields(self, settings: base.Settings):
    return {"l2_norm_clip": settings.l2_norm_clip, "dice_error_clip": settings.error_clip}

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del coordinates
    noise_std_factor = dice_noise_factor(settings.l2_norm_clip, settings.error_clip)
    return queries.gaussian(settings.l2_norm_clip, sigma * noise_std_factor, groups,
                            settings.layer_noise)


MECHANISM = DiceSGD()
