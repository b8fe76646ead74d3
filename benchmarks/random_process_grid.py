"""Writes a PNG grid of random-process images, one row per generator (docs/recipes.md's figure).

  python benchmarks/random_process_grid.py --output=priors/random_process_samples.png
"""

import tfdp  # noqa: F401  pylint: disable=unused-import  (before TensorFlow: its oneDNN default)

import numpy as np
from absl import app
from absl import flags
from PIL import Image

from tfdp.data import random_processes

_OUTPUT = flags.DEFINE_string("output", "priors/random_process_samples.png", "PNG to write.")
_PER_ROW = flags.DEFINE_integer("per_row", 10, "Images per generator.")
_SEED = flags.DEFINE_integer("seed", 0, "Public seed of the images.")
_ZOOM = flags.DEFINE_integer("zoom", 3, "Pixels per image pixel in the PNG.")


def main(argv):
  del argv
  rows = []
  for name in sorted(random_processes.GENERATORS):
    images = random_processes.generate(name, _PER_ROW.value, 32, seed=_SEED.value).numpy()
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    rows.append(np.concatenate(list(padded), axis=1))
  grid = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
  image = Image.fromarray(grid)
  image = image.resize((grid.shape[1] * _ZOOM.value, grid.shape[0] * _ZOOM.value), Image.NEAREST)
  image.save(_OUTPUT.value)
  print(f"Wrote {_OUTPUT.value}: rows {sorted(random_processes.GENERATORS)}")


if __name__ == "__main__":
  app.run(main)
