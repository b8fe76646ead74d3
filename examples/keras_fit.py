"""Your own Keras model in `fit`, trained with DP-SGD by tfdp's fast engine, exported with its ε.

The Keras user's path: a functional model of your own (Conv2D + GroupNormalization + Dense, no
BatchNorm), `tfdp.keras.make_private` to calibrate σ to ε = 3 before anything trains, `compile`
and `fit` on `tfdp.data.poisson_dataset` (Poisson-sampled steps, what the accountant assumes),
ε in the History after every epoch, and a SavedModel for TF Serving whose model card states the
guarantee. The training logs hold no loss or accuracy of the private batches: those would be
unnoised figures of the private data. Validation data is public here (the held-out digits).

    python examples/keras_fit.py    # digits (bundled), about 30 s on 2 CPU cores; test accuracy
                                    # about 0.85 at ε <= 3 (chance 0.1)
"""

import os
import tempfile

import tfdp  # Before TensorFlow loads: tfdp quiets its C++ log and turns oneDNN on.
import tensorflow as tf  # pylint: disable=wrong-import-order

# Setup: units in the comments.
EPSILON, DELTA = 3.0, 1e-5  # The budget; δ < 1 / N.
L2_NORM_CLIP = 1.0  # C: the bound on each example's whole gradient.
BATCH_SIZE = 100  # Expected examples per step, q = 100 / 1,400.
PHYSICAL_BATCH_SIZE = 64  # Rows per chunk: memory, not privacy.
LEARNING_RATE = 0.5  # DP-SGD without momentum.
EPOCHS = 5  # 14 steps each; σ is calibrated so all 70 spend at most ε.


def prepare_data():
  """Digits as float images in [0, 1] [N, 8, 8, 1] and integer labels, 1,400 for training."""
  dataset = tfdp.data.load_dataset("digits")
  train_x = dataset.train_images[:1400].astype("float32") / 255.0
  test_x = dataset.test_images.astype("float32") / 255.0
  return (train_x, dataset.train_labels[:1400]), (test_x, dataset.test_labels)


def make_model(input_shape, num_classes) -> tf.keras.Model:
  """A small conv net of our own: per-example-safe GroupNormalization instead of BatchNorm."""
  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
  x = tf.keras.layers.GroupNormalization(groups=4)(x)
  x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
  x = tf.keras.layers.GroupNormalization(groups=8)(x)
  x = tf.keras.layers.Flatten()(x)
  outputs = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, outputs)


def main(epochs: int = EPOCHS, export_dir: str = "") -> dict:
  """Trains, evaluates and exports; returns {'test_accuracy', 'epsilon', 'history', 'saved_model'}."""
  (train_x, train_y), (test_x, test_y) = prepare_data()
  private = tfdp.keras.make_private(
      make_model(train_x.shape[1:], 10), optimizer="dp_sgd", learning_rate=LEARNING_RATE,
      l2_norm_clip=L2_NORM_CLIP, target_epsilon=EPSILON, target_delta=DELTA, epochs=epochs,
      train_size=len(train_x), batch_size=BATCH_SIZE)
  private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
  train = tfdp.data.poisson_dataset(train_x, train_y, batch_size=BATCH_SIZE,
                                    physical_batch_size=PHYSICAL_BATCH_SIZE)
  history = private.fit(train, epochs=epochs, validation_data=(test_x, test_y), verbose=2)

  _, accuracy = private.evaluate(test_x, test_y, verbose=0)
  export_dir = export_dir or os.path.join(tempfile.mkdtemp(), "keras_fit")
  saved_model = tfdp.export.export_saved_model(private, export_dir)  # Pixels / 255, as trained.
  print(f"Test accuracy {accuracy:.3f}; {private.privacy_ledger.statement()}")
  print(f"SavedModel with its model card: {saved_model}")
  return {"test_accuracy": accuracy, "epsilon": history.history["epsilon"][-1],
          "history": history.history, "saved_model": saved_model}


if __name__ == "__main__":
  main()
