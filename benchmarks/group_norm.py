"""tfdp's GroupNormalization against Keras' own, side by side in one process.

  python benchmarks/group_norm.py                     # ResNet-20, batch 256, non-private and fast DP
  python benchmarks/group_norm.py --batch=64 --steps=2

Builds ResNet-20 twice, once with each GroupNormalization class (same weights, same results to float32
rounding), and times TrainStep rounds alternately. Prints examples/s and the ratio.
"""

import functools

import tfdp  # noqa: F401  First, so that its oneDNN default holds (tfdp.cpu).

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfdp import cpu
from tfdp import models
from tfdp.models import layers
from tfdp import optimizers
from tfdp.training import steps

import alternating  # benchmarks/alternating.py, beside this script.

_BATCH = flags.DEFINE_integer("batch", 256, "Examples per step (one chunk).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds; the best counts.")


def _step(group_norm_class, private: bool) -> steps.TrainStep:
  original = layers.GroupNormalization
  layers.GroupNormalization = group_norm_class
  try:
    tf.keras.utils.set_random_seed(0)
    model = models.build_model("resnet20", 10, (32, 32, 3))
  finally:
    layers.GroupNormalization = original
  optimizer = (optimizers.build_optimizer("dp_sgd", 0.01, l2_norm_clip=1.0, noise_multiplier=1.0)
               if private else optimizers.build_optimizer("sgd", 0.01))
  return steps.TrainStep(model, optimizer, tf.identity, private=private,
                         expected_batch_size=_BATCH.value)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  chunks = [(rng.standard_normal((_BATCH.value, 32, 32, 3), dtype=np.float32),
             rng.integers(0, 10, _BATCH.value, dtype=np.int32), np.ones(_BATCH.value, np.float32))]
  runs = {(label, mode): _step(cls, mode == "fast DP")
          for label, cls in (("Keras", tf.keras.layers.GroupNormalization),
                             ("tfdp", layers.GroupNormalization))
          for mode in ("nonprivate", "fast DP")}
  rates = alternating.best_calls_per_second(
      {key: functools.partial(step, chunks) for key, step in runs.items()},
      _ROUNDS.value, _STEPS.value)
  best = {key: rate * _BATCH.value for key, rate in rates.items()}
  print(cpu.describe())
  for mode in ("nonprivate", "fast DP"):
    keras, tfdp = best[("Keras", mode)], best[("tfdp", mode)]
    print(f"resnet20 batch {_BATCH.value} {mode}: Keras GroupNormalization {keras:.1f} ex/s, "
          f"tfdp GroupNormalization {tfdp:.1f} ex/s, ratio {tfdp / keras:.2f}")


if __name__ == "__main__":
  app.run(main)
