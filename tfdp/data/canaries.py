"""Canaries for the one-run privacy audit (tfdp.privacy.audit): examples only the auditor knows.

Two kinds, both as hard to learn from the rest of the data as an example can be, so that a model
that remembers its training examples shows it on them:
- 'mislabeled': m training images, each given a label other than its own (uniform among the rest);
- 'noise': m images of uniform random pixels with uniform random labels, added to the data.

Each canary is in the training set independently with probability 1/2. A mislabeled canary left
out is removed from the training set (its image is then never trained on, under either label); a
noise canary left out is simply not added. The training set size N therefore includes the
canaries drawn in, and the accountant uses that N: canaries are training examples like any other.
What this leaves open: q = B/N, the calibrated σ and the steps per epoch all follow from N, and
they are released, so the number of canaries drawn in (not which ones) is public. The one-run
audit's theorem takes each canary's coin as independent of everything but the model, so its
bound is, strictly, for the game in which that count is known; the guesses tfdp makes do not use
it, and with m ≪ N the difference is small. Fixing N before the draw (planning q from N + m/2)
would remove it, at the price of a sampling probability that is not B over the set trained on.

The draw uses the auditor's coins, apart from the run's: a seed from the operating system's CSPRNG
(or --audit_seed, for reproducible tests), turned into its own generator, never the training
sampler's or the noise's. The canaries and their inclusion are saved in the run directory
(`audit/canaries.npz`, which no release contains) so that a resumed run trains on the same set and
`tfdp.audit` can audit the finished run.
"""

import dataclasses
import io
import os
import secrets
from typing import Optional, Tuple

import numpy as np

from tfdp import atomic
from tfdp import names

KINDS = ("mislabeled", "noise")
FILE = os.path.join("audit", "canaries.npz")
_STREAM = 0xCA7A  # Tags the audit's generator apart from every other use of a seed.


@dataclasses.dataclass(frozen=True)
class Canaries:
  """m canaries and the auditor's secret: which of them were trained on.

  Attributes:
    images: uint8 [m, H, W, C].
    labels: int64 [m], the label each canary is trained (and scored) with.
    included: bool [m], in the training set or not: the auditor's secret until the audit.
    source_indices: int64 [m], the training index a mislabeled canary came from; -1 for noise.
    kind: a key of KINDS.
  """
  images: np.ndarray
  labels: np.ndarray
  included: np.ndarray
  source_indices: np.ndarray
  kind: str

  @property
  def count(self) -> int:
    return len(self.labels)


def check_name(kind: str) -> None:
  """Raises ValueError, listing the valid kinds, unless `kind` is one of KINDS."""
  names.check("audit_canary_type", kind, KINDS)


def audit_rng(seed: Optional[int]) -> np.random.Generator:
  """The auditor's generator: from `seed`, or from 128 secret bits when it is None."""
  seed = secrets.randbits(128) if seed is None else seed
  return np.random.default_rng([_STREAM, seed])


def draw(train_images: np.ndarray, train_labels: np.ndarray, num_classes: int, count: int,
         kind: str, rng: np.random.Generator) -> Canaries:
  """Makes `count` canaries of `kind` for a training set [N, H, W, C] / [N], inclusion included."""
  n = len(train_labels)
  if kind not in KINDS:
    raise ValueError(f"unknown canary kind {kind!r}; valid: {', '.join(KINDS)}")
  if count < 2 or (kind == "mislabeled" and count > n // 2):
    raise ValueError(f"audit_canaries must be >= 2 and, for mislabeled canaries, at most half "
                     f"the training set ({n // 2}); got {count}")
  if num_classes < 2:
    raise ValueError("canaries need at least 2 classes to mislabel")
  if kind == "mislabeled":
    sources = np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)
    images = train_images[sources]
    labels = (train_labels[sources] + rng.integers(1, num_classes, size=count)) % num_classes
  else:
    sources = np.full(count, -1, np.int64)
    images = rng.integers(0, 256, size=(count,) + train_images.shape[1:]).astype(np.uint8)
    labels = rng.integers(0, num_classes, size=count)
  included = rng.random(count) < 0.5
  return Canaries(images, labels.astype(np.int64), included, sources, kind)


def training_set(train_images: np.ndarray, train_labels: np.ndarray,
                 canaries: Canaries) -> Tuple[np.ndarray, np.ndarray]:
  """The training set with the canaries drawn in and without those left out."""
  if canaries.kind == "mislabeled":
    labels = train_labels.copy()
    labels[canaries.source_indices] = canaries.labels
    keep = np.ones(len(labels), bool)
    keep[canaries.source_indices[~canaries.included]] = False
    return train_images[keep], labels[keep]
  return (np.concatenate([train_images, canaries.images[canaries.included]]),
          np.concatenate([train_labels, canaries.labels[canaries.included]]))


def save(run_dir: str, canaries: Canaries) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in dataclasses.asdict(canaries).items()})
  os.makedirs(os.path.join(run_dir, os.path.dirname(FILE)), exist_ok=True)
  atomic.write_bytes(os.path.join(run_dir, FILE), buffer.getvalue())


def load(run_dir: str) -> Optional[Canaries]:
  """The run's canaries, or None when it has none."""
  path = os.path.join(run_dir, FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as saved:
    return Canaries(saved["images"], saved["labels"], saved["included"],
                    saved["source_indices"], str(saved["kind"]))
