"""Augmentation of cached features: image views computed once, map translations drawn per step.

A model with a frozen front (ScatterNet, tfdp.models.scatter) trains its head on features computed
once per dataset (tfdp.data.feature_cache), so an image augmentation drawn at each step cannot
reach the head. These policies augment in the cache instead, at no cost per step beyond the
head's own:

    views:   each training image's features are cached for a fixed, public list of image
             transforms (VIEWS: the image itself, its horizontal flip), [N, V, h, w, c];
    draws:   at each step, each of an example's --augmult copies takes one of its views at random
             and translates its maps by a random offset of up to `max_shift` positions in each
             direction (symmetric padding, then a crop back to h x w). One position of a
             ScatterNet map (J = 2) is 4 pixels of the image: max_shift = 1 is the standard
             4-pixel CIFAR translation.

Privacy: every copy of example i is a function of example i's features and of public randomness
(the public --seed drives it, like image augmentation), and the copies' gradients are averaged
before clipping (tfdp.dp.groups.example_means), so example i changes the clipped sum by at most C
at each step, as without augmentation; the accountant applies unchanged. The cache holds
information about the private images and stays beside them (tfdp.data.feature_cache). Statistics
of the features that are released (normalization="statistics") are computed on the identity view
alone, so their sensitivity is the same as without augmentation.

    policy = POLICIES["scatter_flip_shift"]
    views = policy.view_images(uint8_images)      # [V] arrays [N, H, W, C], uint8
    preprocess = policy.make_train_preprocess()   # [R, V, h, w, c] -> [R, h, w, c] float32
"""

import dataclasses
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from tfdp import names

IDENTITY_VIEW = 0  # The index of the untransformed image's features in every policy's views.

# name -> uint8 [N, H, W, C] -> uint8 [N, H, W, C]: public, data-independent image transforms.
VIEWS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda images: images,
    "flip": lambda images: np.ascontiguousarray(images[:, :, ::-1]),  # Left-right.
}


@dataclasses.dataclass(frozen=True)
class Policy:
  """Which image views are cached and how far each copy's maps may be translated.

  Attributes:
    views: names in VIEWS, the identity first (IDENTITY_VIEW).
    max_shift: the largest translation, in map positions, in each direction (0: none).
  """
  views: Tuple[str, ...]
  max_shift: int

  def __post_init__(self):
    if not self.views or self.views[IDENTITY_VIEW] != "identity":
      raise ValueError(f"a feature augmentation's first view is the identity, got {self.views}")
    for view in self.views:
      names.check("feature view", view, VIEWS)
    if self.max_shift < 0:
      raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")

  def view_images(self, images: np.ndarray) -> List[np.ndarray]:
    """The images of each view, in `views` order: [V] arrays like `images`."""
    return [VIEWS[view](images) for view in self.views]

  def make_train_preprocess(self) -> Callable[[tf.Tensor], tf.Tensor]:
    """[R, V, h, w, c] cached features of R rows -> [R, h, w, c] float32, one random view and
    translation per row (the public seed's randomness)."""

    def preprocess(features: tf.Tensor) -> tf.Tensor:
      features = tf.cast(features, tf.float32)
      chosen = tf.random.uniform([tf.shape(features)[0]], 0, len(self.views), dtype=tf.int32)
      maps = tf.gather(features, chosen, axis=1, batch_dims=1)
      return random_translation(maps, self.max_shift) if self.max_shift else maps

    return preprocess


def random_translation(maps: tf.Tensor, max_shift: int) -> tf.Tensor:
  """Each row translated by its own offset in [-max_shift, max_shift] per axis.

  Args:
    maps: [R, h, w, c] float32, with h, w >= max_shift (symmetric padding needs it).
    max_shift: positions.

  Returns:
    [R, h, w, c]: row r is maps[r] padded symmetrically by max_shift and cropped at its offset.
  """
  shape = tf.shape(maps)
  rows, height, width = shape[0], shape[1], shape[2]
  padded = tf.pad(maps, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]],
                  mode="SYMMETRIC")
  top = tf.random.uniform([rows], 0, 2 * max_shift + 1, dtype=tf.int32)
  left = tf.random.uniform([rows], 0, 2 * max_shift + 1, dtype=tf.int32)
  cropped = tf.gather(padded, top[:, None] + tf.range(height)[None, :], axis=1, batch_dims=1)
  return tf.gather(cropped, left[:, None] + tf.range(width)[None, :], axis=2, batch_dims=1)


def identity_features(features: np.ndarray, policy) -> np.ndarray:
  """[N, ...] features of the untransformed images: `features` itself without a policy, else
  its identity view."""
  return features if policy is None else features[:, IDENTITY_VIEW]


# name -> policy, for --augment with a model whose head trains on cached features.
POLICIES: Dict[str, Policy] = {
    "scatter_flip": Policy(views=("identity", "flip"), max_shift=0),
    "scatter_flip_shift": Policy(views=("identity", "flip"), max_shift=1),
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of POLICIES."""
  names.check("feature augmentation", name, POLICIES)
