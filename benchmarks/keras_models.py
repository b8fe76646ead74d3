"""Standard Keras models: DP `fit` epoch time against non-private `fit`, side by side in one process.

  python benchmarks/keras_models.py                          # every model in tests/keras_zoo.py
  python benchmarks/keras_models.py --models=mnist_convnet --examples=1024 --epochs=3

For each model (keras.io style, tests/keras_zoo.py; MobileNetV2 after tfdp.keras.fix), the same
architecture and data are trained twice: Keras's own `fit` with plain SGD on shuffled batches of
`--batch`, and tfdp's `make_private(...).fit` on Poisson-sampled steps of expected size `--batch`
in chunks of `--physical_batch` rows (DP-SGD, fast engine). Both run `--epochs` epochs of
ceil(N / batch) steps; the first epoch (graph tracing) is dropped and the median of the others is
compared. The two runs of one model alternate across `--rounds`, and the best epoch of each counts,
so a background load hits both alike. Prints the CPU and a Markdown table.
"""

import os
import statistics
import sys
import tempfile
import time

import tfdp  # noqa: F401  First, so that its oneDNN default holds (tfdp.cpu).

from absl import app
from absl import flags
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import keras_zoo  # pylint: disable=wrong-import-position
from tfdp import cpu  # pylint: disable=wrong-import-position

_MODELS = flags.DEFINE_list("models", sorted(keras_zoo.STANDARD), "Models of tests/keras_zoo.py.")
_EXAMPLES = flags.DEFINE_integer("examples", 2048, "Training examples N.")
_BATCH = flags.DEFINE_integer("batch", 256, "Batch size (expected batch size for DP).")
_PHYSICAL = flags.DEFINE_integer("physical_batch", 128, "Rows per DP chunk (memory only).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per run; the first is dropped.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds; the best epoch counts.")


class _EpochTimes(tf.keras.callbacks.Callback):

  def on_train_begin(self, logs=None):
    self.times = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.times.append(time.perf_counter() - self._start)


def _build(name):
  spec = keras_zoo.STANDARD[name]
  tf.keras.utils.set_random_seed(0)
  model = spec.build()
  return tfdp.keras.fix(model) if spec.needs_fix else model


def _nonprivate_epoch(name, x, y) -> float:
  model = _build(name)
  model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss=keras_zoo.STANDARD[name].loss)
  timer = _EpochTimes()
  model.fit(x, y, batch_size=_BATCH.value, epochs=_EPOCHS.value, verbose=0, callbacks=[timer])
  return statistics.median(timer.times[1:])


def _private_epoch(name, x, y) -> float:
  private = tfdp.keras.make_private(
      _build(name), optimizer="dp_sgd", learning_rate=0.01, l2_norm_clip=1.0, target_delta=1e-5,
      noise_multiplier=1.0, epochs=_EPOCHS.value, train_size=len(x), batch_size=_BATCH.value)
  private.compile(loss=keras_zoo.STANDARD[name].loss)
  timer = _EpochTimes()
  dataset = tfdp.data.poisson_dataset(x, y, batch_size=_BATCH.value,
                                      physical_batch_size=_PHYSICAL.value)
  private.fit(dataset, epochs=_EPOCHS.value, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False), timer])
  engine = private._private_step[0].engine  # pylint: disable=protected-access
  if engine.fallback_layers:
    raise RuntimeError(f"{name} took the slow path for {engine.fallback_layers}")
  return statistics.median(timer.times[1:])


def main(argv):
  del argv
  os.environ.setdefault("TFDP_LEDGER_DIR", tempfile.mkdtemp())  # Keep ~/.cache clean.
  print(cpu.describe())
  print(f"N = {_EXAMPLES.value}, batch {_BATCH.value}, DP chunks of {_PHYSICAL.value}, "
        f"{_EPOCHS.value} epochs (first dropped), best of {_ROUNDS.value} alternating rounds\n")
  print("| model | non-private epoch (s) | DP epoch (s) | DP / non-private |")
  print("|---|---:|---:|---:|")
  for name in _MODELS.value:
    x, y = keras_zoo.STANDARD[name].data(_EXAMPLES.value, 0)
    nonprivate, private = [], []
    for _ in range(_ROUNDS.value):
      nonprivate.append(_nonprivate_epoch(name, x, y))
      private.append(_private_epoch(name, x, y))
    print(f"| {name} | {min(nonprivate):.3f} | {min(private):.3f} | "
          f"{min(private) / min(nonprivate):.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
