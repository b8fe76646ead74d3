"""Does --jit_compile (XLA) speed up the DP step on CPU? Side by side in one process.

  python benchmarks/jit_cpu.py --model=cnn --input_shape=8,8,1 --batch=64 --steps=20
  python benchmarks/jit_cpu.py --model=resnet20 --input_shape=32,32,3 --batch=16 --steps=3

Prints examples/second of the vectorized DP step with and without XLA, and their ratio. Runs alternate
(off, on, off, on, ...) after one warm-up step each, so that machine noise hits both alike.
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfdp import models
from tfdp import optimizers
from tfdp.training import steps

_MODEL = flags.DEFINE_string("model", "cnn", "Model name.")
_SHAPE = flags.DEFINE_list("input_shape", ["8", "8", "1"], "H,W,C.")
_BATCH = flags.DEFINE_integer("batch", 64, "Examples per step (one chunk).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per configuration.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.")


def _step_fn(jit: bool, shape, num_classes=10):
  model = models.build_model(_MODEL.value, num_classes, shape)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=1.0, noise_multiplier=1.0)
  return steps.TrainStep(model, optimizer, tf.identity, private=True,
                         expected_batch_size=_BATCH.value, jit_compile=jit)


def main(argv):
  del argv
  shape = tuple(int(s) for s in _SHAPE.value)
  rng = np.random.default_rng(0)
  chunk = (rng.normal(size=(_BATCH.value, *shape)).astype(np.float32),
           rng.integers(0, 10, _BATCH.value), np.ones(_BATCH.value, np.float32))
  fns = {"no_xla": _step_fn(False, shape), "xla": _step_fn(True, shape)}
  for fn in fns.values():
    fn([chunk])  # Trace and compile outside the timing.
  seconds = {name: [] for name in fns}
  for _ in range(_ROUNDS.value):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        fn([chunk])
      seconds[name].append(time.perf_counter() - start)
  rate = {n: _BATCH.value * _STEPS.value / np.median(s) for n, s in seconds.items()}
  for name, value in rate.items():
    print(f"{_MODEL.value} batch {_BATCH.value} {name}: {value:.1f} examples/s "
          f"(median of {_ROUNDS.value} rounds)")
  print(f"xla / no_xla = {rate['xla'] / rate['no_xla']:.2f}")


if __name__ == "__main__":
  app.run(main)
