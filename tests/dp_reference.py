"""Brute-force references for the private step: one example at a time, clipped, summed."""

import numpy as np
import tensorflow as tf

from tfdp.dp import clipping
from tfdp.dp import randomness


def per_example_gradient(model, image, label, loss_fn=clipping.per_example_loss):
  """The gradient of one example's loss, computed alone: list of var-shaped arrays."""
  with tf.GradientTape() as tape:
    loss = loss_fn(label[None], model(image[None], training=True))[0]
  grads = tape.gradient(loss, model.trainable_variables,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return [tf.convert_to_tensor(g).numpy() for g in grads]  # Embeddings give IndexedSlices.


def scaled_sum(model, images, labels, mask, factor, loss_fn=clipping.per_example_loss):
  """sum over real rows of factor(g_i) * g_i, each g_i computed alone."""
  total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
  for i in range(len(images)):
    if mask[i] == 0:
      continue
    grads = per_example_gradient(model, tf.constant(images[i]), tf.constant(labels[i]), loss_fn)
    scale = factor(grads)
    total = [t + scale * g for t, g in zip(total, grads)]
  return total


def clipped_sum(model, images, labels, mask, l2_norm_clip, loss_fn=clipping.per_example_loss):
  """sum over real rows of clip(g_i, C), each g_i computed alone and clipped by global norm."""
  return scaled_sum(model, images, labels, mask,
                    lambda grads: min(1.0, l2_norm_clip / global_norm(grads)), loss_fn)


def grouped_clipped_sum(model, images, labels, mask, l2_norm_clip, groups):
  """Like clipped_sum, with variable i in group groups[i], each group clipped to C / sqrt(G)."""
  num_groups = max(groups) + 1
  bound = l2_norm_clip / np.sqrt(num_groups)
  total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
  for i in range(len(images)):
    if mask[i] == 0:
      continue
    grads = per_example_gradient(model, tf.constant(images[i]), tf.constant(labels[i]))
    for g in range(num_groups):
      members = [k for k, group in enumerate(groups) if group == g]
      factor = min(1.0, bound / global_norm([grads[k] for k in members]))
      for k in members:
        total[k] = total[k] + factor * grads[k]
  return total


def global_norm(arrays):
  return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def small_conv_model(num_classes=3, input_shape=(6, 6, 2), seed=0):
  """A tiny conv + GroupNorm + dense model (no BatchNorm), deterministic weights."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
  x = tf.keras.layers.GroupNormalization(groups=2)(x)
  x = tf.keras.layers.Activation("tanh")(x)
  x = tf.keras.layers.Flatten()(x)
  outputs = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, outputs)


def batch(size=6, input_shape=(6, 6, 2), num_classes=3, seed=1, scale=3.0):
  """Random float images (scaled so many gradients exceed small clip norms) and labels."""
  rng = np.random.default_rng(seed)
  images = (scale * rng.normal(size=(size, *input_shape))).astype(np.float32)
  labels = rng.integers(0, num_classes, size=size).astype(np.int64)
  return images, labels


def normalized_sum(model, images, labels, mask, l2_norm_clip, gamma):
  """sum over real rows of g_i * C / (||g_i|| + gamma), each g_i computed alone (automatic clipping)."""
  return scaled_sum(model, images, labels, mask,
                    lambda grads: l2_norm_clip / (global_norm(grads) + gamma))


def layer_input_and_output_gradient(model, layer, images, labels):
  """(a, dz) of one layer: its input, and the gradient of the summed loss w.r.t. its output."""
  tap = tf.keras.Model(model.inputs, [model.output, layer.input, layer.output])
  with tf.GradientTape() as tape:
    logits, a, z = tap(images, training=True)
    total = tf.reduce_sum(clipping.per_example_loss(labels, logits))
  return a, tape.gradient(total, z)


def l1_norm(arrays):
  return float(sum(np.sum(np.abs(a, dtype=np.float64)) for a in arrays))


def l1_clipped_sum(model, images, labels, mask, l1_norm_clip):
  """sum over real rows of g_i * min(1, C / ||g_i||_1), each g_i computed alone (Laplace noise)."""
  return scaled_sum(model, images, labels, mask,
                    lambda grads: min(1.0, l1_norm_clip / l1_norm(grads)))


def noise_key():
  """A fresh secret noise key, as the training step passes to noised_mean."""
  return tf.constant(randomness.SecretCoins().noise_seed(0), tf.int64)
