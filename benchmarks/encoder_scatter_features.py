"""Do the random-process encoder's features add to the scattering features? CIFAR-10, on a CPU.

  .venv/bin/python benchmarks/encoder_scatter_features.py --data_dir=/tmp/cifar10 --features=both
  .venv/bin/python benchmarks/encoder_scatter_features.py --data_dir=/tmp/cifar10 --features=both \
      --private --epsilon=3 --epochs=45

Features: `scatter`, the 243 scattering maps (8x8) that `tfdp.train` caches for ScatterNet models
(read from that cache, or computed into it); `encoder`, the last stage (64 maps, 8x8) of the shipped
prior priors/resnet20_randp, pretrained on random-process images only; or `both`, concatenated.
Each map is standardized by its exact mean and deviation over the training set: not private, so
this measures an upper bound on what a run would get, which releases them with noise. The head is
the ScatterNet CNN of tfdp.models.scatter (two tanh 3x3 convolutions of 64, max pooling, a dense
layer).

Without --private: Adam, lr 1e-3, batch 256, the head's non-private ceiling (docs/recipes.md).
With --private: DP-SGD through tfdp.keras.make_private with the hyperparameters of
flags/cifar10_cpu_eps3.flags (batch 8192, lr 4, momentum 0.9, clip 0.1), Poisson sampling from
secret coins, σ calibrated to --epsilon over --epochs. Test accuracy every 5 epochs.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import tfdp  # pylint: disable=wrong-import-position  (sets oneDNN before TensorFlow loads)
import tensorflow as tf  # pylint: disable=wrong-import-position
from tfdp import data  # pylint: disable=wrong-import-position
from tfdp import models  # pylint: disable=wrong-import-position
from tfdp.data import feature_cache  # pylint: disable=wrong-import-position
from tfdp.models import scatter  # pylint: disable=wrong-import-position
from tfdp.priors import pretraining  # pylint: disable=wrong-import-position
from tfdp.priors import prior_files  # pylint: disable=wrong-import-position

PRIOR = os.path.join(ROOT, "priors", "resnet20_randp")
ENCODER_OUTPUT = "stage3_block3_out"  # [B, 8, 8, 64]: the same grid as the scattering maps.


def scattering_features(dataset):
  """(train, test) scattering maps, from the cache tfdp.train fills."""
  front, _ = scatter.split(models.build_model("scatter_cnn", 10, dataset.input_shape))
  preprocess = data.make_preprocess(dataset.mean, dataset.std, "none", training=False)
  standardization = [list(dataset.mean), list(dataset.std)]
  return [feature_cache.features(images, front, preprocess, standardization)
          for images in (dataset.train_images, dataset.test_images)]


def encoder_features(dataset):
  """(train, test) maps of the prior's last stage, pixels standardized as in its pretraining."""
  model = models.build_model("resnet20", 10, dataset.input_shape)
  prior_files.load_into(PRIOR, model, "resnet20", {})
  encoder = tf.keras.Model(model.input, model.get_layer(ENCODER_OUTPUT).output,
                           name="randp_stage3")
  standardize = lambda images: ((tf.cast(images, tf.float32) / 255.0 - pretraining.PIXEL_MEAN)
                                / pretraining.PIXEL_STD)
  standardization = [pretraining.PIXEL_MEAN, pretraining.PIXEL_STD]
  return [feature_cache.features(images, encoder, standardize, standardization)
          for images in (dataset.train_images, dataset.test_images)]


def standardized(parts_train, parts_test):
  """Concatenated maps, each standardized by the training set's exact moments; train float16."""
  train = np.concatenate([p.astype(np.float32) for p in parts_train], axis=-1)
  test = np.concatenate([p.astype(np.float32) for p in parts_test], axis=-1)
  mean = train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
  std = np.sqrt(((train - mean) ** 2).mean(axis=(0, 1, 2), dtype=np.float64)).astype(np.float32)
  for array in (train, test):
    array -= mean
    array /= std + 1e-5
  return train.astype(np.float16), test  # float16 halves the memory; the head casts it.


def cnn_head(input_shape, num_classes):
  inputs = tf.keras.Input(input_shape)
  logits = scatter._cnn_head(inputs, num_classes, 3)  # pylint: disable=protected-access
  return tf.keras.Model(inputs, logits)


class TestEvery5(tf.keras.callbacks.Callback):
  def __init__(self, test, labels, epochs):
    super().__init__()
    self.test, self.labels, self.epochs, self.start = test, labels, epochs, time.time()

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % 5 and epoch + 1 != self.epochs:
      return
    accuracy = self.model.evaluate(self.test, self.labels, batch_size=1000, verbose=0)[1]
    epsilon = (logs or {}).get("epsilon")
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}"
          + (f", ε = {epsilon:.3f}" if epsilon is not None else "")
          + f", {time.time() - self.start:.0f} s", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--features", choices=("scatter", "encoder", "both"), default="both")
  parser.add_argument("--private", action="store_true")
  parser.add_argument("--epsilon", type=float, default=3.0)
  parser.add_argument("--epochs", type=int, default=None, help="default 15, or 45 with --private")
  args = parser.parse_args()
  epochs = args.epochs or (45 if args.private else 15)
  dataset = data.load_dataset("folder", args.data_dir)
  parts = []
  if args.features in ("scatter", "both"):
    parts.append(scattering_features(dataset))
  if args.features in ("encoder", "both"):
    parts.append(encoder_features(dataset))
  train, test = standardized([p[0] for p in parts], [p[1] for p in parts])
  print(f"{args.features}: {train.shape[1:]} features; {tfdp.cpu.describe()}", flush=True)
  model = cnn_head(train.shape[1:], dataset.num_classes)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  callbacks = [TestEvery5(test, dataset.test_labels, epochs)]
  if not args.private:
    model.compile(tf.keras.optimizers.Adam(1e-3), loss, ["accuracy"])
    model.fit(train, dataset.train_labels, batch_size=256, epochs=epochs, verbose=0,
              callbacks=callbacks)
    return
  batch = 8192
  private = tfdp.keras.make_private(
      model, optimizer="dp_sgd", learning_rate=4.0, momentum=0.9, l2_norm_clip=0.1,
      target_epsilon=args.epsilon, target_delta=1e-5, epochs=epochs, train_size=len(train),
      batch_size=batch, physical_batch_size=512)
  private.compile(loss=loss, metrics=["accuracy"])
  private.fit(tfdp.data.poisson_dataset(train, dataset.train_labels, batch_size=batch,
                                        physical_batch_size=512),
              epochs=epochs, verbose=0, callbacks=callbacks)


if __name__ == "__main__":
  main()
