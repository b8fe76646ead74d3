"""The mechanism's random coins: which examples each step samples, and the noise it adds.

Privacy argument. A run's (ε, δ) is a statement about the distribution, over the mechanism's coins,
of everything it releases: the noised update of every step, hence the weights in every checkpoint
and export and the metrics computed from them. The coins are every step's Poisson inclusion draws
and every step's noise. The guarantee holds against an adversary who knows the data set minus one
example, the program and its public configuration, but not the coins. If the coins could be
recomputed (from a published seed and the open-source program) each release would be a
deterministic function of the data: the batches are known, so there is no amplification by
sampling, and the noise can be subtracted, so no finite ε holds whatever the accountant prints.

So, by default (`SecretCoins`):
- each step's inclusion draws are read from the operating system's CSPRNG (`secrets`), 53 bits per
  example, and a permutation for shuffled batches is keyed by 256 bits from it;
- each step's noise is drawn by TensorFlow's counter-based Philox generator keyed with 128 fresh
  bits from the CSPRNG (`noise_seed`), one key per step, consumed by `keyed_noise` below;
- no key is stored anywhere: not in checkpoints, the ledger, metrics, the model card or logs. A
  resumed run draws fresh coins for its remaining steps; the accountant needs the number of steps
  and their σ and q, which the ledger keeps, not the same draws.

`ReproducibleCoins(seed)` (--reproducible_noise) derives both from (seed, step), so two runs repeat
exactly: for tests and debugging only, and such a run says that it has no guarantee against anyone
who knows the seed. The public --seed otherwise drives only what needs no secrecy: initialization,
augmentation, the --train_examples subset and evaluation order.

Noise in float64. TensorFlow's own normal sampler (Box-Muller over float uniforms clamped at 1e-7)
never draws beyond 5.68σ, so an output beyond s + 5.68σC would be impossible without the example.
`gaussian` here is Box-Muller, z = R cos θ with R = sqrt(-2 ln U1): U1 is built from two 53-bit
draws (`uniform106`), so it is never below 2^-106 and R never above sqrt(212 ln 2) = 12.13. That
caps the radius, not each coordinate; the sampler's (R, θ) differs from the ideal one only on the
event U1 < 2^-106, of ideal probability 2^-106, so each coordinate is within total variation
GAUSSIAN_TAIL = 2^-106 = 1.2e-32 of the ideal Gaussian (up to the float64 grid). Over T steps of d
coordinates the release is within T·d·GAUSSIAN_TAIL of the ideal mechanism, so the run is
(ε, δ + (1 + e^ε)·T·d·GAUSSIAN_TAIL)-DP for the accountant's (ε, δ)
(tfdp.privacy.mechanisms.float_tail_delta, in every statement): 1.4e-22 for 2,000 steps of
272,474 coordinates at ε = 3. (With U1 on the 2^-53 grid the cap was R ≤ 8.57 and the term 2^-53
per coordinate, not the 1.0e-17 = erfc(8.57/√2) a per-coordinate truncation would give.) The
float64 grid itself is not covered by that bound.
`laplace` is inverse-CDF on the same two-draw uniforms (largest draw 106 ln 2 = 73.5 scales, tail
mass 2^-106 per coordinate); it is not hardened against floating-point attacks (Mironov 2012), and
the run's statement says so.
"""

import contextlib
import math
import secrets
from typing import Dict, Iterator, Optional, Protocol

import numpy as np
import tensorflow as tf

from tfdp.privacy import mechanisms

_UNIT = mechanisms.FLOAT_UNIT  # Spacing of the 53-bit uniforms.

class Coins(Protocol):
  """The random choices of the private mechanism."""

  name: str  # 'secret' or 'reproducible', as the ledger records it.

  def inclusion(self, step: int, num_examples: int, probability: float) -> np.ndarray:
    """[num_examples] bool: who joins step `step`, each independently with `probability`."""

  def permutation(self, epoch: int, num_examples: int) -> np.ndarray:
    """A permutation of range(num_examples), the same for every call with this epoch."""

  def noise_seed(self, step: int) -> np.ndarray:
    """[2] int64: the key of step `step`'s noise."""


def _threshold(probability: float) -> int:
  """k with P(U < k) = k / 2^53 <= probability for a 53-bit uniform integer U: never above q."""
  return math.floor(probability * 2 ** 53)


class SecretCoins:
  """Coins from the operating system's CSPRNG, fresh at every call and never stored."""

  name = "secret"

  def __init__(self):
    self._epoch_keys: Dict[int, int] = {}  # In memory only, for shuffled epochs.

  def inclusion(self, step: int, num_examples: int, probability: float) -> np.ndarray:
    del step  # Every step's draws are fresh.
    bits = np.frombuffer(secrets.token_bytes(8 * num_examples), dtype=np.uint64) >> np.uint64(11)
    return bits < np.uint64(_threshold(probability))

  def permutation(self, epoch: int, num_examples: int) -> np.ndarray:
    key = self._epoch_keys.setdefault(epoch, secrets.randbits(256))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key))).permutation(
        num_examples)

  def noise_seed(self, step: int) -> np.ndarray:
    del step
    return np.frombuffer(secrets.token_bytes(16), dtype=np.int64).copy()


class ReproducibleCoins:
  """Coins derived from a public seed and the step: NO privacy against anyone who knows the seed."""

  name = "reproducible"

  def __init__(self, seed: int):
    if seed < 0:
      raise ValueError(f"seed={seed} must be non-negative (numpy seeds are).")
    self.seed = seed

  def inclusion(self, step: int, num_examples: int, probability: float) -> np.ndarray:
    return np.random.default_rng([self.seed, step]).random(num_examples) < probability

  def permutation(self, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(num_examples)

  def noise_seed(self, step: int) -> np.ndarray:
    return np.random.default_rng([self.seed, step, 1]).integers(
        np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=2, dtype=np.int64)


def make_coins(reproducible: bool, seed: int) -> Coins:
  """SecretCoins, or ReproducibleCoins(seed) when `reproducible` (--reproducible_noise)."""
  return ReproducibleCoins(seed) if reproducible else SecretCoins()


class SecretKeyStream:
  """Noise keys drawn inside a compiled function: a Philox generator seeded by the CSPRNG.

  For steps that run inside Keras's own `tf.function` (`model.fit`), where a host-side key per
  step would need a Python call. The generator's state is secret: hold the stream where Keras does
  not track it (not as a Layer/Model/Optimizer attribute; a list of it is enough), so that no
  checkpoint, SavedModel or config can hold it, and `tf.keras.utils.set_random_seed` cannot fix it.
  """

  def __init__(self):
    state = np.frombuffer(secrets.token_bytes(24), dtype=np.int64).copy()
    with tf.init_scope():
      self._generator = tf.random.Generator.from_state(state, alg="philox")

  def next(self) -> tf.Tensor:
    """[2] int64, fresh at every execution (inside tf.function and XLA too)."""
    return self._generator.uniform_full_int([2], dtype=tf.int64)


# The key of the noise being drawn; every noise draw of a query happens inside `keyed_noise`.
class _Key:
  seed: Optional[tf.Tensor] = None
  draws = 0


@contextlib.contextmanager
def keyed_noise(seed: tf.Tensor) -> Iterator[None]:
  """Within this context, the samplers below draw from Philox keyed by `seed` ([2] int64).

  Draw k of the context uses the key fold_in(seed, k), so the draws are independent of each other
  and a deterministic function of `seed` (inside one traced function, in the same order).
  """
  previous = (_Key.seed, _Key.draws)
  _Key.seed, _Key.draws = tf.convert_to_tensor(seed, tf.int64), 0
  try:
    yield
  finally:
    _Key.seed, _Key.draws = previous


def _next_key() -> tf.Tensor:
  if _Key.seed is None:
    raise RuntimeError("mechanism noise drawn outside randomness.keyed_noise: its coins would "
                       "not be the run's secret ones")
  key = tf.random.experimental.stateless_fold_in(_Key.seed, _Key.draws)
  _Key.draws += 1
  return key


def uniform53(shape, key: Optional[tf.Tensor] = None) -> tf.Tensor:
  """float64 uniforms in (0, 1] on the 2^-53 grid, from `key` (default: the context's next)."""
  key = _next_key() if key is None else key
  bits = tf.random.stateless_uniform(shape, key, minval=None, maxval=None, dtype=tf.uint64)
  return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64)), tf.float64)
          + 1.0) * _UNIT


def uniform106(shape, key: Optional[tf.Tensor] = None) -> tf.Tensor:
  """float64 uniforms in [2^-106, 1] from two 53-bit draws, (a + b·2^-53)·2^-53 for a in
  [0, 2^53) and b in [1, 2^53]: as fine as float64 allows near 0, where a logarithm's tail is set."""
  key = _next_key() if key is None else key
  high, low = (uniform53(shape, tf.random.experimental.stateless_fold_in(key, i)) for i in (0, 1))
  return high - _UNIT + low * _UNIT  # high - 2^-53 = a·2^-53; low = b·2^-53.


def gaussian(shape, stddev) -> tf.Tensor:
  """float64 N(0, stddev²) draws by Box-Muller; the radius from uniform106 (largest |draw| 12.13
  stds, each coordinate within total variation 2^-106 of the ideal Gaussian)."""
  radius = tf.sqrt(-2.0 * tf.math.log(uniform106(shape)))
  angle = (2.0 * math.pi) * uniform53(shape)
  return tf.cast(stddev, tf.float64) * radius * tf.cos(angle)


def laplace(shape, scale) -> tf.Tensor:
  """float64 Laplace(0, scale) draws: a random sign times an Exp(1) draw by inverse CDF on
  uniform106 (largest 73.5 scales, within total variation 2^-106 of the ideal per coordinate)."""
  magnitude = -tf.math.log(uniform106(shape))
  sign = tf.where(uniform53(shape) <= 0.5, tf.constant(-1.0, tf.float64),
                  tf.constant(1.0, tf.float64))
  return tf.cast(scale, tf.float64) * sign * magnitude


def add_noise(value: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
  """value + noise computed in float64, returned in value's dtype."""
  return tf.cast(tf.cast(value, tf.float64) + noise, value.dtype)


def discrete_gaussian(shape, scale: tf.Tensor) -> tf.Tensor:
  """int64 draws of the discrete Gaussian N_Z(0, scale²), for an integer scale t >= 1.

  Canonne, Kamath & Steinke 2020: Algorithm 3 with proposal parameter t = scale, its discrete
  Laplace proposals drawn by their Algorithm 2, vectorized: each round draws for every coordinate
  not yet accepted. One round, per coordinate:
    U ~ uniform on {0, ..., t-1} (64 random bits reduced modulo t);
    D ~ Bernoulli(e^(-U/t));  V = floor(-ln W) ~ Geometric(1 - e^-1) for a 53-bit W;
    B ~ Bernoulli(1/2);  X = U + t V;  Y = (1 - 2B) X, a discrete Laplace draw when D and not
    (B and X = 0);
    accepted with probability exp(-(|Y| - t)² / (2t²)).
  Every step but U compares a uniform with a float64 probability, and U's thresholds are integers,
  so the distance from the ideal sampler does not grow with t (bounded by
  tfdp.privacy.mechanisms.discrete_gaussian_tail). Drawing the geometric as floor(t · Exp(1)) instead would put t
  float thresholds per unit of the exponential, and a distance that grows with t.
  """
  key = _next_key()
  size = tf.reduce_prod(shape)
  t = tf.cast(scale, tf.int64)
  t_float = tf.cast(t, tf.float64)

  def propose(round_index, values, accepted):
    round_key = tf.random.experimental.stateless_fold_in(key, round_index)
    keys = [tf.random.experimental.stateless_fold_in(round_key, j) for j in range(5)]
    u = tf.random.stateless_uniform([size], keys[0], minval=tf.constant(0, tf.int64), maxval=t,
                                    dtype=tf.int64)
    u_float = tf.cast(u, tf.float64)
    d = uniform53([size], keys[1]) <= tf.exp(-u_float / t_float)
    v = tf.floor(-tf.math.log(uniform53([size], keys[2])))
    negative = uniform53([size], keys[3]) <= 0.5
    magnitude = u_float + t_float * v
    proposal = tf.where(negative, -magnitude, magnitude)
    valid = d & ~(negative & tf.equal(magnitude, 0.0))
    keep = valid & (uniform53([size], keys[4]) <= tf.exp(
        -tf.square(magnitude - t_float) / (2.0 * t_float * t_float)))
    fill = keep & ~accepted
    return round_index + 1, tf.where(fill, proposal, values), accepted | keep

  _, values, _ = tf.while_loop(
      lambda i, values, accepted: ~tf.reduce_all(accepted), propose,
      (tf.constant(0, tf.int64), tf.zeros([size], tf.float64), tf.zeros([size], tf.bool)))
  return tf.reshape(tf.cast(values, tf.int64), shape)
