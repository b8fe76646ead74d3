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
  replicas' local sums live only inside the step. Nothing else crosses steps, so the accountant's
  composition of Poisson-subsampled Gaussian (or Laplace) steps applies unchanged, with the same
  q = batch_size / N and step count as on one device.

Strategies by name (`--distribution`): 'none' (one device) and 'mirrored' (every visible GPU, or
`--cpu_replicas` logical CPU devices for testing).
"""

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf


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


STRATEGIES: Dict[str, Callable[[Optional[int]], Optional[tf.distribute.Strategy]]] = {
    "none": lambda cpu_replicas: None,
    "mirrored": _mirrored,
}


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
