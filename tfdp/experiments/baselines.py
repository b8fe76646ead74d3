"""Classical classifiers under the same ε as the networks: DP logistic regression and DP Gaussian
naive Bayes (IBM's diffprivlib), a DP linear SVM (tfdp's own linear model with the hinge loss,
trained by DP-SGD), and k-nearest neighbours with no DP at all, labelled so.

    python -m tfdp.baselines --dataset=npz --data_dir=../shared/data/pneumoniamnist.npz \
        --features=pixels,scatter --epsilons=0.5,1,2,3,5,8,inf --seeds=2 --out=baselines/pneumonia

What each row's ε means:
- dp_logistic_regression: diffprivlib's objective perturbation (Chaudhuri et al. 2011), pure ε-DP
  (δ = 0) under add/remove-one, for examples of L2 norm at most 1 (data_norm = 1); every example is
  scaled to unit norm first, a per-example map that needs no data and costs nothing.
- dp_gaussian_nb: diffprivlib's Laplace-noised class counts, means and variances, pure ε-DP, for
  features within data-independent bounds: [0, 1] for pixels, [-1, 1] for unit-norm features.
- dp_linear_svm: tfdp.train's DP-SGD (Poisson sampling, RDP accountant, δ = --delta) on the linear
  model (pixels) or ScatterNet + linear (scatter) with the hinge loss.
- knn: scikit-learn's k-NN on the same unit-norm features: it stores the training set itself, so
  it has no DP guarantee and appears only at ε = ∞.
ε = inf rows are the same models without noise (scikit-learn's, and tfdp.train with plain SGD).
The ε in each row is what diffprivlib's BudgetAccountant or tfdp's accountant reports as spent.
diffprivlib draws its noise from `secrets.SystemRandom` when no random_state is given, as here.

Outputs in --out: results.csv (one row per model, features, ε and seed), summary.md (median test
accuracy over seeds), accuracy_vs_epsilon.png.
"""

import csv
import dataclasses
import io
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from tfdp import atomic

DIFFPRIVLIB_MODELS = ("dp_logistic_regression", "dp_gaussian_nb")
FEATURES = ("pixels", "scatter")


@dataclasses.dataclass(frozen=True)
class Split:
  """Features [N, D] float64 and labels [N] int64 of one split."""
  x: np.ndarray
  y: np.ndarray


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the diffprivlib and k-NN models train on, and the public facts about it."""
  train: Split
  test: Split
  num_classes: int
  bounds: tuple  # Data-independent (low, high) of every coordinate, for naive Bayes.
  features: str


@dataclasses.dataclass(frozen=True)
class SvmSettings:
  """DP-SGD settings of the linear SVM (tfdp.train); public choices, not tuned on the data."""
  dataset: str
  data_dir: Optional[str]
  train_examples: Optional[int]
  delta: float = 1e-5
  batch_size: int = 256
  epochs: int = 10
  learning_rate: float = 0.5
  l2_norm_clip: float = 1.0
  output_dir: str = "baselines/runs"


def unit_norm(x: np.ndarray) -> np.ndarray:
  """Each row scaled to L2 norm 1 (rows of zeros stay zero): per example, no data needed."""
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


def _scores(model, test: Split) -> Dict[str, float]:
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  predicted = model.predict(test.x)
  return {"test_accuracy": float(np.mean(predicted == test.y)),
          "test_balanced_accuracy": float(metrics.balanced_accuracy_score(test.y, predicted))}


def _spent(accountant) -> Dict[str, float]:
  epsilon, delta = accountant.total()
  return {"epsilon": float(epsilon), "delta": float(delta)}


def logistic_regression(inputs: Inputs, epsilon: float, seed: int) -> dict:
  del seed  # The noise is secret (SystemRandom); the seed drives nothing here.
  from diffprivlib import accountant as dp_accountant  # pylint: disable=import-outside-toplevel
  from diffprivlib import models as dp_models  # pylint: disable=import-outside-toplevel
  from sklearn import linear_model  # pylint: disable=import-outside-toplevel
  if np.isinf(epsilon):
    model = linear_model.LogisticRegression(max_iter=1000).fit(inputs.train.x, inputs.train.y)
    return {**_scores(model, inputs.test), "epsilon": None, "delta": None, "guarantee": "none"}
  spent = dp_accountant.BudgetAccountant()
  model = dp_models.LogisticRegression(epsilon=epsilon, data_norm=1.0, max_iter=1000,
                                       accountant=spent).fit(inputs.train.x, inputs.train.y)
  return {**_scores(model, inputs.test), **_spent(spent),
          "guarantee": "pure ε-DP (diffprivlib objective perturbation)"}


def gaussian_nb(inputs: Inputs, epsilon: float, seed: int) -> dict:
  del seed
  from diffprivlib import accountant as dp_accountant  # pylint: disable=import-outside-toplevel
  from diffprivlib import models as dp_models  # pylint: disable=import-outside-toplevel
  from sklearn import naive_bayes  # pylint: disable=import-outside-toplevel
  if np.isinf(epsilon):
    model = naive_bayes.GaussianNB().fit(inputs.train.x, inputs.train.y)
    return {**_scores(model, inputs.test), "epsilon": None, "delta": None, "guarantee": "none"}
  spent = dp_accountant.BudgetAccountant()
  dimension = inputs.train.x.shape[1]
  low, high = inputs.bounds
  model = dp_models.GaussianNB(epsilon=epsilon, accountant=spent,
                               bounds=(np.full(dimension, low), np.full(dimension, high)))
  model.fit(inputs.train.x, inputs.train.y)
  return {**_scores(model, inputs.test), **_spent(spent),
          "guarantee": "pure ε-DP (diffprivlib Laplace counts, means, variances)"}


def knn(inputs: Inputs, epsilon: float, seed: int) -> Optional[dict]:
  """k-NN has no private version here: it runs at ε = ∞ only."""
  del seed
  if not np.isinf(epsilon):
    return None
  from sklearn import neighbors  # pylint: disable=import-outside-toplevel
  model = neighbors.KNeighborsClassifier(n_neighbors=5).fit(inputs.train.x, inputs.train.y)
  return {**_scores(model, inputs.test), "epsilon": None, "delta": None,
          "guarantee": "NO DP GUARANTEE: k-NN releases predictions from stored training examples"}


def linear_svm(settings: SvmSettings, features: str, epsilon: float, seed: int) -> dict:
  """tfdp.train's linear model (or ScatterNet + linear) with the hinge loss, by DP-SGD."""
  from tfdp import config  # pylint: disable=import-outside-toplevel
  from tfdp.training import loop  # pylint: disable=import-outside-toplevel
  private = not np.isinf(epsilon)
  name = f"svm_{features}_eps{epsilon:g}_seed{seed}"
  run = config.Config(
      data=config.DataConfig(dataset=settings.dataset, data_dir=settings.data_dir,
                             train_examples=settings.train_examples,
                             augment="none"),
      model=config.ModelConfig(name="linear" if features == "pixels" else "scatter_linear",
                               loss="hinge"),
      privacy=config.PrivacyConfig(epsilon=epsilon if private else None, delta=settings.delta,
                                   l2_norm_clip=settings.l2_norm_clip),
      optimizer=config.OptimizerConfig(name="dp_sgd" if private else "sgd",
                                       learning_rate=settings.learning_rate, momentum=0.9),
      run=config.RunConfig(batch_size=settings.batch_size, epochs=settings.epochs, seed=seed,
                           export=False, output_dir=os.path.join(settings.output_dir, name)))
  metrics = loop.train_and_evaluate(run)
  return {"test_accuracy": metrics["test_accuracy"],
          "test_balanced_accuracy": metrics["test_balanced_accuracy"],
          "epsilon": metrics["epsilon"], "delta": metrics["delta"],
          "guarantee": ("(ε, δ)-DP, DP-SGD with Poisson sampling (RDP accountant)" if private
                        else "none")}


MODELS: Dict[str, Callable[[Inputs, float, int], Optional[dict]]] = {
    "dp_logistic_regression": logistic_regression,
    "dp_gaussian_nb": gaussian_nb,
    "knn": knn,
}
ALL_MODELS = (*MODELS, "dp_linear_svm")


def check_epsilons(epsilons: List[float]) -> None:
  bad = [e for e in epsilons if not e > 0]
  if bad or not epsilons:
    raise ValueError(f"every ε must be > 0 (inf for no privacy); got {epsilons}")


def pixel_inputs(dataset) -> Inputs:
  """Raw pixels in [0, 1], flattened; unit-norm rows for every model but naive Bayes."""
  flat = lambda images: images.reshape(len(images), -1).astype(np.float64) / 255.0
  return Inputs(Split(flat(dataset.train_images), dataset.train_labels),
                Split(flat(dataset.test_images), dataset.test_labels),
                dataset.num_classes, (0.0, 1.0), "pixels")


def scatter_inputs(dataset) -> Inputs:
  """ScatterNet (J = 2, L = 8) features of the standardized images, flattened, unit-norm rows."""
  from tfdp import data  # pylint: disable=import-outside-toplevel
  from tfdp import models  # pylint: disable=import-outside-toplevel
  from tfdp.data import feature_cache  # pylint: disable=import-outside-toplevel
  from tfdp.models import scatter  # pylint: disable=import-outside-toplevel
  front, _ = scatter.split(models.build_model("scatter_linear", dataset.num_classes,
                                              dataset.input_shape))
  preprocess = data.make_preprocess(dataset.mean, dataset.std, "none", training=False)
  standardization = [list(dataset.mean), list(dataset.std)]
  flat = lambda images: unit_norm(feature_cache.features(
      images, front, preprocess, standardization).reshape(len(images), -1).astype(np.float64))
  return Inputs(Split(flat(dataset.train_images), dataset.train_labels),
                Split(flat(dataset.test_images), dataset.test_labels),
                dataset.num_classes, (-1.0, 1.0), "scatter")


def for_model(inputs: Inputs, model: str) -> Inputs:
  """Naive Bayes takes pixels as they are in [0, 1]; the others take unit-norm rows."""
  if model == "dp_gaussian_nb" or inputs.features != "pixels":
    return inputs
  return dataclasses.replace(inputs, train=Split(unit_norm(inputs.train.x), inputs.train.y),
                             test=Split(unit_norm(inputs.test.x), inputs.test.y))


def summary_markdown(rows: List[dict], epsilons: List[float]) -> str:
  """Median test accuracy over seeds, one line per (model, features), one column per ε."""
  header = ["model", "features"] + [f"ε = {e:g}" if np.isfinite(e) else "ε = ∞"
                                    for e in epsilons] + ["guarantee"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  keys = list(dict.fromkeys((r["model"], r["features"]) for r in rows))
  for model, features in keys:
    own = [r for r in rows if (r["model"], r["features"]) == (model, features)]
    cells = []
    for epsilon in epsilons:
      members = [r for r in own if r["epsilon_target"] == epsilon]
      cells.append(f"{statistics.median(r['test_accuracy'] for r in members):.3f}"
                   if members else "-")
    # The private rows' guarantee when there are any; else what the ε = ∞ rows say.
    guarantee = next((r["guarantee"] for r in own if r["epsilon"] is not None),
                     own[0]["guarantee"])
    lines.append("| " + " | ".join([model, features] + cells + [guarantee]) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: List[dict], path: str) -> str:
  """Median test accuracy against the ε target, one line per (model, features); ∞ at the right."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  finite = sorted({r["epsilon_target"] for r in rows if np.isfinite(r["epsilon_target"])})
  where = lambda e: e if np.isfinite(e) else (max(finite) * 2 if finite else 1.0)
  figure, axes = pyplot.subplots(figsize=(7, 4))
  for model, features in dict.fromkeys((r["model"], r["features"]) for r in rows):
    points = sorted({r["epsilon_target"] for r in rows
                     if (r["model"], r["features"]) == (model, features)}, key=where)
    medians = [statistics.median(r["test_accuracy"] for r in rows if (
        r["model"], r["features"], r["epsilon_target"]) == (model, features, e)) for e in points]
    axes.plot([where(e) for e in points], medians, "o-", label=f"{model} ({features})")
  axes.set_xscale("log")
  axes.set_xlabel("ε target (rightmost: ∞, no privacy)")
  axes.set_ylabel("test accuracy (median over seeds)")
  axes.legend(fontsize=7)
  tmp = f"{path}.tmp.png"
  figure.savefig(tmp, dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  os.replace(tmp, path)
  return path


def csv_text(rows: List[dict]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def write_outputs(out: str, rows: List[dict], epsilons: List[float]) -> None:
  os.makedirs(out, exist_ok=True)
  atomic.write_text(os.path.join(out, "results.csv"), csv_text(rows))
  atomic.write_text(os.path.join(out, "summary.md"), summary_markdown(rows, epsilons))
  plot(rows, os.path.join(out, "accuracy_vs_epsilon.png"))


def run_all(dataset, models: List[str], features: List[str], epsilons: List[float], seeds: int,
            svm: SvmSettings, log: Callable = print) -> List[dict]:
  """Every (features, model, ε, seed) row, in that order."""
  rows, started = [], time.monotonic()
  for feature in features:
    inputs = pixel_inputs(dataset) if feature == "pixels" else scatter_inputs(dataset)
    for model in models:
      for epsilon in epsilons:
        for seed in range(seeds):
          result = (linear_svm(svm, feature, epsilon, seed) if model == "dp_linear_svm"
                    else MODELS[model](for_model(inputs, model), epsilon, seed))
          if result is None:
            continue
          rows.append({"dataset": dataset.name, "model": model, "features": feature,
                       "epsilon_target": epsilon, "seed": seed, **result})
          log(f"{model} ({feature}) ε target {epsilon:g}, seed {seed}: test accuracy "
              f"{result['test_accuracy']:.4f}, ε spent {result['epsilon']}; "
              f"{(time.monotonic() - started) / 60:.1f} min")
  return rows


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  from tfdp import data  # pylint: disable=import-outside-toplevel
  values = flags.FLAGS
  try:
    epsilons = [float(e) for e in values.epsilons]
    check_epsilons(epsilons)
    unknown = sorted(set(values.models) - set(ALL_MODELS)) + sorted(
        set(values.features) - set(FEATURES))
    if unknown:
      raise ValueError(f"unknown model or features {unknown}; models: {', '.join(ALL_MODELS)}; "
                       f"features: {', '.join(FEATURES)}")
    dataset = data.load_dataset(values.dataset, values.data_dir,
                                train_examples=values.train_examples, seed=0)
    svm = SvmSettings(values.dataset, values.data_dir, values.train_examples, values.delta,
                      values.svm_batch_size, values.svm_epochs, values.svm_learning_rate,
                      output_dir=os.path.join(values.out, "runs"))
    rows = run_all(dataset, values.models, values.features, epsilons, values.seeds, svm)
  except (ValueError, OSError, data.DataError) as error:
    sys.exit(f"tfdp.baselines: error: {error}")
  write_outputs(values.out, rows, epsilons)
  print(summary_markdown(rows, epsilons))
  print(f"Wrote {values.out}/results.csv, summary.md, accuracy_vs_epsilon.png")


def run_command() -> None:
  """python -m tfdp.baselines: flags defined here only, so importing this module defines none."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from tfdp import data  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("dataset", "digits", sorted(data.DATASETS), "Dataset name.")
  flags.DEFINE_string("data_dir", None, "Dataset directory or file.")
  flags.DEFINE_integer("train_examples", None, "Seeded subset of the training split.")
  flags.DEFINE_list("models", list(ALL_MODELS), f"Any of {', '.join(ALL_MODELS)}.")
  flags.DEFINE_list("features", ["pixels"], "pixels and/or scatter (ScatterNet J = 2, L = 8).")
  flags.DEFINE_list("epsilons", ["0.5", "1", "2", "3", "5", "8", "inf"],
                    "ε targets; inf: the same model without noise.")
  flags.DEFINE_float("delta", 1e-5, "δ of the DP-SGD linear SVM (the others are pure ε-DP).")
  flags.DEFINE_integer("seeds", 1, "Runs per (model, features, ε).")
  flags.DEFINE_integer("svm_batch_size", 256, "Expected batch of the SVM's DP-SGD.")
  flags.DEFINE_integer("svm_epochs", 10, "Epochs of the SVM's DP-SGD.")
  flags.DEFINE_float("svm_learning_rate", 0.5, "Learning rate of the SVM's DP-SGD.")
  flags.DEFINE_string("out", "baselines/default", "Where results.csv, summary.md and the plot go.")
  app.run(main)


if __name__ == "__main__":
  run_command()
