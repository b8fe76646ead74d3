"""A DP estimate of each feature map's mean and variance, to normalize fixed features (Tramèr &
Boneh 2021's "data normalization" of ScatterNet features).

    python -m tfdp.train --model=scatter_cnn --model_kwargs=normalization=statistics \
        --normalization_noise_multiplier=8 --epsilon=3 ...

Privacy argument. The features x_i = f(image_i) ∈ R^{H×W×K} come from a front f that has no
trainable weights and depends on no data (the scattering transform), so each depends on its own
image alone. Before any training step, the run releases, once,

    A = Σ_i clip_{C_1}(a_i) + N(0, σ_n² C_1² I_K),   a_i[k] = mean over positions of x_i[:, :, k],
    B = Σ_i clip_{C_2}(b_i) + N(0, σ_n² C_2² I_K),   b_i[k] = mean over positions of x_i[:, :, k]²,

where clip_C(v) = v · min(1, C / ‖v‖₂) and the noise comes from the run's secret coins
(tfdp.dp.randomness). Adding or removing one example adds or removes one term of each sum, of L2
norm at most C_1 (resp. C_2): each release is the Gaussian mechanism with noise multiplier σ_n,
which is a Poisson-subsampled Gaussian step with q = 1. C_1 and C_2 are public: the quantile
`CLIP_QUANTILE` of ‖a‖ and ‖b‖ over images drawn from random processes (tfdp.data.random_processes)
with a public seed, which contain no private example (the caller draws them: PUBLIC_IMAGES of
PUBLIC_SOURCE at PUBLIC_SEED). The mean A / N and the variance max(B / N - (A / N)², 0) are
post-processing, with N the training-set size, treated as public as everywhere in tfdp (q = B / N).
They are held as fixed, non-trainable weights of the model's first layer; every later step,
checkpoint, export and metric is a function of them, of the training steps' own releases and of
public data, so the run is the adaptive composition

    ComposedDpEvent([SelfComposed(Gaussian(σ_n), 2), ...the probe..., ...the training steps...])

which tfdp.privacy.ledger accounts by RDP (Mironov 2017, Prop. 1) and PLD. No other state crosses
from the statistics into training: the per-example moments stay in memory and are discarded. They
are released once per run: a resumed run reads them from its checkpoint (the ledger records that
they were released) and never draws them again.
"""

import dataclasses
from typing import Tuple

import numpy as np
import tensorflow as tf

from tfdp.dp import randomness
from tfdp.privacy.mechanisms import scatter_statistics

RELEASES = scatter_statistics.RELEASES  # A and B: two Gaussian releases, each at q = 1.
# Their clip norms were the median norms of the private moments (a leak); ours are the median over
# public random-process images. A clip below an example's norm only shrinks its term.
CLIP_QUANTILE = 0.5
PUBLIC_IMAGES = 2048  # Random-process images that set the clip norms; public seed PUBLIC_SEED.
PUBLIC_SEED = 0
PUBLIC_SOURCE = "mix"
# The coins' key for the statistics' noise: apart from every training and probe step's, so that
# under --reproducible_noise they are independent draws too (secret coins are fresh anyway).
NOISE_STEP = 2**41
ROWS_PER_CHUNK = 2048  # Examples per chunk while summing the moments in float64.


@dataclasses.dataclass(frozen=True)
class Moments:
  """Per-map statistics of features [..., K]: mean and variance, float64 [K] each."""

  mean: np.ndarray
  variance: np.ndarray


@dataclasses.dataclass(frozen=True)
class ClipNorms:
  """Public L2 bounds on one example's first (a) and second (b) moment vectors."""

  first: float
  second: float

  def __post_init__(self):
    if not (self.first > 0 and self.second > 0):
      raise ValueError(f"clip norms must be > 0, got {self.first} and {self.second}")


def per_example_moments(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(a, b): float64 [N, K] means over positions of the features and of their squares.

  Args:
      features: [N, ..., K] (e.g. [N, H, W, K] scattering maps), any float dtype.
  """
  rows = np.asarray(features).reshape(len(features), -1, features.shape[-1])
  first = np.empty((len(rows), rows.shape[-1]))
  second = np.empty_like(first)
  for start in range(0, len(rows), ROWS_PER_CHUNK):
    chunk = rows[start:start + ROWS_PER_CHUNK].astype(np.float64)
    first[start:start + len(chunk)] = chunk.mean(axis=1)
    second[start:start + len(chunk)] = np.square(chunk).mean(axis=1)
  return first, second


def clip_rows(rows: np.ndarray, bound: float) -> np.ndarray:
  """Each row of [N, K] scaled by min(1, bound / ‖row‖₂)."""
  norms = np.linalg.norm(rows, axis=1, keepdims=True)
  return rows * np.minimum(1.0, bound / np.maximum(norms, 1e-300))


def clipped_sums(features: np.ndarray, clips: ClipNorms) -> Tuple[np.ndarray, np.ndarray]:
  """(Σ clip_{C_1}(a_i), Σ clip_{C_2}(b_i)), float64 [K] each: the releases before noise."""
  first, second = per_example_moments(features)
  return clip_rows(first, clips.first).sum(axis=0), clip_rows(second, clips.second).sum(axis=0)


def noisy_sums(features: np.ndarray, clips: ClipNorms, noise_multiplier: float,
               coins: randomness.Coins) -> Tuple[np.ndarray, np.ndarray]:
  """(A, B) of the module docstring: the clipped sums plus N(0, σ_n² C²) noise from `coins`.

  Args:
      features: The private training set's features [N, ..., K].
      clips: Public clip norms C_1, C_2 (`public_clip_norms`).
      noise_multiplier: σ_n > 0.
      coins: The run's coins: the noise key is theirs for NOISE_STEP.
  """
  if noise_multiplier <= 0:
    raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
  first, second = clipped_sums(features, clips)
  with randomness.keyed_noise(coins.noise_seed(NOISE_STEP)):
    first = first + randomness.gaussian(first.shape, noise_multiplier * clips.first).numpy()
    second = second + randomness.gaussian(second.shape,
                                          noise_multiplier * clips.second).numpy()
  return first, second


def private_moments(features: np.ndarray, num_train: int, clips: ClipNorms,
                    noise_multiplier: float, coins: randomness.Coins) -> Moments:
  """Each map's mean A / N and variance max(B / N - mean², 0), from `noisy_sums`.

  Args:
      num_train: N, the public training-set size the sums are divided by.
      The others: as for `noisy_sums`.
  """
  first, second = noisy_sums(features, clips, noise_multiplier, coins)
  mean = first / num_train
  return Moments(mean=mean, variance=np.maximum(second / num_train - np.square(mean), 0.0))


def exact_moments(features: np.ndarray) -> Moments:
  """Unclipped, unnoised statistics: for non-private runs, and as the tests' reference."""
  first, second = per_example_moments(features)
  mean = first.mean(axis=0)
  return Moments(mean=mean, variance=np.maximum(second.mean(axis=0) - np.square(mean), 0.0))


def public_clip_norms(front: tf.keras.layers.Layer, preprocess, public_pixels: tf.Tensor,
                      quantile: float = CLIP_QUANTILE) -> ClipNorms:
  """C_1 and C_2: the `quantile` of ‖a‖ and ‖b‖ over public images.

  Args:
      front: The frozen front whose features are normalized.
      preprocess: uint8 images -> the front's input, as for the private images.
      public_pixels: uint8 [M, H, W, C] images that hold no private example, at the private
          images' size and channel count: PUBLIC_IMAGES random-process images of PUBLIC_SOURCE
          with seed PUBLIC_SEED (tfdp.data.random_processes.pixels). The norms are public
          only if these images are.
  """
  count = len(public_pixels)
  features = tf.concat([front(preprocess(public_pixels[start:start + 256]))
                        for start in range(0, count, 256)], axis=0).numpy()
  first, second = per_example_moments(features)
  return ClipNorms(first=float(np.quantile(np.linalg.norm(first, axis=1), quantile)),
                   second=float(np.quantile(np.linalg.norm(second, axis=1), quantile)))
