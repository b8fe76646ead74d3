"""The end-to-end CNN of Tramer & Boneh 2021 ("Differentially Private Learning Needs Better
Features (or Much More Data)"), their DP-SGD baseline on CIFAR-10.

    conv3x3 32 -> act -> conv3x3 32 -> act -> max pool 2x2
    conv3x3 64 -> act -> conv3x3 64 -> act -> max pool 2x2
    conv3x3 128 -> act -> conv3x3 128 -> act -> max pool 2x2
    flatten -> dense 128 -> act -> dense num_classes (logits)

tanh throughout and no normalization, as in the paper. The flatten makes the size depend on the
input: 550,570 parameters for 32x32x3 and 10 classes (262,272 of them in the first dense layer),
435,306 for 28x28x1 (the pools floor 28 -> 14 -> 7 -> 3).

    model = models.build_model("convnet", num_classes=10, input_shape=(32, 32, 3))
"""

import tensorflow as tf

from tfdp.models import registry

CONV_FILTERS = ((32, 32), (64, 64), (128, 128))  # Two convolutions per stage, then a max pool.
HIDDEN_UNITS = 128


@registry.register("convnet")
def convnet(num_classes, input_shape, activation="tanh"):
  """Builds Tramer & Boneh's end-to-end CNN.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example, at least 8x8 (three 2x2 pools).
      activation: Keras activation name. tanh as in the paper: bounded activations keep gradient
          norms, hence clipping bias, small under DP-SGD (Papernot et al. 2021, "Tempered Sigmoid
          Activations for Deep Learning with Differential Privacy").

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], named
      layers such as "stage2_conv1" and "dense".

  Raises:
      ValueError: If the input is smaller than 8x8 or `activation` is unknown.
  """
  if min(input_shape[:2]) < 8:
    raise ValueError(
        f"convnet needs inputs of at least 8x8 for its three 2x2 max pools, "
        f"got {input_shape!r}."
    )
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.

  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = inputs
  for stage, stage_filters in enumerate(CONV_FILTERS, start=1):
    for index, filters in enumerate(stage_filters, start=1):
      name = f"stage{stage}_conv{index}"
      # Biases kept: without normalization nothing else shifts the activations.
      x = tf.keras.layers.Conv2D(
          filters, 3, padding="same", kernel_initializer="he_normal", name=name
      )(x)
      x = tf.keras.layers.Activation(activation, name=f"stage{stage}_act{index}")(x)
    x = tf.keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  x = tf.keras.layers.Dense(HIDDEN_UNITS, kernel_initializer="he_normal", name="dense")(x)
  x = tf.keras.layers.Activation(activation, name="dense_act")(x)
  # Keras' Glorot default, not He: no activation follows the logits.
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name="convnet")
