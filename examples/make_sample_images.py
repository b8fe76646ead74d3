"""Writes a few held-out digits as PNG files, to classify with an export of the quickstart.

The quickstart (flags/quickstart.flags) trains on scikit-learn's 8x8 digits and exports to
saved_models/quickstart. These are images of its test split, which training never sees, as 8x8
grayscale PNGs with the pixel values training uses (0..255), so that the export reads them as it
read its training data:

    .venv/bin/python examples/make_sample_images.py --out_dir=samples    # samples/digit_0.png ...
    .venv/bin/python -m tfdp.predict --model_dir=saved_models/quickstart samples/*.png

It prints each file with its true label, to compare with what tfdp.predict says.
"""

import os

from absl import app
from absl import flags

import tfdp  # Before TensorFlow loads: tfdp quiets its C++ log and turns oneDNN on.
import tensorflow as tf  # pylint: disable=wrong-import-order


def write_samples(out_dir: str, count: int = 4) -> dict:
  """Writes the first `count` test digits as out_dir/digit_<i>.png; returns {path: true label}."""
  dataset = tfdp.data.load_dataset("digits")
  os.makedirs(out_dir, exist_ok=True)
  labels = {}
  for i, (image, label) in enumerate(zip(dataset.test_images[:count],
                                         dataset.test_labels[:count])):
    path = os.path.join(out_dir, f"digit_{i}.png")
    tf.io.write_file(path, tf.io.encode_png(image))  # [8, 8, 1] uint8: a grayscale PNG.
    labels[path] = dataset.class_names[label]
  return labels


def main(argv):
  del argv
  for path, label in write_samples(flags.FLAGS.out_dir, flags.FLAGS.count).items():
    print(f"{path}: true label {label}")


if __name__ == "__main__":
  # Defined here, not on import, so that importing this file (the tests do) defines no flags.
  flags.DEFINE_string("out_dir", "samples", "Where the PNG files go.")
  flags.DEFINE_integer("count", 4, "How many test images to write.")
  app.run(main)
