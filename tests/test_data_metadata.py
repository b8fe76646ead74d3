"""What a run releases about the data's form never depends on the training split.

The number of classes, the input shape and the normalization come from declared metadata or the
test split; a training split that would change them is refused with an error naming the file.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfdp import data


def _write_png(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(tf.constant(image, tf.uint8)))


def _rgb_folder(root, classes=("a", "b"), per_class=2, shape=(6, 6, 3)):
  """root/{train,test}/<class>/NN.png, every image of `shape`."""
  for split in ("train", "test"):
    for label, name in enumerate(classes):
      for i in range(per_class):
        _write_png(os.path.join(root, split, name, f"{i:02d}.png"),
                   np.full(shape, 40 * label + i, np.uint8))
  return str(root)


def test_folder_shape_does_not_follow_the_first_training_image(tmp_path):
  root = _rgb_folder(tmp_path)
  # The first training file (sorted) is grayscale; every other image is RGB.
  _write_png(os.path.join(root, "train", "a", "00.png"), np.full((6, 6, 1), 9, np.uint8))
  dataset = data.load_dataset("folder", data_dir=root)
  assert dataset.input_shape == (6, 6, 3) and dataset.train_images.shape == (4, 6, 6, 3)
  assert dataset.augment == "flip_crop" and dataset.mean == (0.5, 0.5, 0.5)


def test_folder_first_training_image_of_another_size_is_refused_by_name(tmp_path):
  root = _rgb_folder(tmp_path)
  first = os.path.join(root, "train", "a", "00.png")
  _write_png(first, np.zeros((7, 6, 3), np.uint8))
  with pytest.raises(data.DataError,
                     match=r"\S*train/a/00\.png \(shape \(7, 6, 3\) where the first test image"):
    data.load_dataset("folder", data_dir=root)


def _write_npz(path, train_labels, test_labels, **extra):
  rng = np.random.default_rng(0)
  np.savez(path, train_images=rng.integers(0, 256, (len(train_labels), 4, 4)).astype(np.uint8),
           train_labels=np.array(train_labels, np.uint8),
           test_images=rng.integers(0, 256, (len(test_labels), 4, 4)).astype(np.uint8),
           test_labels=np.array(test_labels, np.uint8), **extra)
  return str(path)


def test_npz_classes_come_from_the_test_labels_not_the_training_labels(tmp_path):
  test_labels = [0, 1, 2, 0, 1, 2]
  full = data.load_dataset("npz", _write_npz(tmp_path / "full.npz", [0, 1, 2, 0], test_labels))
  missing_top = data.load_dataset("npz", _write_npz(tmp_path / "part.npz", [0, 1, 0, 1],
                                                    test_labels))
  assert full.num_classes == missing_top.num_classes == 3


def test_npz_training_label_beyond_the_test_classes_is_refused_by_file(tmp_path):
  path = _write_npz(tmp_path / "wide.npz", [0, 1, 2, 1], [0, 1, 0, 1])
  with pytest.raises(data.DataError, match=r"wide\.npz: train_labels go up to 2.*class_names"):
    data.load_dataset("npz", path)


def test_npz_declared_class_names_fix_the_classes(tmp_path):
  names = np.array(["cat", "dog", "eel", "fox"])
  dataset = data.load_dataset("npz", _write_npz(tmp_path / "named.npz", [0, 1, 2, 1], [0, 1],
                                                class_names=names))
  assert dataset.class_names == ("cat", "dog", "eel", "fox") and dataset.num_classes == 4
