"""Classify image files with an exported model, through its serving signature.

  python -m tfdp.predict --model_dir=saved_models/quickstart image1.jpg image2.png

Each file's bytes go through `serving_default` exactly as a TF Serving client's would. A file that
cannot be read or decoded gets an error line naming it, the others are still classified, and the
exit status is 1 if any file failed.
"""

import sys
from typing import List, Tuple

from absl import app
from absl import flags
import tensorflow as tf

from tfdp.serving import saved_model

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "An export (a version dir or its base dir).")
_TOP = flags.DEFINE_integer("top", 1, "How many classes to print per image.")


def classify(serve, path: str, top: int) -> List[Tuple[str, float]]:
  """The `top` (class name, probability) pairs for one file; raises OSError/ValueError on failure."""
  with open(path, "rb") as f:
    encoded = f.read()
  try:
    outputs = serve(image_bytes=tf.constant([encoded]))
  except tf.errors.InvalidArgumentError as error:
    raise ValueError(f"not a decodable image ({error.message.splitlines()[0]})") from None
  probabilities = outputs["probabilities"][0].numpy()
  names = [n.decode() for n in outputs["class_names"][0].numpy()]
  order = probabilities.argsort()[::-1][:top]
  return [(names[i], float(probabilities[i])) for i in order]


def main(argv):
  paths = argv[1:]
  if not paths:
    sys.exit("tfdp.predict: error: give one or more image files after the flags")
  try:
    serve = tf.saved_model.load(saved_model.latest_version(_MODEL_DIR.value)).signatures[
        "serving_default"]
  except (ValueError, OSError) as error:
    sys.exit(f"tfdp.predict: error: {error}")
  failed = 0
  for path in paths:
    try:
      ranked = classify(serve, path, _TOP.value)
    except (OSError, ValueError) as error:
      failed += 1
      print(f"{path}: error: {error}", file=sys.stderr)
      continue
    print(f"{path}: " + ", ".join(f"{name} ({p:.4f})" for name, p in ranked))
  if failed:
    sys.exit(1)


def run() -> None:
  """The command `python -m tfdp.predict`."""
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
