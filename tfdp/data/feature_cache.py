"""Features of a frozen, data-independent front end, computed once per dataset and kept on disk.

A ScatterNet's front (tfdp.models.scatter) has no weights and never changes, so the features of a
fixed set of images are fixed too: training computes them once and trains the head on them. Each
example's features depend on that example alone, so training on them changes nothing in the
privacy argument; the cache holds information about the private images, like the images
themselves, so it stays beside the data (TFDP_CACHE_DIR, default ~/.cache/tfdp/features) and no
run releases it.

The key is a sha256 of the images (bytes, shape, dtype), of the pixel standardization applied
before the front and of the front's configuration and weights (a frozen encoder's, for the linear
probe of tfdp.training.linear_probe); a changed dataset, transform or encoder misses the cache.
Files are written to a temporary name, then renamed.
"""

import hashlib
import json
import os
import tempfile
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

BATCH = 500  # images per call of the front while computing features.
# Training features: float16 halves memory (CIFAR-10 train: 1.6 GB); the head normalizes first.
# Test features are kept in float32 (EVALUATION_DTYPE), as the exported model computes them, so
# that the reported test metrics are the export's own: after a DP standardization that scales a
# low-variance map up, float16 rounding can flip a near-tie prediction.
STORED_DTYPE = np.float16
EVALUATION_DTYPE = np.float32


def cache_dir() -> str:
  return os.environ.get("TFDP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "tfdp", "features"))


def cache_key(images: np.ndarray, front: tf.keras.layers.Layer,
              standardization: Sequence) -> str:
  digest = hashlib.sha256()
  transform = {k: v for k, v in front.get_config().items() if k != "name"}  # Names vary.
  digest.update(json.dumps([list(images.shape), str(images.dtype), type(front).__name__,
                            transform, standardization], sort_keys=True, default=str).encode())
  digest.update(np.ascontiguousarray(images).data)
  for weight in front.weights:  # A trained encoder's features depend on its weights too.
    digest.update(np.ascontiguousarray(weight.numpy()).data)
  return digest.hexdigest()


def features(images: np.ndarray, front: tf.keras.layers.Layer, preprocess: Callable,
             standardization: Sequence, log: Callable = print,
             dtype=STORED_DTYPE) -> np.ndarray:
  """The front's features of `images`, from the cache when it has them.

  Args:
      images: uint8 [N, H, W, C].
      front: A frozen layer mapping preprocessed images to features.
      preprocess: uint8 batch -> the front's input (no augmentation).
      standardization: What `preprocess` does, for the key (e.g. [mean, std]).
      log: Where one line about a miss or hit goes.
      dtype: How they are stored (and returned): STORED_DTYPE or EVALUATION_DTYPE.

  Returns:
      dtype [N, ...features shape].
  """
  key = cache_key(images, front, standardization)
  suffix = "" if np.dtype(dtype) == np.dtype(STORED_DTYPE) else f"-{np.dtype(dtype).name}"
  path = os.path.join(cache_dir(), f"{front.name}-{key[:24]}{suffix}.npy")
  if os.path.exists(path):
    log(f"Features of {len(images)} images from the cache {path}")
    return np.load(path)
  log(f"Computing {front.name} features of {len(images)} images (once; cached in {path})")
  compute = tf.function(lambda batch: front(preprocess(batch)))
  parts = [compute(images[start:start + BATCH]).numpy().astype(dtype)
           for start in range(0, len(images), BATCH)]
  result = np.concatenate(parts)
  _save(path, result)
  return result


def _save(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handle, temp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npy.tmp")
  try:
    with os.fdopen(handle, "wb") as f:
      np.save(f, array)
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise
