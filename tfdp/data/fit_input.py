"""The `tf.data.Dataset` a private `model.fit` consumes: one element per Poisson-sampled step.

Each element is one logical step of DP-SGD: the step's Poisson draw (tfdp.data.sampling), every
example joining independently with probability q = batch_size / N, cut into n fixed-shape chunks
of `physical_batch_size` rows, the last padded and masked. n varies with the draw, so a large draw
is never truncated (truncating would sample differently from what the accountant assumes):

    {"poisson_images": [n, P, ...], "poisson_labels": [n, P, ...], "poisson_mask": [n, P] float32}

Who joins each step is one of the mechanism's secret coins: by default the draws come from the
operating system's CSPRNG, fresh at every step and never stored. `seed` makes them a function of
(seed, step) for tests and debugging; a model trained on such a dataset says that it has no
guarantee against anyone who knows the seed.

    train = tfdp.data.poisson_dataset(x_train, y_train, batch_size=256, physical_batch_size=64)
    private_model.fit(train, epochs=10)

An epoch is ceil(N / batch_size) steps: N examples in expectation. The host draws and gathers a
whole epoch's steps at once (one Python call per epoch, not per step: a per-step generator call
costs more than a small model's whole step), and the dataset hands them out one step at a time.
"""

import dataclasses
import itertools
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from tfdp.data import sampling
from tfdp.dp import randomness

IMAGES, LABELS, MASK = "poisson_images", "poisson_labels", "poisson_mask"


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
  """How a dataset from `poisson_dataset` draws its steps: what the accountant must be told.

  Attributes:
    num_examples: N.
    batch_size: the expected batch size q N.
    physical_batch_size: P, rows per chunk.
    randomness: 'secret' (CSPRNG) or 'reproducible' (from a public seed).
  """
  num_examples: int
  batch_size: int
  physical_batch_size: int
  randomness: str

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_examples // self.batch_size)


_PLANS: "weakref.WeakKeyDictionary[tf.data.Dataset, SamplingPlan]" = weakref.WeakKeyDictionary()


def sampling_plan(dataset) -> Optional[SamplingPlan]:
  """The plan of a dataset `poisson_dataset` returned, or None for anything else."""
  try:
    return _PLANS.get(dataset)
  except TypeError:  # Not weak-referenceable (NumPy arrays, lists): not ours.
    return None


def is_poisson_element(data) -> bool:
  """Whether a dataset element (or its spec) has poisson_dataset's structure."""
  return isinstance(data, dict) and set(data) == {IMAGES, LABELS, MASK}


def _epoch_element(images, labels, steps):
  """A whole epoch's steps, their chunks stacked: [C, P, ...] images and labels, [C, P] mask over
  all C chunks of the epoch, and [S] chunks per step."""
  parts = [sampling.gather_chunk(images, labels, chunk) for chunks in steps for chunk in chunks]
  return {IMAGES: np.stack([p[0] for p in parts]), LABELS: np.stack([p[1] for p in parts]),
          MASK: np.stack([p[2] for p in parts]),
          _COUNTS: np.array([len(chunks) for chunks in steps], np.int64)}


def _steps_of(epoch):
  """The dataset of one epoch's steps, each its own [n, P, ...] slice of the epoch's chunks."""
  ends = tf.cumsum(epoch[_COUNTS])
  return tf.data.Dataset.from_tensor_slices((ends - epoch[_COUNTS], ends)).map(
      lambda start, end: {key: epoch[key][start:end] for key in (IMAGES, LABELS, MASK)})


_COUNTS = "chunks_per_step"


def poisson_dataset(images, labels, *, batch_size: int, physical_batch_size: Optional[int] = None,
                    seed: Optional[int] = None) -> tf.data.Dataset:
  """Poisson-sampled DP-SGD steps over (images, labels), one dataset element per step.

  Args:
    images: [N, ...] array of training inputs (any dtype the model takes). Private.
    labels: [N, ...] array of their labels. Private.
    batch_size: the expected batch size q N, 1..N.
    physical_batch_size: P, rows per chunk (default batch_size): how many examples fit through
      the model at once. It changes speed and memory, never the sampling.
    seed: None (default) for secret draws from the CSPRNG, as the guarantee assumes; an int makes
      the draws follow from it, for tests and debugging only (no guarantee against anyone who
      knows it).

  Returns:
    A dataset of ceil(N / batch_size) elements per iteration (one epoch), each a dict of
    [n, P, ...] images, [n, P, ...] labels and [n, P] mask (1 for drawn examples, 0 for padding).
    Pass it to a private model's `fit` unchanged (it already prefetches one step).
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if len(images) != len(labels):
    raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
  coins = randomness.SecretCoins() if seed is None else randomness.ReproducibleCoins(seed)
  sampler = sampling.PoissonSampler(len(images), batch_size, physical_batch_size or batch_size,
                                    coins)
  drawn = itertools.count()  # Steps drawn so far, over all epochs: keys reproducible draws.

  def epoch():
    yield _epoch_element(images, labels, [sampler.chunks(next(drawn))
                                          for _ in range(sampler.steps_per_epoch)])

  rows = sampler.physical_batch_size
  signature = {IMAGES: tf.TensorSpec((None, rows) + images.shape[1:], tf.as_dtype(images.dtype)),
               LABELS: tf.TensorSpec((None, rows) + labels.shape[1:], tf.as_dtype(labels.dtype)),
               MASK: tf.TensorSpec((None, rows), tf.float32),
               _COUNTS: tf.TensorSpec((None,), tf.int64)}
  dataset = (tf.data.Dataset.from_generator(epoch, output_signature=signature)
             .flat_map(_steps_of)
             .apply(tf.data.experimental.assert_cardinality(sampler.steps_per_epoch))
             .prefetch(1))
  _PLANS[dataset] = SamplingPlan(len(images), batch_size, rows, coins.name)
  return dataset
