"""Data-parallel private steps over tf.distribute replicas, with one noise draw per logical step.

Privacy argument. The mechanism is the single-device one (tfdp.training.steps), run by R replicas:
- Sampling: the host draws one Poisson batch per logical step from the run's secret coins, as on
  one device, and `split_chunks` deals its fixed-shape chunks out to the replicas, adding
  all-padding chunks (mask 0) so each replica gets as many; no example goes to two replicas, and
  padding rows contribute exactly 0.
- Clipping: each replica clips the gradients of its examples (the same engine, groups and scaling
  rule) and sums them; the R local sums are all-reduced (SUM). The result is the single-device
  clipped sum of the draw, so adding or removing one example moves it by at most C.
- Noise: after the all-reduce, every replica runs the DP optimizer's noise on that same global sum
  with the same secret key, so every replica draws the identical noise and the update carries
  noise of std σC exactly once: the release is the single-device release. We use one shared draw
  rather than R independent draws of std σC/√R added before the all-reduce because it works for
  every noise tfdp has (Laplace, the discrete Gaussian and adaptive clipping's noised count, whose
  sums of independent draws are not of the same family), and it leaves the mirrored variables
  identical with no further communication. The key is the step's key from the run's coins, handed
  from the host to the replicas of this process; it is never stored.
- State: the weights and optimizer slots are mirrored, updated from that one noised mean; the
  state other mechanisms carry (EMA averages, DiceSGD's error, the adaptive clip) is computed by
  every replica from the same all-reduced values, and the first replica's is kept. The replicas'
  local sums live only inside the step. Nothing else crosses steps, so the accountant's
  composition of Poisson-subsampled Gaussian (or Laplace) steps applies unchanged, with the same
  q = batch_size / N and step count as on one device.

Several hosts ('multi_worker', one replica per worker process). Worker w of W owns the examples
whose index is w mod W and draws each of them with probability q from its own CSPRNG
(`ShardedPoissonSampler`): every example of the data set still joins each step independently
with probability q, from a secret source, so the union of the workers' draws is exactly a Poisson
draw of the whole set, and no example is drawn by two workers. The step's noise key is the chief's
(replica 0's) key, broadcast to every replica by a SUM all-reduce in which the others contribute
zeros, so all replicas draw the chief's noise; like the draws, it stays in memory. Only the chief
writes the run's files (checkpoints, ledger, metrics, TensorBoard, exports); every worker restores
from the chief's last checkpoint when the run resumes. A worker that stops makes the others' next
all-reduce fail within the coordination service's heartbeat timeout, and the run ends with an
error that names the task.

Strategies by name (`--distribution`): 'none' (one device), 'mirrored' (every visible GPU of this
host, or `--cpu_replicas` logical CPU devices for testing) and 'multi_worker' (the hosts of
TF_CONFIG, one replica each). `ReplicatedStep` is the step's multi-device path; the single-device
step and everything the two share are tfdp.training.steps.TrainStep's.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp.data import sampling


def _mirrored(cpu_replicas: Optional[int]) -> tf.distribute.Strategy:
  if not cpu_replicas:
    return tf.distribute.MirroredStrategy()
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
  except RuntimeError as error:
    raise ValueError(f"--cpu_replicas={cpu_replicas} must be set before TensorFlow has started "
                     f"in this process ({error})") from error
  devices = [device.name for device in tf.config.list_logical_devices("CPU")][:cpu_replicas]
  return tf.distribute.MirroredStrategy(devices)


WORKER_TIMEOUT_S = 60  # A collective that waits longer for a peer fails instead of hanging.


def cluster_spec() -> dict:
  """TF_CONFIG, checked: {"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker",
  "index": i}}. Raises ValueError naming what is wrong."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise ValueError("--distribution=multi_worker needs TF_CONFIG (the cluster and this task)")
  try:
    spec = json.loads(raw)
    workers, task = spec["cluster"]["worker"], spec["task"]
  except (ValueError, KeyError, TypeError) as error:
    raise ValueError(f"TF_CONFIG is not a cluster spec with cluster.worker and task ({error!r}): "
                     f"{raw[:200]}") from error
  if not isinstance(workers, list) or len(workers) < 1 or not all(
      isinstance(w, str) and re.fullmatch(r"[^:\s]+:\d+", w) for w in workers):
    raise ValueError(f"TF_CONFIG cluster.worker must list host:port addresses, got {workers!r}")
  if task.get("type") != "worker" or task.get("index") not in range(len(workers)):
    raise ValueError(f"TF_CONFIG task must be {{'type': 'worker', 'index': 0..{len(workers) - 1}}}"
                     f", got {task!r}")
  return spec


def _multi_worker(cpu_replicas: Optional[int]) -> tf.distribute.Strategy:
  if cpu_replicas:
    raise ValueError("--cpu_replicas is for --distribution=mirrored; multi_worker runs one "
                     "replica per worker process")
  cluster_spec()
  options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=WORKER_TIMEOUT_S)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  if local_replicas(strategy) != 1:
    raise ValueError(f"multi_worker runs one replica per worker; this one has "
                     f"{local_replicas(strategy)} devices (hide all but one, e.g. "
                     "CUDA_VISIBLE_DEVICES)")
  return strategy


STRATEGIES: Dict[str, Callable[[Optional[int]], Optional[tf.distribute.Strategy]]] = {
    "none": lambda cpu_replicas: None,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}


def local_replicas(strategy: tf.distribute.Strategy) -> int:
  """Replicas of this process."""
  return len(strategy.extended.worker_devices)


def worker(strategy: Optional[tf.distribute.Strategy]):
  """(this worker's index, the number of workers): (0, 1) within one process."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if strategy is None or resolver is None or not resolver.cluster_spec().as_dict():
    return 0, 1
  return resolver.task_id, len(resolver.cluster_spec().as_dict()["worker"])


def is_multi_worker(strategy: Optional[tf.distribute.Strategy]) -> bool:
  """Whether the run's steps are taken in step with other processes."""
  return worker(strategy)[1] > 1


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
  """Whether this process writes the run's files: worker 0 (the only one without workers)."""
  return worker(strategy)[0] == 0


@dataclasses.dataclass(frozen=True)
class ShardedPoissonSampler:
  """Worker `worker` of `workers`'s part of a Poisson draw of the whole data set.

  Examples i with i % workers == worker join each step independently with probability
  q = batch_size / num_examples, from this worker's coins: with every worker doing the same, each
  example of the set joins with probability q, exactly once. Steps and q are the whole set's.
  """
  sampler: sampling.PoissonSampler
  worker: int
  workers: int

  @property
  def steps_per_epoch(self) -> int:
    return self.sampler.steps_per_epoch

  def chunks(self, step: int) -> List[sampling.Chunk]:
    """This worker's draw for `step` in chunks of physical_batch_size rows (at least one)."""
    shard = np.arange(self.worker, self.sampler.num_examples, self.workers, dtype=np.int64)
    # This worker's slice of a draw over the whole set: with reproducible coins, every worker's
    # stream is the same, and a draw of len(shard) coins would tie the j-th example of each shard.
    whole = self.sampler.coins.inclusion(step, self.sampler.num_examples,
                                         self.sampler.sampling_probability)
    included = whole[self.worker::self.workers]
    return sampling.split_into_chunks(shard[included], self.sampler.physical_batch_size)


def shard_sampler(sampler, strategy):
  """`sampler` itself within one process; this worker's ShardedPoissonSampler across workers."""
  index, count = worker(strategy)
  if count == 1:
    return sampler
  if not isinstance(sampler, sampling.PoissonSampler):
    raise ValueError("multi_worker runs need --sampling=poisson")
  return ShardedPoissonSampler(sampler, index, count)


_TASK = re.compile(r"/job:worker/(?:replica:\d+/)?task:\d+")


def worker_failure(error: Exception) -> Optional[str]:
  """A one-line reason when `error` is a peer worker failing, else None."""
  if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.AbortedError)):
    return None
  tasks = sorted(set(_TASK.findall(str(error))))
  return (f"a worker stopped responding ({', '.join(tasks) or 'task unknown'}): "
          f"{type(error).__name__}; restart every worker to resume from the chief's checkpoint")


def make_strategy(name: str, cpu_replicas: Optional[int] = None):
  """The strategy registered as `name` (None for one device). Call before TensorFlow starts."""
  if name not in STRATEGIES:
    raise ValueError(f"unknown distribution {name!r}; valid: {sorted(STRATEGIES)}")
  return STRATEGIES[name](cpu_replicas)


def split_chunks(stacked: Sequence[np.ndarray], replicas: int) -> List[List[np.ndarray]]:
  """Deals [n, P, ...] stacked chunks (images, labels, masks) out to `replicas`.

  Pads the chunk axis with all-padding chunks (zeros, mask 0) to a multiple of `replicas`, then
  gives replica r the contiguous block r. Returns, per replica, its [m, P, ...] arrays.
  """
  count = len(stacked[0])
  total = max(1, math.ceil(count / replicas)) * replicas
  padded = [np.concatenate([array, np.zeros((total - count,) + array.shape[1:], array.dtype)])
            for array in stacked]
  return [list(parts) for parts in zip(*(np.split(array, replicas) for array in padded))]


def describe(name: str, strategy: tf.distribute.Strategy) -> str:
  """The run's line about its replicas, for the strategy registered as `name`."""
  return (f"Distribution {name}: {strategy.num_replicas_in_sync} replicas "
          f"({', '.join(strategy.extended.worker_devices)}); each step's chunks are dealt out, "
          "the clipped sums all-reduced, and the noise added once")


@contextlib.contextmanager
def worker_scratch(chief: bool):
  """None for the chief; for another worker, a directory for its own saves (kept only for its
  collectives' sake), removed however the run ends."""
  if chief:
    yield None
    return
  scratch = tempfile.mkdtemp(prefix="tfdp-worker-")
  try:
    yield scratch
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


class ReplicatedStep:
  """A logical private step over a strategy's replicas: one draw, all-reduced sums, one noise.

  The step's pieces are the single-device step's (tfdp.training.steps.TrainStep), so the
  mechanism is the same (see this module's docstring for the argument):

  Args:
    chunk_sum: (images [P, ...], labels [P], mask [P]) -> (clipped sums, extras for the noise,
      loss sum, correct): one chunk's masked, clipped sums. Private.
    zero_sums: () -> (sums, extras, [3]) zeros shaped like what the chunks add up to.
    update: (sums, extras, monitored, noise_seed, aggregate) -> None: noises the step's summed
      clipped gradients once and applies them; called with aggregate=False, since every replica
      already holds the all-reduced sums.
    strategy: the tf.distribute strategy whose scope built the model and optimizer; None when
      only `replica_step` is used, from a replica context someone else runs (Keras's `fit`).
  """

  def __init__(self, chunk_sum: Callable, zero_sums: Callable, update: Callable,
               strategy: Optional[tf.distribute.Strategy] = None):
    self._chunk_sum = chunk_sum
    self._zero_sums = zero_sums
    self._update = update
    self._strategy = strategy
    self._function = None  # Traced on the first call (_traced).

  def replica_step(self, images, labels, masks, noise_seed):
    """On one replica: the clipped sums of its [m, P, ...] chunks, all-reduced over the replicas,
    then the one noised update, which every replica computes identically from the same key.

    Returns:
      [3] float32: the step's loss sum, correct predictions and real examples over all replicas,
      for monitoring only (computed from private data without noise).
    """
    zeros = self._zero_sums()

    def add_chunk(i, totals):
      sums, extras, loss_sum, correct = self._chunk_sum(images[i], labels[i], masks[i])
      monitored = tf.stack([loss_sum, correct, tf.reduce_sum(masks[i])])
      return i + 1, tf.nest.map_structure(tf.add, totals, (sums, extras, monitored))

    _, local = tf.while_loop(lambda i, _: i < tf.shape(masks)[0], add_chunk, (0, zeros))
    context = tf.distribute.get_replica_context()
    sums, extras, monitored = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    chief = tf.equal(context.replica_id_in_sync_group, 0)  # Its key, on every replica and host.
    noise_seed = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                    tf.where(chief, noise_seed, tf.zeros_like(noise_seed)))
    self._update(sums, extras, monitored, noise_seed, aggregate=False)
    return monitored

  def __call__(self, stacked, noise_seed):
    """One logical step over the strategy's replicas; returns the monitor sums.

    `stacked` is this process's draw: the whole draw on one host, this worker's part across
    workers (ShardedPoissonSampler), dealt out to its local replicas.
    """
    strategy = self._strategy
    parts = split_chunks(stacked, local_replicas(strategy))
    if len(parts) == 1:  # One replica here: plain tensors, one trace for every chunk count,
      values = parts[0]  # so every worker's collectives stay in step with the others'.
    else:
      values = strategy.experimental_distribute_values_from_function(
          lambda context: tuple(parts[context.replica_id_in_sync_group]))
    if self._function is None:
      self._function = self._traced(parts[0], noise_seed)
    result = self._function(*values, noise_seed)
    return strategy.experimental_local_results(result)[0]  # The same on every replica.

  def _traced(self, example_parts, noise_seed):
    run = lambda images, labels, masks, seed: self._strategy.run(
        self.replica_step, args=(images, labels, masks, seed))
    if local_replicas(self._strategy) > 1:
      return tf.function(run, reduce_retracing=True)  # The chunks per replica vary.
    signature = [tf.TensorSpec((None,) + array.shape[1:], tf.as_dtype(array.dtype))
                 for array in example_parts]
    return tf.function(run, input_signature=signature + [
        tf.TensorSpec(noise_seed.shape, noise_seed.dtype)])
