"""TF Privacy's Keras tutorial, unchanged but for one line: the optimizer clips by layer groups.

The pattern of TF Privacy's "Implement Differential Privacy with TensorFlow Privacy" tutorial: a
small conv net, a per-example loss (reduction NONE), `compile` and `fit` with fixed-size batches,
then ε from the accountant. The only change is the optimizer:
`tfdp.optimizers.GroupedDPKerasSGDOptimizer(..., clip_groups=2)` in place of
`DPKerasSGDOptimizer(...)`: each example's gradient is clipped in two groups of layers, each to
C / sqrt(2), so the noise and ε are those of flat clipping at C.

What this path is not: batches are `fit`'s shuffled fixed-size batches, not Poisson draws, so the ε
printed (the Poisson accountant's) is the usual approximation, not a proof; and per-example
gradients come from TF Privacy's vectorized Jacobian, not tfdp's fast engine. `python -m
tfdp.train` gives both.

    python examples/tf_privacy_tutorial.py    # digits (bundled), about a minute on 2 CPU cores;
                                              # test accuracy about 0.7 at ε = 3.2 (chance 0.1)
"""

import tensorflow as tf

import tfdp
from tfdp import data
from tfdp import optimizers
from tfdp import privacy

# Setup: the tutorial's hyperparameters, scaled to 1,400 digits of 8x8 pixels.
L2_NORM_CLIP = 1.0  # C: the bound on each example's whole gradient.
NOISE_MULTIPLIER = 1.5  # σ: noise std / C; with q = 1/14 and 140 steps, ε = 3.2 at δ = 1e-5.
BATCH_SIZE = 100  # Divides the 1,400 training examples: TF Privacy needs whole microbatches.
NUM_MICROBATCHES = BATCH_SIZE  # One example per microbatch: per-example clipping.
LEARNING_RATE = 0.5  # SGD, no momentum, as the tutorial.
EPOCHS = 10
DELTA = 1e-5


def prepare_data():
  """Digits as float images in [0, 1] and integer labels, 1,400 for training."""
  dataset = data.load_dataset("digits")
  train_x = dataset.train_images[:1400].astype("float32") / 255.0
  test_x = dataset.test_images.astype("float32") / 255.0
  return (train_x, dataset.train_labels[:1400]), (test_x, dataset.test_labels)


def make_model(input_shape, num_classes) -> tf.keras.Model:
  """The tutorial's conv net, with strides and kernels for 8x8 inputs (no BatchNorm)."""
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu", input_shape=input_shape),
      tf.keras.layers.MaxPool2D(2, 1),
      tf.keras.layers.Conv2D(32, 3, strides=2, padding="valid", activation="relu"),
      tf.keras.layers.MaxPool2D(2, 1),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(32, activation="relu"),
      tf.keras.layers.Dense(num_classes),
  ])


def main(epochs: int = EPOCHS) -> dict:
  """Trains, evaluates and returns {'test_accuracy', 'epsilon'}."""
  (train_x, train_y), (test_x, test_y) = prepare_data()
  model = make_model(train_x.shape[1:], 10)
  optimizer = optimizers.GroupedDPKerasSGDOptimizer(
      l2_norm_clip=L2_NORM_CLIP, noise_multiplier=NOISE_MULTIPLIER,
      num_microbatches=NUM_MICROBATCHES, learning_rate=LEARNING_RATE, clip_groups=2)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.NONE)
  model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])  # For model.evaluate.
  # verbose=0: fit's progress lines are the loss on the private batches, without noise; the only
  # released figures here are the test accuracy and ε.
  model.fit(train_x, train_y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)

  _, accuracy = model.evaluate(test_x, test_y, verbose=0)
  epsilon = privacy.epsilon(num_examples=len(train_x), batch_size=BATCH_SIZE, epochs=epochs,
                            noise_multiplier=NOISE_MULTIPLIER, delta=DELTA)
  print(f"tfdp {tfdp.__version__}: test accuracy {accuracy:.3f}; "
        f"ε = {epsilon:.2f} at δ = {DELTA} by the RDP accountant for Poisson sampling, applied "
        "to shuffled fixed-size batches: the usual approximation, not a proof")
  return {"test_accuracy": accuracy, "epsilon": epsilon}


if __name__ == "__main__":
  main()
