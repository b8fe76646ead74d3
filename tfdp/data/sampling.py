"""Which training examples each DP-SGD step uses, in fixed-shape chunks for the accelerator.

The privacy accountant assumes Poisson sampling: at every step each of the N examples joins the
batch independently with probability q = batch_size / N, so batch sizes vary from step to step.
`PoissonSampler` does exactly that. A draw is split into chunks of `physical_batch_size` rows (the
last one padded and masked) so the compiled step always sees one shape, and a draw larger than the
physical batch becomes several chunks of the same step rather than being cut: cutting it would
sample differently from what the accountant assumes.

Who joins each batch is one of the mechanism's secret coins: the draws come from `coins`
(tfdp.dp.randomness), by default the operating system's CSPRNG, fresh at every step and never
stored, so nothing a run releases can reproduce them. A resumed run draws fresh batches for its
remaining steps. Only `ReproducibleCoins(seed)` (--reproducible_noise, debugging) makes the draws a
function of (seed, step).

    sampler = PoissonSampler(num_examples=50_000, batch_size=4096, physical_batch_size=512,
                             coins=randomness.SecretCoins())
    for chunk in sampler.chunks(step):   # accumulate clipped gradients over the chunks, then step
        ...
"""

import dataclasses
import math
from typing import ClassVar

import numpy as np

from tfdp import names
from tfdp.dp import randomness


PADDING = -1  # Index of a padding row: no example; gather_chunk fills it with a constant.


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on numpy fields is ambiguous.
class Chunk:
  """One fixed-shape piece of a step's batch.

  Attributes:
      indices: [P] int64 example indices; padding rows hold PADDING, never a real example.
      mask: [P] float32, 1.0 for real rows and 0.0 for padding (whose gradients must be dropped).
  """

  indices: np.ndarray
  mask: np.ndarray


def gather_chunk(images: np.ndarray, labels: np.ndarray,
                 chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The chunk's rows as (images [P, ...], labels [P], mask [P]).

  Padding rows get a public constant, all-zeros image and label 0, never a copy of a training
  example: a padded row is computed (then dropped), and an example whose loss is inf or NaN must
  not be computed on steps that did not sample it.
  """
  real = chunk.indices != PADDING
  rows = np.zeros((len(chunk.indices), *images.shape[1:]), images.dtype)
  rows[real] = images[chunk.indices[real]]
  row_labels = np.zeros(len(chunk.indices), labels.dtype)
  row_labels[real] = labels[chunk.indices[real]]
  return rows, row_labels, chunk.mask


def split_into_chunks(indices: np.ndarray, physical_batch_size: int) -> list[Chunk]:
  """Splits [n] indices into ceil(n / P) chunks of P rows (at least one), padding the last."""
  num_chunks = max(1, math.ceil(len(indices) / physical_batch_size))
  padded = np.full(num_chunks * physical_batch_size, PADDING, np.int64)
  padded[:len(indices)] = indices
  mask = np.zeros(num_chunks * physical_batch_size, np.float32)
  mask[:len(indices)] = 1.0
  return [Chunk(indices=rows, mask=weights) for rows, weights in
          zip(np.split(padded, num_chunks), np.split(mask, num_chunks))]


@dataclasses.dataclass(frozen=True)
class _Sampler:
  """Shared fields, validation and chunking; subclasses define `sample(step)`.

  Attributes:
      num_examples: N, the size of the training set.
      batch_size: expected (Poisson) or exact (shuffle) examples per step, 1..N.
      physical_batch_size: P, rows per chunk: how many examples fit through the model at once.
      coins: where the draws come from (tfdp.dp.randomness): secret by default.
  """

  num_examples: int
  batch_size: int
  physical_batch_size: int
  coins: randomness.Coins = dataclasses.field(default_factory=randomness.SecretCoins)

  def __post_init__(self):
    if self.num_examples < 1:
      raise ValueError(f'num_examples={self.num_examples} must be at least 1.')
    if not 1 <= self.batch_size <= self.num_examples:
      raise ValueError(f'batch_size={self.batch_size} must be between 1 and '
                       f'num_examples={self.num_examples}.')
    if self.physical_batch_size < 1:
      raise ValueError(f'physical_batch_size={self.physical_batch_size} must be at least 1.')

  @property
  def sampling_probability(self) -> float:
    """q = batch_size / num_examples, the per-step inclusion probability of each example."""
    return self.batch_size / self.num_examples

  @property
  def steps_per_epoch(self) -> int:
    """ceil(num_examples / batch_size): steps that see N examples (in expectation)."""
    return math.ceil(self.num_examples / self.batch_size)

  def sample(self, step: int) -> np.ndarray:
    raise NotImplementedError

  def chunks(self, step: int) -> list[Chunk]:
    """The batch of `step` as a list of at least one [physical_batch_size] chunk."""
    return split_into_chunks(self.sample(step), self.physical_batch_size)

  def _check_step(self, step: int) -> None:
    if step < 0:
      raise ValueError(f'step={step} must be non-negative.')


@dataclasses.dataclass(frozen=True)
class PoissonSampler(_Sampler):
  """Poisson sampling: every example joins each step's batch independently with probability q."""

  name: ClassVar[str] = 'poisson'

  def sample(self, step: int) -> np.ndarray:
    """Sorted [n] int64 indices drawn for `step`; n ~ Binomial(num_examples, q), maybe 0."""
    self._check_step(step)
    included = self.coins.inclusion(step, self.num_examples, self.sampling_probability)
    return np.flatnonzero(included).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ShuffleSampler(_Sampler):
  """Fixed-size batches of a secret permutation per epoch; not what the accountant assumes.

  Step s takes batch s % steps_per_epoch of epoch s // steps_per_epoch; an epoch's last batch
  holds the remainder and may be short.
  """

  name: ClassVar[str] = 'shuffle'

  def sample(self, step: int) -> np.ndarray:
    """Sorted int64 indices of the step's batch: batch_size of them, fewer at an epoch's end."""
    self._check_step(step)
    epoch, position = divmod(step, self.steps_per_epoch)
    # Recomputed every step (~1 ms for 50k examples); the coins keep the epoch's key.
    order = self.coins.permutation(epoch, self.num_examples)
    batch = order[position * self.batch_size:(position + 1) * self.batch_size]
    return np.sort(batch).astype(np.int64)


SAMPLERS: dict[str, type] = {cls.name: cls for cls in (PoissonSampler, ShuffleSampler)}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of SAMPLERS."""
  names.check('sampling', name, SAMPLERS)


def make_sampler(name: str, num_examples: int, batch_size: int, physical_batch_size: int,
                 coins: randomness.Coins) -> _Sampler:
  """Builds the sampler registered as `name`; ValueError listing the valid names if unknown."""
  if name not in SAMPLERS:
    raise ValueError(f'Unknown sampler {name!r}; valid: {sorted(SAMPLERS)}.')
  return SAMPLERS[name](num_examples, batch_size, physical_batch_size, coins)
