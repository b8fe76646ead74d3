"""The local-DP table of docs/recipes.md: PneumoniaMNIST without privacy, with Laplace-perturbed
images (β = 1, 2, 4; tfdp.data.local_dp) and with DP-SGD (ε = 1, 3, 8), each row with its honest ε.

    python benchmarks/pneumonia_ldp_table.py --out=/tmp/ldp_table [--seeds=1]

Each row is `python -m tfdp.train --flagfile=...` of its flagfile. Train accuracy is the released
model's on the raw (unperturbed) training images: computed from the private data without noise, a
research figure, not covered by any guarantee. Test figures are on the test split.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = [("non-private", "pneumoniamnist_convnet_sgd_nonprivate"),
        *[(f"LDP β = {b}", f"pneumoniamnist_convnet_sgd_nonprivate_ldp_beta{b}") for b in (1, 2, 4)],
        *[(f"DP-SGD ε = {e}", f"pneumoniamnist_convnet_dp_sgd_eps{e}") for e in (1, 3, 8)]]


def train(flagfile: str, output_dir: str, seed: int) -> dict:
  command = [sys.executable, "-m", "tfdp.train", f"--flagfile=flags/{flagfile}.flags",
             f"--output_dir={output_dir}", f"--seed={seed}", "--export=false"]
  subprocess.run(command, cwd=ROOT, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                 stdout=subprocess.DEVNULL)
  with open(os.path.join(output_dir, "metrics.json")) as f:
    return json.load(f)


def train_metrics(output_dir: str, dataset) -> dict:
  """The released model's figures on the raw training images (not private: a research figure)."""
  from tfdp.serving import release  # pylint: disable=import-outside-toplevel
  from tfdp.training import export_run  # pylint: disable=import-outside-toplevel
  from tfdp.training import steps  # pylint: disable=import-outside-toplevel
  run = export_run.restore_run(output_dir)
  evaluate = steps.make_evaluate(run.model, run.preprocess)
  with release.released_weights(run.weight_average):
    return evaluate(dataset.train_images, dataset.train_labels)


def guarantee(metrics: dict) -> str:
  if metrics.get("local_dp"):
    report = metrics["local_dp"]
    return (f"ε = {report['epsilon_per_image']:,.0f}, δ = {report['delta_per_image']:g} "
            "per image (LDP); "
            f"{report['epsilon_per_pixel']:g} per pixel")
  if metrics.get("epsilon") is None:
    return "none (ε = ∞)"
  return f"ε = {metrics['epsilon']:.2f} (RDP, δ = {metrics['delta']:g}), Poisson sampling"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="Directory for the runs.")
  parser.add_argument("--seeds", type=int, default=1)
  args = parser.parse_args()
  from tfdp import data  # pylint: disable=import-outside-toplevel
  dataset = data.load_dataset("npz", os.path.join(ROOT, "..", "shared", "data",
                                                  "pneumoniamnist.npz"))
  print("| row | guarantee | train acc | test acc | test balanced acc | test AUC | seed |")
  print("|---|---|---|---|---|---|---|")
  for name, flagfile in ROWS:
    for seed in range(args.seeds):
      output_dir = os.path.join(args.out, f"{flagfile}_seed{seed}")
      metrics = train(flagfile, output_dir, seed)
      on_train = train_metrics(output_dir, dataset)
      print(f"| {name} | {guarantee(metrics)} | {on_train['test_accuracy']:.3f} | "
            f"{metrics['test_accuracy']:.3f} | {metrics['test_balanced_accuracy']:.3f} | "
            f"{metrics['test_auc']:.3f} | {seed} |", flush=True)


if __name__ == "__main__":
  main()
