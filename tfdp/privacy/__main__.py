"""Plan a run's privacy before training: ε by RDP and PLD for a σ, or the σ for a target ε.

    python -m tfdp.privacy --num_examples=60000 --batch_size=256 --epochs=60 \
        --noise_multiplier=1.1 --delta=1e-5
    python -m tfdp.privacy --num_examples=50000 --batch_size=1024 --epochs=40 --epsilon=3

The counterpart of TF Privacy's compute_dp_sgd_privacy, with tfdp's conventions
(tfdp.privacy.planner).
"""

import sys

from absl import app
from absl import flags

from tfdp.privacy import planner

_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "N, the training set size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Expected (Poisson) batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs of ceil(N / batch_size) steps.")
_NOISE_MULTIPLIER = flags.DEFINE_float("noise_multiplier", None, "σ: report the ε it gives.")
_EPSILON = flags.DEFINE_float("epsilon", None, "Target ε: report the σ that reaches it (RDP).")
_DELTA = flags.DEFINE_float("delta", 1e-5, "δ of the guarantee; should be < 1/N.")


def main(argv):
  del argv
  try:
    print(planner.report(_NUM_EXAMPLES.value, _BATCH_SIZE.value, _EPOCHS.value, _DELTA.value,
                 _NOISE_MULTIPLIER.value, _EPSILON.value))
  except ValueError as error:
    sys.exit(f"tfdp.privacy: error: {error}")


if __name__ == "__main__":
  app.run(main)
