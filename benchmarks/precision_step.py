"""A model's forward and backward pass under each Keras precision policy, in one process.

  python benchmarks/precision_step.py                       # ResNet-20, chunks of 64
  python benchmarks/precision_step.py --policies=float32,mixed_bfloat16 --rounds=5

Times, round robin (so machine drift hits each policy alike), one chunk's gradient of the summed
float32 loss with respect to the variables, for the same model built under each policy. It does not
ask `tfdp.precision.check`, which refuses a policy the CPU cannot run fast: this is how the
refusals are measured. Prints the CPU, then per policy the best time per chunk and its ratio to
float32 (the first policy listed).
"""

import time

import tfdp  # pylint: disable=unused-import  # First: sets oneDNN on before TensorFlow loads.
from absl import app
from absl import flags
import tensorflow as tf

from tfdp import cpu
from tfdp import models
from tfdp import precision
from tfdp.dp import clipping

_MODEL = flags.DEFINE_string("model", "resnet20", "Model name (tfdp.models).")
_CHUNK = flags.DEFINE_integer("chunk", 64, "Rows per chunk.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each times every policy 3 times.")
_POLICIES = flags.DEFINE_list("policies", list(precision.PRECISIONS),
                              "Policies; ratios are to the first.")

LOSS = precision.float32_loss(clipping.per_example_loss)


def gradient_step(policy: str):
  """A compiled chunk: images [P, 32, 32, 3], labels [P] -> gradients, model built under policy."""
  with precision.policy(policy):
    tf.keras.utils.set_random_seed(0)
    model = models.build_model(_MODEL.value, 10, (32, 32, 3))

  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      total = tf.reduce_sum(LOSS(labels, model(images, training=True)))
    return tape.gradient(total, model.trainable_variables)
  return step


def main(_):
  print(cpu.describe())
  images = tf.random.normal([_CHUNK.value, 32, 32, 3])
  labels = tf.random.uniform([_CHUNK.value], 0, 10, tf.int64)
  steps = {policy: gradient_step(policy) for policy in _POLICIES.value}
  for step in steps.values():
    step(images, labels)  # Traced and warmed up.
  best = {policy: float("inf") for policy in steps}
  for _ in range(_ROUNDS.value):
    for policy, step in steps.items():
      for _ in range(3):
        start = time.perf_counter()
        step(images, labels)[0].numpy()
        best[policy] = min(best[policy], time.perf_counter() - start)
  first = best[_POLICIES.value[0]]
  for policy, seconds in best.items():
    print(f"{policy}: {1e3 * seconds:.1f} ms per chunk of {_CHUNK.value}, "
          f"{seconds / first:.2f}x the time of {_POLICIES.value[0]}")


if __name__ == "__main__":
  app.run(main)
