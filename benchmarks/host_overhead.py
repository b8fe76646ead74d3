"""Host overhead of a training step: steps per second of a tiny model, where compute is negligible.

  python benchmarks/host_overhead.py                         # linear on 8x8x1, batch 64, 4 chunks
  python benchmarks/host_overhead.py --chunk=64 --steps=300

Times tfdp.training.steps.TrainStep (fast DP and non-private) on the linear model of the digits shape, so
what is measured is dispatch, host-device synchronization and Python between the compiled pieces.
To compare two versions of tfdp, run this script from each checkout, alternating, on one machine.
"""

import functools

import tfdp  # noqa: F401  First, so that its oneDNN default holds (tfdp.cpu).

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfdp import cpu
from tfdp import models
from tfdp import optimizers
from tfdp.training import steps

import alternating  # benchmarks/alternating.py, beside this script.

_BATCH = flags.DEFINE_integer("batch", 64, "Examples per logical step.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Rows per chunk (batch / chunk calls per step).")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds; the best counts.")


def _step(private: bool) -> steps.TrainStep:
  model = models.build_model("linear", 10, (8, 8, 1))
  optimizer = (optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=1.0, noise_multiplier=1.0)
               if private else optimizers.build_optimizer("sgd", 0.1))
  return steps.TrainStep(model, optimizer, tf.identity, private=private,
                         expected_batch_size=_BATCH.value)


def _chunks():
  rng = np.random.default_rng(0)
  images = rng.standard_normal((_BATCH.value, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, 10, _BATCH.value, dtype=np.int32)
  mask = np.ones(_BATCH.value, np.float32)
  return [(images[i:i + _CHUNK.value], labels[i:i + _CHUNK.value], mask[i:i + _CHUNK.value])
          for i in range(0, _BATCH.value, _CHUNK.value)]


def main(argv):
  del argv
  chunks = _chunks()
  runs = {"nonprivate": _step(False), "fast DP": _step(True)}
  best = alternating.best_calls_per_second(
      {name: functools.partial(step, chunks) for name, step in runs.items()},
      _ROUNDS.value, _STEPS.value)
  print(cpu.describe())
  print(f"linear 8x8x1, batch {_BATCH.value} in {len(chunks)} chunk(s): "
        + ", ".join(f"{name} {value:.1f} steps/s" for name, value in best.items()))


if __name__ == "__main__":
  app.run(main)
