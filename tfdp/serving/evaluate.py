"""Evaluate an exported model on a dataset's test split: accuracy, loss, per-class accuracy, and a
confusion matrix, through the export's `predict_pixels` signature.

  python -m tfdp.evaluate --model_dir=saved_models/quickstart --dataset=digits
  python -m tfdp.evaluate --model_dir=saved_models/cifar --dataset=folder --data_dir=/tmp/cifar10

Writes evaluation.json and confusion_matrix.png to --output_dir.
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfdp import atomic
from tfdp import data
from tfdp.serving import metrics
from tfdp.serving import saved_model

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "An export (a version dir or its base dir).")
_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(data.DATASETS), "Dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory or file.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "evaluation", "Where the report and plot go.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Images per call.")


def predict(predict_pixels, images: np.ndarray, batch_size: int):
  """(probabilities [M, K], the export's class names) through the `predict_pixels` signature."""
  outputs = [predict_pixels(pixels=tf.constant(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
  names = [n.decode() for n in outputs[0]["class_names"][0].numpy()]
  return np.concatenate([o["probabilities"].numpy() for o in outputs]), names


def report(labels: np.ndarray, probabilities: np.ndarray, class_names) -> dict:
  """Accuracy, cross-entropy loss, balanced accuracy, AUC, per-class accuracy, confusion matrix."""
  classes = len(class_names)
  predicted = probabilities.argmax(axis=1)
  confusion = np.zeros((classes, classes), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class = {name: (float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None)
               for k, name in enumerate(class_names)}
  loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1))))
  return {**metrics.classification_metrics(labels, probabilities), "test_loss": loss,
          "per_class_accuracy": per_class, "confusion_matrix": confusion.tolist(),
          "examples": int(len(labels))}


def plot_confusion(confusion, class_names, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  size = max(4, len(class_names) * 0.6)
  figure, axes = pyplot.subplots(figsize=(size, size))
  axes.imshow(confusion, cmap="Blues")
  axes.set_xticks(range(len(class_names)), class_names, rotation=90)
  axes.set_yticks(range(len(class_names)), class_names)
  axes.set_xlabel("predicted")
  axes.set_ylabel("true")
  for (row, column), count in np.ndenumerate(np.asarray(confusion)):
    axes.text(column, row, str(count), ha="center", va="center", fontsize=7)
  tmp = f"{path}.tmp.png"
  figure.savefig(tmp, dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  os.replace(tmp, path)


def main(argv):
  del argv
  try:
    dataset = data.load_dataset(_DATASET.value, _DATA_DIR.value)
    loaded = tf.saved_model.load(saved_model.latest_version(_MODEL_DIR.value))
  except (ValueError, OSError) as error:
    sys.exit(f"tfdp.evaluate: error: {error}")
  try:
    probabilities, class_names = predict(loaded.signatures["predict_pixels"], dataset.test_images,
                                         _BATCH.value)
  except (ValueError, tf.errors.InvalidArgumentError) as error:
    sys.exit(f"tfdp.evaluate: error: the dataset's images {dataset.input_shape} do not fit the "
             f"model: {str(error).splitlines()[0]}")
  if len(class_names) != dataset.num_classes:
    sys.exit(f"tfdp.evaluate: error: the model has {len(class_names)} classes, the dataset "
             f"{dataset.num_classes}")
  result = report(dataset.test_labels, probabilities, class_names)
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  atomic.write_text(os.path.join(_OUTPUT_DIR.value, "evaluation.json"),
                    json.dumps(result, indent=2, sort_keys=True))
  plot_confusion(result["confusion_matrix"], class_names,
                 os.path.join(_OUTPUT_DIR.value, "confusion_matrix.png"))
  print(f"accuracy {result['test_accuracy']:.4f}, loss {result['test_loss']:.4f}, balanced "
        f"accuracy {result['test_balanced_accuracy']:.4f} on {result['examples']} test images")
  for name, accuracy in result["per_class_accuracy"].items():
    print(f"  {name}: {accuracy if accuracy is None else f'{accuracy:.4f}'}")


def run() -> None:
  """The command `python -m tfdp.evaluate`."""
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
