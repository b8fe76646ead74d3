"""Where the fast engine's DP chunk spends its time, against the non-private chunk, in one process.

  python benchmarks/fast_engine_parts.py                          # ResNet-20, WS convolutions
  python benchmarks/fast_engine_parts.py --noweight_standardization --rounds=30

Times, alternately (round robin, so machine drift hits each alike), one chunk of the non-private
forward and backward pass (gradients of the summed loss w.r.t. the variables) and the fast engine's
clipped sum, whole and with parts of the Conv2D rule's work replaced by zeros of the same shape:
- `no_kept_kernel_grads`: the convolutions whose norms materialize each example's kernel gradient
  (and whose sums contract those) skip it;
- `no_ghost_norms`: the convolutions on the Gram path skip their norms;
- `no_filter_sums`: the convolutions on the Gram path skip their weighted sums (a filter-gradient
  pass over the reweighted dz);
- `no_conv_work`: all three.
Those variants compute wrong sums: they are cost probes only, never a training step. Prints the
CPU, then per variant the median and the best time per chunk and their ratios to the non-private
chunk. A part's cost is the whole's time minus the variant's.
"""

import time

import tfdp  # pylint: disable=unused-import  # First: sets oneDNN on before TensorFlow loads.
from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfdp import cpu
from tfdp import models
from tfdp.dp import clipping
from tfdp.dp.fast import conv as fast_conv
from tfdp.dp.fast import engine as engine_lib

_CHUNK = flags.DEFINE_integer("chunk", 64, "Rows per chunk.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timed calls per variant, round robin.")
_WS = flags.DEFINE_bool("weight_standardization", True, "WS convolutions (tfdp's default).")


def _zero_parts(self, layer, a, dz):  # pylint: disable=unused-argument
  parts = [tf.zeros([tf.shape(dz)[0], *layer.kernel.shape])]
  if layer.use_bias:
    parts.append(tf.zeros([tf.shape(dz)[0], layer.kernel.shape[-1]]))
  return parts


def _zero_norms(self, layer, a, dz, z, copies):  # pylint: disable=unused-argument
  return [tf.zeros([tf.shape(dz)[0] // copies])] * (2 if layer.use_bias else 1)


def _zero_sums(self, layer, a, dz, weights):  # pylint: disable=unused-argument
  return [tf.zeros(v.shape) for v in layer.trainable_weights]


# variant: the Conv2DRule methods it replaces.
VARIANTS = {
    "fast (whole)": {},
    "no_kept_kernel_grads": {"per_example_parts": _zero_parts},
    "no_ghost_norms": {"squared_norms_given_output": _zero_norms},
    "no_filter_sums": {"weighted_sum": _zero_sums},
    "no_conv_work": {"per_example_parts": _zero_parts, "squared_norms_given_output": _zero_norms,
                     "weighted_sum": _zero_sums},
}


def _traced_variants(model, images, labels, mask):
  """{name: traced tf.function}: non-private, then each VARIANTS entry, each traced once."""
  rule = fast_conv.Conv2DRule
  original = {name: getattr(rule, name) for patch in VARIANTS.values() for name in patch}

  @tf.function
  def nonprivate():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(clipping.per_example_loss(labels, model(images, training=True)))
    return tape.gradient(loss, model.trainable_variables)

  functions = {"nonprivate": nonprivate}
  engine = engine_lib.FastEngine(model)
  for name, patch in VARIANTS.items():
    for method, value in original.items():
      setattr(rule, method, patch.get(method, value))
    function = tf.function(lambda: engine(clipping.per_example_loss, images, labels, mask, 1.0)[0],
                           reduce_retracing=False)
    function()  # Traced now, under this variant's methods.
    functions[name] = function
  for method, value in original.items():
    setattr(rule, method, value)
  return functions


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(0)
  options = {} if _WS.value else {"weight_standardization": False}
  model = models.build_model("resnet20", 10, (32, 32, 3), **options)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.standard_normal((_CHUNK.value, 32, 32, 3), dtype=np.float32))
  labels = tf.constant(rng.integers(0, 10, _CHUNK.value, dtype=np.int32))
  mask = tf.ones([_CHUNK.value])
  functions = _traced_variants(model, images, labels, mask)
  for function in functions.values():
    function()
  seconds = {name: [] for name in functions}
  for _ in range(_ROUNDS.value):
    for name, function in functions.items():
      start = time.perf_counter()
      tf.nest.flatten(function())[0].numpy()
      seconds[name].append(time.perf_counter() - start)
  print(cpu.describe())
  print(f"resnet20, {'WS' if _WS.value else 'plain'} convolutions, chunk {_CHUNK.value}, "
        f"{_ROUNDS.value} rounds; ms per chunk, median and best, and / non-private")
  base_median, base_best = np.median(seconds["nonprivate"]), min(seconds["nonprivate"])
  for name, values in seconds.items():
    median, best = np.median(values), min(values)
    print(f"{name:22s} {median * 1e3:7.1f} ({median / base_median:4.2f}x)   "
          f"{best * 1e3:7.1f} ({best / base_best:4.2f}x)")


if __name__ == "__main__":
  app.run(main)
