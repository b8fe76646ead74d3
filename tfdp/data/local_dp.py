"""Local differential privacy on images: each training image perturbed once, before training.

Privacy argument. Each training image x in {0..255}^(H·W·C) is released as
y = clip(round(x + Z), 0, 255) with Z i.i.d. Laplace(β) per pixel value, drawn once per image
from a secure random source; training only ever sees y (drawing fresh noise every epoch would
release a new y each time, and the releases would compose). Under replace-one adjacency (one
image x changed into any other x'), ||x - x'||_1 <= H·W·C·255, so the Laplace mechanism gives
ε = H·W·C·255 / β for the whole image; rounding and clipping are post-processing. Training on the
y's (with any optimizer) is post-processing too, so every output of the run is ε-LDP with respect
to each training image. Labels are not perturbed: they are not covered.

The δ that holds. NumPy's Laplace sampler inverts a 53-bit uniform in (0, 1), so it never draws
beyond LAPLACE_REACH = 52 ln 2 = 36.04 scales. With 36.04 β < 255.5 (β < 7.09), some outputs are
reachable from pixel value 0 and not from 255: no pure ε holds, whatever ε. Per value, the mass
that value 0 puts on outputs that value 255 never produces is at most
δ_v = P(Z < 255.5 - 36.04 β) = 1 - e^(-(255.5 - 36.04 β)/β) / 2 (and 0 when β >= 7.09); over the
H·W·C values of an image, δ = min(1, H·W·C · δ_v) (basic composition). `delta_per_image` is that
δ, reported beside ε in the statement, metrics and card: for small β it is 1, no guarantee at
all. (Up to the float64 grid, as for every float sampler here.)

For scale: 28x28 grayscale images at β = 1 give ε = 199,920 per image, a guarantee that protects
nothing. The per-pixel figure 255 / β (one pixel value changed, the others fixed) is what some
studies quote; it is reported beside, labelled per pixel, never as the image's ε.

    perturbed = local_dp.perturb_once(images, scale=2.0, rng=local_dp.secret_rng())
"""

import dataclasses
import math
import secrets
from typing import Callable, Dict

import numpy as np

from tfdp import names
from tfdp.privacy.mechanisms import local_dp as local_dp_release

PIXEL_RANGE = local_dp_release.PIXEL_RANGE
LAPLACE_REACH = local_dp_release.LAPLACE_REACH
epsilon_per_image = local_dp_release.epsilon_per_image
delta_per_image = local_dp_release.delta_per_image
epsilon_per_pixel = local_dp_release.epsilon_per_pixel


def secret_rng() -> np.random.Generator:
  """A generator keyed by 256 bits from the operating system's CSPRNG, never stored."""
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence(secrets.randbits(256))))


def perturb_once(images: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
  """uint8 [N, H, W, C] -> uint8 [N, H, W, C]: + Laplace(scale) per value, rounded, clipped."""
  if not scale > 0:
    raise ValueError(f"local_dp_scale must be > 0, got {scale}")
  noisy = images.astype(np.float64) + rng.laplace(0.0, scale, size=images.shape)
  return np.clip(np.round(noisy), 0, PIXEL_RANGE).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class LocalDP:
  """A local mechanism: how images are perturbed, and what it reports."""
  perturb: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


MECHANISMS: Dict[str, LocalDP] = {"laplace": LocalDP(perturb_once)}
NAMES = ("none", *sorted(MECHANISMS))  # What --local_dp takes; "none": no perturbation.


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is one of NAMES."""
  names.check("local_dp", name, NAMES)


def report(name: str, scale: float, image_shape, randomness: str = "secret") -> dict:
  """What a run with local DP releases about it (tfdp.privacy.mechanisms.local_dp)."""
  return local_dp_release.MECHANISM.report(name, scale, image_shape, randomness)
