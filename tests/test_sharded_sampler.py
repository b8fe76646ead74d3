"""Multi-worker DP steps: the workers' shards together are one Poisson draw of the whole set, the
all-reduced clipped sum is the brute-force one, and the noise is σC once per step.

Every worker process builds its sampler the way the training loop does
(distribution.shard_sampler over data.make_sampler, with its own secret coins). Over many steps the
union of the workers' draws must be what the accountant assumes: every example in at most one
shard, each example included with probability q, independently of the others, so the union's size
is Binomial(N, q). The steps of two worker processes are checked by tests/multi_worker_checks.py.
Each statistical comparison allows Z = 6 standard errors (P(|N(0, 1)| > 6) =
2e-9); the per-example one is taken over N examples, so it allows sqrt(2 ln(N / 1e-9)) instead.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tests import distributed_checks
from tfdp import data
from tfdp.data import sampling
from tfdp.dp import randomness
from tfdp.training import distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z = 6.0
N, BATCH, PHYSICAL, WORKERS, STEPS = 101, 20, 8, 3, 10_000  # N not a multiple of the workers.
Q = BATCH / N


class _ClusterSpec:
  def __init__(self, workers):
    self._workers = workers

  def as_dict(self):
    return {"worker": [f"localhost:{2000 + w}" for w in range(self._workers)]}


class _Resolver:
  def __init__(self, task_id, workers):
    self.task_id = task_id
    self._workers = workers

  def cluster_spec(self):
    return _ClusterSpec(self._workers)


class _WorkerStrategy:
  """What distribution.worker reads of a MultiWorkerMirroredStrategy: this task and the cluster."""

  def __init__(self, task_id, workers):
    self.cluster_resolver = _Resolver(task_id, workers)


def _worker_samplers(coins_of=lambda w: randomness.SecretCoins()):
  """Each worker's sampler, built as the training loop builds it in that worker's process."""
  samplers = []
  for w in range(WORKERS):
    whole = data.make_sampler("poisson", N, BATCH, PHYSICAL, coins_of(w))
    samplers.append(distribution.shard_sampler(whole, _WorkerStrategy(w, WORKERS)))
  return samplers


def _drawn(chunks):
  """The example indices of a worker's chunks; padding rows are masked and hold no example."""
  indices = np.concatenate([c.indices for c in chunks])
  mask = np.concatenate([c.mask for c in chunks])
  assert all(len(c.indices) == PHYSICAL for c in chunks)
  assert np.all((mask == 1) == (indices != sampling.PADDING))
  return indices[mask == 1]


def _union_draws(samplers, steps=STEPS):
  """[steps, N] inclusion of every example at every step, checking the shards as it goes."""
  included = np.zeros((steps, N), bool)
  for step in range(steps):
    for w, sampler in enumerate(samplers):
      drawn = _drawn(sampler.chunks(step))
      assert np.all(drawn % WORKERS == w) and np.all((drawn >= 0) & (drawn < N))
      assert len(np.unique(drawn)) == len(drawn)
      assert not np.any(included[step, drawn]), "an example in two shards"
      included[step, drawn] = True
  return included


def _assert_one_poisson_draw_per_step(included):
  steps = len(included)
  # Each example's inclusion frequency: Binomial(steps, q) / steps, N of them.
  per_example = math.sqrt(2 * math.log(N / 1e-9))
  frequency = included.mean(axis=0)
  spread = math.sqrt(Q * (1 - Q) / steps)
  assert np.max(np.abs(frequency - Q)) < per_example * spread, (
      np.argmax(np.abs(frequency - Q)), frequency.min(), frequency.max())
  # Neighbouring examples (always in different shards) are uncorrelated: the mean over the
  # N - 1 pairs and the steps of (x_i - q)(x_j - q) / (q (1 - q)) has standard error
  # 1 / sqrt(steps (N - 1)) (the products are uncorrelated with each other).
  centered = (included - Q) / math.sqrt(Q * (1 - Q))
  pairs = np.mean(centered[:, :-1] * centered[:, 1:])
  assert abs(pairs) < Z / math.sqrt(steps * (N - 1)), pairs
  # The union's size is Binomial(N, q): its mean, its variance (a sum of correlated inclusions
  # would have another) and its whole distribution (chi-square over bins of >= 50 expected).
  sizes = included.sum(axis=1)
  assert abs(np.mean(sizes) - N * Q) < Z * math.sqrt(N * Q * (1 - Q) / steps)
  variance = N * Q * (1 - Q)
  excess_kurtosis = (1 - 6 * Q * (1 - Q)) / variance
  assert abs(np.var(sizes) / variance - 1) < Z * math.sqrt((2 + excess_kurtosis) / steps), (
      np.var(sizes), variance)
  observed, expected = _binned(sizes, steps)
  statistic = np.sum((observed - expected) ** 2 / expected)
  assert statistic < stats.chi2.isf(1e-9, len(observed) - 1), (statistic, len(observed))


def _binned(sizes, steps):
  """Observed and Binomial(N, q)-expected counts of the sizes, bins merged to >= 50 expected."""
  pmf = stats.binom.pmf(np.arange(N + 1), N, Q) * steps
  counts = np.bincount(sizes, minlength=N + 1)
  edges, total = [], 0.0
  for k in range(N + 1):
    total += pmf[k]
    if total >= 50:
      edges.append(k + 1)
      total = 0.0
  edges[-1] = N + 1  # The tail joins the last bin.
  starts = [0] + edges[:-1]
  observed = np.array([counts[a:b].sum() for a, b in zip(starts, edges)], float)
  expected = np.array([pmf[a:b].sum() for a, b in zip(starts, edges)])
  return observed, expected


def test_each_worker_gets_a_sharded_poisson_sampler_of_the_whole_set():
  samplers = _worker_samplers()
  for w, sampler in enumerate(samplers):
    assert isinstance(sampler, distribution.ShardedPoissonSampler)
    assert (sampler.worker, sampler.workers) == (w, WORKERS)
    assert sampler.sampler.sampling_probability == Q  # The whole set's q, as the accountant's.
    assert sampler.steps_per_epoch == math.ceil(N / BATCH)
  whole = data.make_sampler("poisson", N, BATCH, PHYSICAL, randomness.SecretCoins())
  assert distribution.shard_sampler(whole, None) is whole  # One process: the sampler itself.


def test_the_union_of_the_shards_is_one_poisson_draw_of_the_whole_set():
  _assert_one_poisson_draw_per_step(_union_draws(_worker_samplers()))


def test_the_single_process_sampler_passes_the_same_check():
  """The reference the shards are held to: the one-process Poisson sampler, through the same
  statistics (so the check itself is not what makes the shards pass)."""
  sampler = data.make_sampler("poisson", N, BATCH, PHYSICAL, randomness.SecretCoins())
  included = np.zeros((STEPS, N), bool)
  for step in range(STEPS):
    included[step, _drawn(sampler.chunks(step))] = True
  _assert_one_poisson_draw_per_step(included)


def test_reproducible_coins_give_the_workers_independent_draws():
  seeded = lambda w: randomness.ReproducibleCoins(7)  # Every worker process gets --seed.
  union = _union_draws(_worker_samplers(seeded), steps=1000)
  _assert_one_poisson_draw_per_step(union)
  # The same seed's one-process draw: a seeded run does not depend on its number of workers.
  alone = data.make_sampler("poisson", N, BATCH, PHYSICAL, randomness.ReproducibleCoins(7))
  for step in (0, 1, 999):
    np.testing.assert_array_equal(np.flatnonzero(union[step]), alone.sample(step))


def test_two_workers_step_with_the_brute_force_sum_and_noise_sigma_c_once():
  """Two worker processes on localhost (tests/multi_worker_checks.py): a σ = 0 step whose update
  is the brute-force clipped sum of both shards, and 100 zero-gradient steps whose updates are
  noise of std σC (1,024 draws per step, 102,400 in all: tolerance 1.3%), fresh at every step, the
  same on both."""
  from tests import multi_worker_checks as checks  # pylint: disable=import-outside-toplevel
  cluster = {"worker": [f"localhost:{port}" for port in distributed_checks.free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(subprocess.Popen([sys.executable, "-m", "tests.multi_worker_checks"], cwd=ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True))
  try:
    outputs = [w.communicate(timeout=300) for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  for w, (out, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
  chief, other = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
  assert (chief["worker"], other["worker"], chief["workers"]) == (0, 1, 2)
  assert (chief["chunks"], other["chunks"]) == (3, 2)  # Uneven shards: different chunk counts.
  assert chief["clip_bites"]
  for error, scale in zip(chief["errors"], chief["scales"]):
    assert error <= 2e-3 * scale + 1e-6  # Each example counted once, by its own worker.
  assert chief["sum_digest"] == other["sum_digest"]
  samples = chief["samples"]
  assert samples == checks.NOISE_STEPS * 64 * 16
  assert abs(chief["rms_over_sigma_c"] - 1) < Z / math.sqrt(2 * samples)  # Per worker: √2.
  assert abs(chief["mean_over_sigma_c"]) < Z / math.sqrt(samples)
  assert chief["steps_distinct"]
  assert chief["noise_digest"] == other["noise_digest"]  # Both drew the chief's noise.
