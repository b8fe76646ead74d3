"""Local DP of the training images (--local_dp=laplace): what one perturbed image releases.

No TensorFlow. The images are perturbed once, before training, by tfdp.data.local_dp (whose
docstring holds the whole argument). Under replace-one adjacency ||x - x'||_1 <= H·W·C·255, so the
Laplace mechanism of scale β gives ε = H·W·C·255 / β per image; NumPy's sampler never draws beyond
LAPLACE_REACH scales, which leaves the δ of delta_per_image. It is not composed with the steps'
ε: it is a separate, per-image guarantee, reported beside it.

>>> epsilon_per_image((8, 8, 1), 255.0)
64.0
"""

import math

import numpy as np

PIXEL_RANGE = 255  # Pixel values are 0..255: the L1 diameter per value.
# NumPy's Laplace: scale · log of a uniform in [2^-53, 1 - 2^-53], so |Z| <= 52 ln 2 scales.
LAPLACE_REACH = 52 * math.log(2)


def epsilon_per_image(image_shape, scale: float) -> float:
  """ε of one image under replace-one adjacency: H·W·C·255 / β."""
  return float(np.prod(image_shape)) * PIXEL_RANGE / scale


def delta_per_image(image_shape, scale: float) -> float:
  """The δ beside epsilon_per_image for NumPy's sampler (tfdp.data.local_dp); 0 for β >= 7.09."""
  unreachable = PIXEL_RANGE + 0.5 - LAPLACE_REACH * scale  # Below it, 255 never lands.
  if unreachable <= 0:
    return 0.0
  per_value = 1.0 - 0.5 * math.exp(-unreachable / scale)
  return min(1.0, float(np.prod(image_shape)) * per_value)


def epsilon_per_pixel(scale: float) -> float:
  """255 / β: one pixel value changed, the rest fixed. Not the image's ε."""
  return PIXEL_RANGE / scale


class LocalLaplace:
  """The per-image release of --local_dp=laplace, as the registry lists it."""
  name = "local_dp"
  proven = True
  theorem = "Laplace mechanism per image, replace-one adjacency (pure ε plus the sampler's δ)"

  def report(self, name: str, scale: float, image_shape, randomness: str = "secret") -> dict:
    """What a run with local DP releases about it (metrics.json, model card); `randomness`
    'reproducible' when the noise followed from the public seed (no guarantee then)."""
    delta = delta_per_image(image_shape, scale)
    return {"mechanism": name, "scale": scale, "adjacency": "replace one image",
            "randomness": randomness,
            "epsilon_per_image": epsilon_per_image(image_shape, scale),
            "delta_per_image": delta,
            "epsilon_per_pixel": epsilon_per_pixel(scale),
            "note": (f"(ε, δ = {delta:.3g})-LDP per training image, each image perturbed once "
                     "before training; δ > 0 when the sampler's largest draw (36.04 scales) "
                     "cannot carry one pixel value to every output of another; "
                     "epsilon_per_pixel is for one pixel value alone, not the image's guarantee; "
                     "labels are not perturbed")}


MECHANISM = LocalLaplace()
