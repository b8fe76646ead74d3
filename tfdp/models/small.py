"""Small models for tiny inputs (e.g. 8x8x1 digits) and quick runs: linear and a small CNN."""

import tensorflow as tf

from tfdp.models import registry


@registry.register("linear")
def linear(num_classes, input_shape):
  """Softmax regression on the flattened pixels.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example.

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes].
  """
  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = tf.keras.layers.Flatten(name="flatten")(inputs)
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name="linear")


@registry.register("cnn")
def cnn(num_classes, input_shape, activation="tanh"):
  """A two-conv CNN of a few thousand parameters (6,186 for 10 classes on 8x8x1).

  conv3x3 16 -> act -> conv3x3 32 stride 2 -> act -> global average pool -> dense 32 -> act
  -> dense num_classes.
  The pooling keeps the size independent of the input resolution.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example.
      activation: Keras activation name. tanh by default because bounded activations keep
          gradient norms, hence clipping bias, small under DP-SGD (Papernot et al. 2021, "Tempered
          Sigmoid Activations for Deep Learning with Differential Privacy").

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes].
  """
  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = tf.keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
  x = tf.keras.layers.Activation(activation, name="act1")(x)
  x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", name="conv2")(x)
  x = tf.keras.layers.Activation(activation, name="act2")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  x = tf.keras.layers.Dense(32, name="dense")(x)
  x = tf.keras.layers.Activation(activation, name="act3")(x)
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name="cnn")
