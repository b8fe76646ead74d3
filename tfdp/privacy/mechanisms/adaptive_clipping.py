"""Adaptive clipping to a quantile of the gradient norms (Andrew et al. 2021): one Gaussian mechanism.

Release per step: the sum of gradients clipped to the current bound C_t plus N(0, (σ_Δ C_t)²), and
the count of examples whose norm is below C_t (each adds b_i - 1/2, sensitivity 1/2) plus
N(0, σ_b²). C_t is a function of earlier releases only, so it is post-processing. One example
moves the pair by at most C_t and 1/2, so after dividing each part by its std the pair is one
Gaussian mechanism with σ = (σ_Δ^-2 + (2 σ_b)^-2)^-1/2 (Section 3 of the paper), which the
accountant composes as DP-SGD's σ.

>>> round(adaptive_gradient_noise_multiplier(1.0, count_stddev=3.2), 4)
1.0124
"""

from typing import List

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import gaussian


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


class AdaptiveClipping(gaussian.Gaussian):
  """TF Privacy's quantile-adaptive clip query with the budget split above."""
  name = "adaptive_clipping"

  def applies(self, settings: base.Settings) -> bool:
    return settings.adaptive_clip_quantile is not None

  def check(self, settings: base.Settings) -> None:
    if settings.adaptive_clip_quantile is None:
      return
    base.require(0 < settings.adaptive_clip_quantile < 1,
                 f"adaptive_clip_quantile must be in (0, 1), got "
                 f"{settings.adaptive_clip_quantile}")
    base.require(settings.adaptive_clip_learning_rate > 0,
                 f"adaptive_clip_learning_rate must be > 0, got "
                 f"{settings.adaptive_clip_learning_rate}")
    base.require(settings.adaptive_clip_count_stddev is None
                 or settings.adaptive_clip_count_stddev > 0,
                 f"adaptive_clip_count_stddev must be > 0, got "
                 f"{settings.adaptive_clip_count_stddev}")
    base.require(settings.noise != "laplace" and settings.clip_groups is None
                 and settings.clipping_mode == "clip" and settings.layer_noise == "uniform"
                 and settings.noise_schedule == "constant",
                 "--adaptive_clip_quantile adapts one flat L2 clip bound with constant Gaussian "
                 "noise: it cannot be combined with --noise=laplace, --clip_groups, "
                 "--clipping_mode=normalize, --layer_noise or --noise_schedule")

  def notes(self, settings: base.Settings, sigma: float) -> List[str]:
    split = adaptive_gradient_noise_multiplier(sigma, settings.count_stddev)
    return [f"adaptive clipping (Andrew et al. 2021) to quantile "
            f"{settings.adaptive_clip_quantile}: gradient σ_Δ = {split:.4f} and unclipped-count "
            f"noise std {settings.count_stddev:g} combine into the σ above"]

  def resume_fields(self, settings: base.Settings):
    return {"l2_norm_clip": settings.l2_norm_clip,
            "adaptive_clip_learning_rate": settings.adaptive_clip_learning_rate,
            "adaptive_clip_count_stddev": settings.count_stddev}

  def make_query(self, settings, sigma, *, groups, coordinates, queries):
    del groups, coordinates  # One flat clip bound.
    return queries.adaptive(settings.l2_norm_clip, sigma, settings.adaptive_clip_quantile,
                            settings.adaptive_clip_learning_rate, settings.count_stddev,
                            settings.batch_size)


MECHANISM = AdaptiveClipping()
