"""Image classification datasets, found by name through the `DATASETS` registry.

Every loader returns a `Dataset`: uint8 images in memory plus the public constants the rest of
tfdp needs (class names, normalization, default augmentation). What a run releases about the data's
form (the number of classes, the input shape, the normalization) never depends on the training
split: it comes from the dataset's declared metadata (the registry's constants, class folder names,
an .npz's `class_names`) or from the test split, which is evaluated but never trained on.

    dataset = load_dataset('digits')                      # 1,437 train / 360 test, 8x8x1
    dataset = load_dataset('folder', data_dir='/tmp/cifar10', train_examples=5000, seed=1)
    dataset = subset(dataset, train_examples=1000, seed=1)

The folder loader decodes every image once before anything trains and names every file it cannot
use in one error; with skip_bad_images=True it leaves them out instead and records how many in
`Dataset.skipped_images` (released without noise: see SKIPPED_NOTE).
"""

import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from tfdp import names
from tfdp.data import preprocess

# Published CIFAR-10 per-channel statistics (pixel values in [0, 1]). They are public constants:
# computing them from the private training set would itself release information about it.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Published constants, never computed here from the (private) training images.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_CLASSES = ('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt',
                         'sneaker', 'bag', 'ankle boot')
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
NAMED_BAD_FILES = 5  # Bad files named in the error and in metrics.json; the count covers them all.
SKIPPED_NOTE = ('which training files could not be used is a property of the private training '
                'data: these counts are released without noise and are NOT covered by the privacy '
                'guarantee (the files are named on the console only, never in what a run '
                'releases); N counts the images kept and is public as usual')

DATASETS: dict[str, Callable[..., 'Dataset']] = {}


class DataError(ValueError):
  """Bad input data; the message names the offending file or value."""


@dataclasses.dataclass(frozen=True)
class SkippedImages:
  """The image files of a folder dataset left out because they cannot be used.

  Attributes:
      root: the folder's data_dir; `report` names files relative to it.
      train: paths of the training files left out, in listing order.
      test: paths of the test files left out, in listing order.
  """

  root: str
  train: tuple = ()
  test: tuple = ()

  def report(self) -> dict:
    """metrics.json's `skipped_images`: the counts and SKIPPED_NOTE. Which training files were
    bad is a fact about the private data, and a file's name can itself be private (a patient's
    name), so no name is released: the console line names them to the user alone."""
    return {'train': len(self.train), 'test': len(self.test), 'not_private': SKIPPED_NOTE}

  def names(self) -> list:
    """The first NAMED_BAD_FILES paths, relative to root, for the console."""
    named = (self.train + self.test)[:NAMED_BAD_FILES]
    return [os.path.relpath(path, self.root) for path in named]


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on numpy fields is ambiguous.
class Dataset:
  """A train/test pair of uint8 image arrays with the public constants that describe them.

  Attributes:
      name: registry name of the loader that made it, e.g. 'digits'.
      train_images: [N, H, W, C] uint8, pixel values 0..255.
      train_labels: [N] int64 in [0, num_classes).
      test_images: [M, H, W, C] uint8.
      test_labels: [M] int64.
      class_names: one str per class; label i names class_names[i].
      mean: per-channel mean in [0, 1] pixel units. A data-independent public constant, never
          computed from the (private) training images.
      std: per-channel standard deviation in [0, 1] pixel units, public like `mean`.
      augment: default training augmentation, a key of `preprocess.AUGMENTATIONS`.
      skipped_images: the unusable files a folder loader with skip_bad_images=True left out
          (none: empty tuples); None when no loader skipped anything by request.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple
  mean: tuple
  std: tuple
  augment: str
  skipped_images: SkippedImages | None = None

  def __post_init__(self):
    for split in ('train', 'test'):
      _check_split(self, split)
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise DataError(f'{self.name}: train images are {self.train_images.shape[1:]} but test '
                      f'images are {self.test_images.shape[1:]}; they must match.')
    channels = self.input_shape[-1]
    if len(self.mean) != channels or len(self.std) != channels:
      raise DataError(f'{self.name}: mean={self.mean} and std={self.std} need one value per '
                      f'channel ({channels}).')
    if min(self.std) <= 0:
      raise DataError(f'{self.name}: std={self.std} must be positive.')
    if self.augment not in preprocess.AUGMENTATIONS:
      raise DataError(f'{self.name}: augment={self.augment!r} is not one of '
                      f'{sorted(preprocess.AUGMENTATIONS)}.')

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def input_shape(self) -> tuple:
    """(H, W, C) of one image, read from the test split (the train split must match)."""
    return tuple(self.test_images.shape[1:])

  @property
  def num_train(self) -> int:
    return len(self.train_labels)


def _check_split(dataset: Dataset, split: str) -> None:
  """Raises DataError unless one split holds [N, H, W, C] uint8 images with N labels in range."""
  images = getattr(dataset, f'{split}_images')
  labels = getattr(dataset, f'{split}_labels')
  where = f'{dataset.name} {split} split'
  if images.dtype != np.uint8 or images.ndim != 4:
    raise DataError(f'{where}: images must be [N, H, W, C] uint8, got {images.dtype} '
                    f'{images.shape}.')
  if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
    raise DataError(f'{where}: labels must be [{len(images)}] int64, got {labels.dtype} '
                    f'{labels.shape}.')
  if len(labels) and (labels.min() < 0 or labels.max() >= len(dataset.class_names)):
    raise DataError(f'{where}: labels span [{labels.min()}, {labels.max()}], outside '
                    f'[0, {len(dataset.class_names)}).')


def register(name: str) -> Callable:
  """Decorator adding a loader `fn(data_dir=None, **kwargs) -> Dataset` to `DATASETS`."""

  def add(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    if name in DATASETS:
      raise ValueError(f'Dataset {name!r} is registered twice.')
    DATASETS[name] = loader
    return loader

  return add


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of DATASETS."""
  names.check('dataset', name, sorted(DATASETS))


def load_dataset(name: str, data_dir: str | None = None, skip_bad_images: bool = False,
                 **kwargs) -> Dataset:
  """Loads a registered dataset.

  Args:
      name: a key of `DATASETS`.
      data_dir: where the loader reads its files; loaders with built-in data ignore it.
      skip_bad_images: leave out image files that cannot be used instead of failing (the folder
          loader, the one that reads image files one by one).
      **kwargs: loader options (see each loader's docstring). Every loader takes
          `train_examples` (None: all) and `seed`, which keep
          `subset(dataset, train_examples, seed)` of the training split.

  Returns:
      The loaded Dataset.

  Raises:
      ValueError: `name` is not registered (the message lists the valid names).
      DataError: the data could not be found, read or decoded, or skip_bad_images was asked of
          a loader that does not read image files.
  """
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; valid names: {sorted(DATASETS)}.')
  if skip_bad_images:
    if name != 'folder':
      raise DataError(f'skip_bad_images applies to the folder dataset, which reads image files '
                      f'one by one; {name!r} has none to skip: drop --skip_bad_images.')
    kwargs['skip_bad_images'] = True
  return DATASETS[name](data_dir=data_dir, **kwargs)


def _choose_subset(n: int, k: int, seed: int) -> np.ndarray:
  """Sorted indices of k of range(n), drawn without replacement; the same seed gives the same k.

  Shared by `subset` and the folder loader so that subsetting before decoding picks exactly the
  examples that subsetting after a full load would.
  """
  if not 1 <= k <= n:
    raise DataError(f'train_examples={k} must be between 1 and the {n} training examples '
                    'available.')
  return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def subset(dataset: Dataset, train_examples: int, seed: int) -> Dataset:
  """Keeps a seeded random subset of the training split; the test split is unchanged.

  Args:
      dataset: the full dataset.
      train_examples: how many training examples to keep, 1..dataset.num_train.
      seed: picks the subset; the same seed always picks the same examples, in their original
          order.

  Returns:
      A Dataset with `train_examples` training examples.

  Raises:
      DataError: train_examples is larger than the training split (or below 1).
  """
  keep = _choose_subset(dataset.num_train, train_examples, seed)
  return dataclasses.replace(dataset, train_images=dataset.train_images[keep],
                             train_labels=dataset.train_labels[keep])


def _maybe_subset(dataset: Dataset, train_examples: int | None, seed: int) -> Dataset:
  """`subset(dataset, train_examples, seed)`, or dataset itself when train_examples is None.

  Every loader takes (train_examples, seed) so that callers can load any dataset the same way.
  """
  return dataset if train_examples is None else subset(dataset, train_examples, seed)


@register('digits')
def load_digits(data_dir: str | None = None, train_examples: int | None = None,
                seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1,797 images, bundled, no download).

  The 80/20 stratified train/test split is fixed (seed 0) whatever the run's seed, so that test
  accuracies of different runs are measured on the same images.

  Args:
      data_dir: ignored; the data ships with scikit-learn.
      train_examples: if given, keep `subset(dataset, train_examples, seed)` of the train split.
      seed: picks that subset; the train/test split itself never depends on it.

  Returns:
      Dataset with [1437, 8, 8, 1] train and [360, 8, 8, 1] test uint8 images, 10 classes.
  """
  del data_dir
  # Imported here: scikit-learn is only needed by this loader.
  from sklearn import datasets as sk_datasets
  from sklearn import model_selection

  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
  labels = digits.target.astype(np.int64)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=0.2, stratify=labels, random_state=0)
  dataset = Dataset(name='digits', train_images=train_x, train_labels=train_y,
                    test_images=test_x, test_labels=test_y,
                    class_names=tuple(str(d) for d in range(10)), mean=(0.5,), std=(0.5,),
                    augment='none')  # A flipped digit is a different (or no) digit.
  return _maybe_subset(dataset, train_examples, seed)


@register('synthetic')
def load_synthetic(data_dir: str | None = None, num_train: int = 512, num_test: int = 128,
                   image_shape: tuple = (32, 32, 3), num_classes: int = 10, seed: int = 0,
                   train_examples: int | None = None) -> Dataset:
  """Deterministic random images that a model can learn: a mean image per class plus noise.

  For smoke tests and benchmarks that must not depend on files or downloads.

  Args:
      data_dir: ignored.
      num_train: number of training images.
      num_test: number of test images.
      image_shape: (H, W, C) of every image.
      num_classes: number of classes; labels are balanced (i % num_classes, shuffled).
      seed: the same seed gives the same images (and the same train_examples subset).
      train_examples: if given, keep `subset(dataset, train_examples, seed)` of the train split.

  Returns:
      Dataset with [num_train, *image_shape] and [num_test, *image_shape] uint8 images.
  """
  del data_dir
  if min(num_train, num_test, num_classes) < 1 or len(image_shape) != 3:
    raise DataError(f'synthetic: need num_train={num_train}, num_test={num_test}, '
                    f'num_classes={num_classes} >= 1 and a 3-D image_shape={image_shape}.')
  rng = np.random.default_rng(seed)
  class_means = rng.uniform(0, 255, size=(num_classes, *image_shape))

  def draw(n):
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    # Noise std 64 (a quarter of the pixel range) keeps classes apart but not trivially so.
    images = class_means[labels] + rng.normal(0, 64, size=(n, *image_shape))
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels

  train_x, train_y = draw(num_train)
  test_x, test_y = draw(num_test)
  channels = image_shape[-1]
  dataset = Dataset(name='synthetic', train_images=train_x, train_labels=train_y,
                    test_images=test_x, test_labels=test_y,
                    class_names=tuple(str(c) for c in range(num_classes)),
                    mean=(0.5,) * channels, std=(0.5,) * channels, augment='none')
  return _maybe_subset(dataset, train_examples, seed)


@register('folder')
def load_folder(data_dir: str | None = None, train_examples: int | None = None,
                seed: int = 0, skip_bad_images: bool = False) -> Dataset:
  """Images in `data_dir/{train,test}/<class>/*.{jpg,jpeg,png,bmp,gif}`, one folder per class.

  Classes are the sorted subdirectory names of train/; test/ must hold the same ones. Every
  image must decode to the shape of the first test image that decodes (channels are converted to
  its channel count), so the input shape, the normalization and the augmentation never depend on a
  training image. CIFAR-10-like data (10 classes of 32x32x3) gets the published CIFAR-10
  normalization, anything else 0.5 per channel; 3-channel images get flip_crop augmentation.

  Every file is decoded once before the dataset is returned, and a file that cannot be used
  (empty, not an image, truncated, a size or channel count that cannot be converted) is found
  then, with every other such file.

  Args:
      data_dir: the directory holding train/ and test/.
      train_examples: if given, keep only this many training images, the same ones
          `subset(full_dataset, train_examples, seed)` would keep; the others are checked but
          their pixels are not kept.
      seed: picks the training subset when train_examples is given.
      skip_bad_images: leave unusable files out (printing how many, recorded in
          `Dataset.skipped_images`) instead of failing. The subset is drawn from the usable files.

  Returns:
      Dataset named 'folder'.

  Raises:
      DataError: a directory is missing or empty, the class sets differ, no training or test
          image can be used, or (without skip_bad_images) any file cannot be used: one message
          with their count, the first NAMED_BAD_FILES paths and why, and the flag that skips them.
  """
  class_names, (train_files, train_labels), (test_files, test_labels) = _scan_folder(data_dir)
  first, shape = _first_test_image(test_files)
  train_images, train_ok = _decode_files(train_files, shape, keep=train_examples is None)
  test_images, test_ok = _decode_files(test_files, shape)
  skipped = SkippedImages(root=data_dir, train=tuple(train_files[~train_ok].tolist()),
                          test=tuple(test_files[~test_ok].tolist()))
  _check_usable(skipped, len(train_files) + len(test_files), shape, first, skip_bad_images)
  # N counts the images kept and is public as usual; how many were left out is a fact about the
  # private data, released only by skipped.report() and labelled as not covered (SKIPPED_NOTE).
  train_images, train_labels = _usable_training_images(
      train_files, train_labels, train_images, train_ok, shape, train_examples, seed)
  cifar_like = shape == (32, 32, 3) and len(class_names) == 10  # Names vary by extraction tool.
  channels = shape[-1]
  return Dataset(name='folder', train_images=train_images, train_labels=train_labels,
                 test_images=test_images[test_ok], test_labels=test_labels[test_ok],
                 class_names=class_names,
                 mean=CIFAR10_MEAN if cifar_like else (0.5,) * channels,
                 std=CIFAR10_STD if cifar_like else (0.5,) * channels,
                 augment='flip_crop' if channels == 3 else 'none',
                 skipped_images=skipped if skip_bad_images else None)


@register('npz')
def load_npz(data_dir: str | None = None, train_examples: int | None = None,
             seed: int = 0) -> Dataset:
  """A MedMNIST-layout .npz: `train_images`, `train_labels`, `test_images`, `test_labels`.

  Images are uint8 [N, H, W] (grayscale) or [N, H, W, C]; labels are integers [N] or [N, 1]
  (single-label tasks only). A `val_*` split, if present, is not used: tfdp reports the held-out
  test split. The classes are the file's declared `class_names` array, else '0' .. 'K-1' with K
  from the test labels (largest plus one), never from the training labels, which must then lie
  in [0, K). Normalization is the public constant 0.5 per channel, never statistics of the
  private images.

  Args:
      data_dir: path of the .npz file (e.g. ../shared/data/pneumoniamnist.npz).
      train_examples: if given, keep `subset(dataset, train_examples, seed)` of the train split.
      seed: picks that subset.

  Raises:
      DataError: the file is missing or unreadable, an array is absent or malformed, or a
          training label is outside the declared (or test) classes; the message names the file
          and the array.
  """
  if data_dir is None or not os.path.isfile(data_dir):
    raise DataError(f'npz: --data_dir must be the path of an .npz file, got {data_dir!r}.')
  try:
    with np.load(data_dir, allow_pickle=False) as arrays:
      contents = {key: arrays[key] for key in arrays.files}
  except (OSError, ValueError) as error:
    raise DataError(f'npz: cannot read {data_dir}: {error}') from None
  splits = {split: _npz_split(contents, split, data_dir) for split in ('train', 'test')}
  class_names = _npz_class_names(contents, splits, data_dir)
  channels = splits['test'][0].shape[-1]
  dataset = Dataset(name='npz', train_images=splits['train'][0], train_labels=splits['train'][1],
                    test_images=splits['test'][0], test_labels=splits['test'][1],
                    class_names=class_names, mean=(0.5,) * channels, std=(0.5,) * channels,
                    augment='none')  # Medical images: flips can change meaning; opt in.
  return _maybe_subset(dataset, train_examples, seed)


def _npz_class_names(contents: dict, splits: dict, path: str) -> tuple:
  """The declared `class_names`, else '0' .. 'K-1' with K from the test labels alone.

  Raises DataError naming the file when a training label is outside them: widening the classes
  to fit the training labels would release something about the training split.
  """
  names = contents.get('class_names')
  if names is not None:
    class_names, source = tuple(str(n) for n in names), 'its class_names array'
  else:
    test_labels = splits['test'][1]
    count = int(test_labels.max()) + 1 if len(test_labels) else 0
    class_names, source = tuple(str(c) for c in range(count)), 'the test labels'
  train_labels = splits['train'][1]
  if len(train_labels) and train_labels.max() >= len(class_names):
    raise DataError(f'npz: {path}: train_labels go up to {train_labels.max()}, but the '
                    f'{len(class_names)} classes from {source} are 0..{len(class_names) - 1}; '
                    'declare every class in a class_names array.')
  return class_names


def _npz_split(contents: dict, split: str, path: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = contents.get(f'{split}_images'), contents.get(f'{split}_labels')
  if images is None or labels is None:
    raise DataError(f'npz: {path} has no {split}_images/{split}_labels arrays '
                    f'(it has {sorted(contents)}).')
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataError(f'npz: {path}: {split}_images must be uint8 [N, H, W] or [N, H, W, C], '
                    f'got {images.dtype} {images.shape}.')
  if labels.ndim == 2 and labels.shape[1] != 1:
    raise DataError(f'npz: {path}: {split}_labels has shape {labels.shape}; only single-label '
                    'tasks ([N] or [N, 1]) are supported.')
  labels = labels.reshape(-1).astype(np.int64)
  if len(labels) != len(images) or labels.min() < 0:
    raise DataError(f'npz: {path}: {split} has {len(images)} images but {len(labels)} labels '
                    'or negative labels.')
  return (images[..., None] if images.ndim == 3 else images), labels


def _scan_folder(data_dir: str | None) -> tuple:
  """Checks the folder layout; returns class_names and (paths, labels) for train and test."""
  if data_dir is None or not os.path.isdir(data_dir):
    raise DataError(f'folder: data_dir={data_dir!r} is not a directory; it should hold '
                    'train/<class>/*.jpg and test/<class>/*.jpg.')
  train_dir, test_dir = os.path.join(data_dir, 'train'), os.path.join(data_dir, 'test')
  class_names = _list_classes(train_dir)
  test_classes = _list_classes(test_dir)
  if test_classes != class_names:
    extra, missing = set(test_classes) - set(class_names), set(class_names) - set(test_classes)
    raise DataError(f'folder: {test_dir} must hold the classes of {train_dir}; it has extra '
                    f'classes {sorted(extra)} and lacks {sorted(missing)}.')
  return class_names, _list_images(train_dir, class_names), _list_images(test_dir, class_names)


def _list_classes(split_dir: str) -> tuple:
  """Sorted names of the subdirectories of split_dir; DataError if there is none."""
  if not os.path.isdir(split_dir):
    raise DataError(f'folder: {split_dir} is missing; expected <data_dir>/{{train,test}}/'
                    '<class>/ image folders.')
  names = tuple(sorted(entry.name for entry in os.scandir(split_dir)
                       if entry.is_dir() and not entry.name.startswith('.')))
  if not names:
    raise DataError(f'folder: {split_dir} has no class subdirectories.')
  return names


def _list_images(split_dir: str, class_names: tuple) -> tuple[np.ndarray, np.ndarray]:
  """All image paths under split_dir/<class>/ (sorted per class) and their [K] int64 labels."""
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_dir, name)
    files = sorted(f for f in os.listdir(class_dir)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    if not files:
      raise DataError(f'folder: {class_dir} contains no {"/".join(IMAGE_EXTENSIONS)} images.')
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  return np.array(paths), np.array(labels, dtype=np.int64)


def _usable_training_images(files: np.ndarray, labels: np.ndarray, images: np.ndarray | None,
                            usable: np.ndarray, shape: tuple, train_examples: int | None,
                            seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The usable training images and labels, or the seeded subset of them.

  A subset is decoded again from its files: the check of every file kept no pixels (`images` is
  None), so that memory holds the subset only.
  """
  if not usable.any():  # Reached with skip_bad_images only: otherwise _check_usable raised.
    raise DataError(f'folder: none of the {len(files)} training images can be used; nothing is '
                    'left to train on.')
  files, labels = files[usable], labels[usable]
  if train_examples is None:
    return (images if usable.all() else images[usable]), labels
  keep = _choose_subset(len(files), train_examples, seed)
  images, decoded = _decode_files(files[keep], shape)
  if not decoded.all():
    raise DataError(f'folder: {files[keep][~decoded][0]} changed while loading; run again.')
  return images, labels[keep]


def _try_decode(path: str, channels: int) -> np.ndarray | str:
  """One image decoded eagerly to [H, W, C] uint8, or why it cannot be, in one line."""
  try:
    if os.path.getsize(path) == 0:
      return 'empty file, 0 bytes'
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
  except OSError as err:
    return f'cannot read it: {err.strerror}'
  except tf.errors.OpError as err:
    # Keep TF's reason, drop its '{{function_node ...}}' and '[Op:DecodeImage]' wrapping.
    reason = err.message.split('}}')[-1].split('[Op:')[0]
    return 'cannot decode it as an image: ' + ' '.join(reason.split())
  return image.numpy()


def _first_test_image(paths: np.ndarray) -> tuple[str, tuple]:
  """The first test file that decodes, and its (H, W, C): the shape every image must have.

  A test file, never a training file, so that the shape does not depend on the private data;
  test files before it that do not decode are found again, and named, by the full check.
  """
  for path in paths:
    image = _try_decode(path, channels=0)
    if not isinstance(image, str):
      return path, image.shape
  raise DataError(f'folder: none of the {len(paths)} test images decodes (the first, {paths[0]}: '
                  f'{_try_decode(paths[0], channels=0)}); the test images fix the input shape.')


def _decode_files(paths: np.ndarray, shape: tuple,
                  keep: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
  """Decodes every path once, in parallel, to find which are usable images of `shape`.

  Args:
      paths: [K] image file paths.
      shape: the (H, W, C) every image must have; C also sets the decoded channel count.
      keep: whether to return the pixels; False only checks (memory for one batch).

  Returns:
      (images, usable): [K, H, W, C] uint8 images in the order of `paths` (zeros where not
      usable; None unless keep) and the [K] bool mask of the files that decoded to `shape`.
  """

  def decode(index, path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=shape[-1],
                               expand_animations=False)
    return index, tf.ensure_shape(image, shape)

  images = np.zeros((len(paths), *shape), np.uint8) if keep else None
  usable = np.zeros(len(paths), bool)
  pipeline = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
              .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
              .ignore_errors()  # A dropped file is unusable; _why_unusable says why.
              .batch(1024))
  for index, batch in pipeline.as_numpy_iterator():
    usable[index] = True
    if keep:
      images[index] = batch
  return images, usable


def _why_unusable(path: str, shape: tuple, first: str) -> str:
  """Why the file at `path` is not an image of `shape`, in a few words."""
  image = _try_decode(path, channels=shape[-1])
  if isinstance(image, str):
    return image
  if image.shape != shape:
    return f'shape {image.shape} where the first test image {first} has {shape}'
  return 'failed to decode in the tf.data pipeline'  # Decodes alone: say so, not guess.


def _check_usable(skipped: SkippedImages, total: int, shape: tuple, first: str,
                  skip: bool) -> None:
  """Raises one DataError naming the unusable files, unless there are none or `skip`; with
  `skip`, prints their number in one line instead."""
  bad = skipped.train + skipped.test
  if not bad:
    return
  named = '; '.join(f'{path} ({_why_unusable(path, shape, first)})'
                    for path in bad[:NAMED_BAD_FILES])
  more = f'; and {len(bad) - NAMED_BAD_FILES} more' if len(bad) > NAMED_BAD_FILES else ''
  counts = (f'{len(bad)} of the {total} image files under {skipped.root} '
            f'({len(skipped.train)} train, {len(skipped.test)} test)')
  if not skip:
    raise DataError(f'folder: {counts} cannot be used: {named}{more}. Fix or remove them, or pass '
                    '--skip_bad_images to train without them (their number is then released in '
                    'metrics.json, not covered by the privacy guarantee).')
  print(f'folder: skipped {counts}: {named}{more}.')


def _tfds_loader(tfds_name: str, description: str, class_names: tuple, mean: tuple, std: tuple,
                 augment: str) -> Callable[..., Dataset]:
  """A loader of a tensorflow_datasets image classification set, with its public constants."""

  def load(data_dir: str | None = None, train_examples: int | None = None, seed: int = 0,
           download: bool = True) -> Dataset:
    # Imported here: tensorflow_datasets is slow to import and only these loaders need it.
    import tensorflow_datasets as tfds

    try:
      # Not batch_size=-1: that batches by the split size recorded in the dataset's
      # metadata, which tfds.testing.mock_data leaves at 0 (a batch of sys.maxsize).
      train, test = tfds.load(tfds_name, data_dir=data_dir, split=['train', 'test'],
                              as_supervised=True, download=download)
      (train_x, train_y), (test_x, test_y) = _to_numpy(train), _to_numpy(test)
    except Exception as err:  # tfds and its download stack raise many unrelated types.
      reason = str(err).rstrip('.')
      raise DataError(
          f'{tfds_name}: could not load or download it with tensorflow_datasets '
          f'(data_dir={data_dir!r}): {type(err).__name__}: {reason}. Without internet, use '
          'image folders: --dataset=folder --data_dir=<a directory holding '
          'train/<class>/*.png and test/<class>/*.png>.') from err
    dataset = Dataset(name=tfds_name, train_images=train_x, train_labels=train_y,
                      test_images=test_x, test_labels=test_y, class_names=class_names,
                      mean=mean, std=std, augment=augment)
    return _maybe_subset(dataset, train_examples, seed)

  load.__doc__ = f"""{description} through tensorflow_datasets.

        Args:
            data_dir: the tensorflow_datasets data directory (None: ~/tensorflow_datasets).
            train_examples: if given, keep `subset(dataset, train_examples, seed)` of the train
                split.
            seed: picks that subset.
            download: whether tensorflow_datasets may download and prepare missing data.

        Raises:
            DataError: the data is not prepared and could not be downloaded (e.g. no internet).
        """
  return load


load_cifar10 = register('cifar10')(_tfds_loader(
    'cifar10', 'CIFAR-10 (50,000 train / 10,000 test 32x32x3 images)', CIFAR10_CLASSES,
    CIFAR10_MEAN, CIFAR10_STD, 'flip_crop'))
load_mnist = register('mnist')(_tfds_loader(
    'mnist', 'MNIST (60,000 train / 10,000 test 28x28x1 digits)',
    tuple(str(d) for d in range(10)), MNIST_MEAN, MNIST_STD, 'none'))
load_fashion_mnist = register('fashion_mnist')(_tfds_loader(
    'fashion_mnist', 'Fashion-MNIST (60,000 train / 10,000 test 28x28x1 images)',
    FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, 'none'))


def _to_numpy(split: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
  """A supervised (image, label) split as [N, H, W, C] uint8 images and [N] int64 labels."""
  images, labels = [], []
  for image_batch, label_batch in split.batch(4096).as_numpy_iterator():
    images.append(image_batch)
    labels.append(label_batch)
  return np.concatenate(images), np.concatenate(labels).astype(np.int64)
