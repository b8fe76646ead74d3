"""Held-out metrics of predicted class probabilities, the same for training and for an export.

They sit in serving, below training, so that `python -m tfdp.evaluate` on an export and the
training loop's evaluation (tfdp.training.steps) compute the figures a model card reports one way.
"""

from typing import Dict, Optional

import numpy as np


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray
                           ) -> Dict[str, Optional[float]]:
  """Accuracy, balanced accuracy and ROC AUC of predicted class probabilities.

  Args:
    labels: integer class labels [M].
    probabilities: predicted class probabilities [M, K] float.

  Returns:
    test_accuracy, test_balanced_accuracy (mean per-class recall) and test_auc (ROC AUC of class 1
    for two classes, macro one-vs-rest otherwise; None when a class is absent from the labels).
  """
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  predicted = np.argmax(probabilities, axis=1)
  classes = probabilities.shape[1]
  auc = None
  if len(np.unique(labels)) == classes:
    auc = float(metrics.roc_auc_score(labels, probabilities[:, 1]) if classes == 2 else
                metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro",
                                      labels=np.arange(classes)))
  return {"test_accuracy": float(np.mean(predicted == labels)),
          "test_balanced_accuracy": float(metrics.balanced_accuracy_score(labels, predicted)),
          "test_auc": auc}
