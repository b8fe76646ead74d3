"""The one-run privacy audit of a Keras `fit`: canaries in, train, score, bound ε from below.

keras_fit.py's model and settings, with 100 noise canaries (random pixels, random labels) each put
in the training set with probability 1/2 by the auditor's secret coins. After training, each
canary's loss under the model scores it, and `tfdp.privacy.audit` turns the guesses into a lower
bound on ε at 95% beside the proven ε (a bound above it would mean a bug). The canaries count in
N: they are training examples.

    python examples/keras_audit.py    # about 30 s on 2 CPU cores; the bound stays at 0 (ε = 3)
"""

import os
import sys

import tensorflow as tf

import tfdp
from tfdp.data import canaries
from tfdp.privacy import audit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_fit  # pylint: disable=wrong-import-position

CANARIES = 100  # Each in with probability 1/2: about 50 join the 1,400 digits.


def main(epochs: int = keras_fit.EPOCHS) -> dict:
  """Trains with canaries and audits; returns the audit's figures with 'epsilon' and 'train_size'."""
  digits = tfdp.data.load_dataset("digits")
  images, labels = digits.train_images[:1400], digits.train_labels[:1400]  # uint8 [N, 8, 8, 1].
  drawn = canaries.draw(images, labels, 10, CANARIES, "noise", canaries.audit_rng(None))
  train_images, train_labels = canaries.training_set(images, labels, drawn)
  scale = lambda pixels: pixels.astype("float32") / 255.0

  private = tfdp.keras.make_private(
      keras_fit.make_model(images.shape[1:], 10), optimizer="dp_sgd",
      learning_rate=keras_fit.LEARNING_RATE, l2_norm_clip=keras_fit.L2_NORM_CLIP,
      target_epsilon=keras_fit.EPSILON, target_delta=keras_fit.DELTA, epochs=epochs,
      train_size=len(train_labels), batch_size=keras_fit.BATCH_SIZE)
  private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  history = private.fit(tfdp.data.poisson_dataset(
      scale(train_images), train_labels, batch_size=keras_fit.BATCH_SIZE,
      physical_batch_size=keras_fit.PHYSICAL_BATCH_SIZE), epochs=epochs, verbose=2)

  losses = tf.keras.losses.sparse_categorical_crossentropy(
      drawn.labels, private(scale(drawn.images), training=False), from_logits=True).numpy()
  epsilon = history.history["epsilon"][-1]
  result = audit.audit(losses, drawn.included, keras_fit.DELTA, proven_epsilon=epsilon)
  print(result["audit"]["verdict"])
  return {**result, "epsilon": epsilon, "train_size": len(train_labels),
          "included": int(drawn.included.sum())}


if __name__ == "__main__":
  main()
