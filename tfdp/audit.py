"""`python -m tfdp.audit --run_dir=RUN`: the one-run privacy audit of a finished tfdp.train run.

The run must have been trained with --audit_canaries=M (its canaries and their inclusion are in
RUN/audit/). The audit scores each canary by its loss under the run's released weights (the EMA's
when it used one), and reports an empirical lower bound on ε at --confidence beside the proven ε,
with loss-threshold membership inference (tfdp.privacy.audit). It writes RUN/audit/report.json
and exits with status 3 when the bound exceeds the proven ε: a probable bug.

    python -m tfdp.train --flagfile=flags/quickstart.flags --audit_canaries=200
    python -m tfdp.audit --run_dir=runs/quickstart --confidence=0.99
"""

import json
import os
import sys

from absl import app
from absl import flags

from tfdp import atomic
from tfdp.dp import losses
from tfdp.serving import release
from tfdp.training import canary_audit
from tfdp.training import export_run

_RUN_DIR = flags.DEFINE_string("run_dir", None, "A tfdp.train --output_dir trained with canaries.")
_CONFIDENCE = flags.DEFINE_float("confidence", 0.95, "Confidence of the lower bound on ε.")
REPORT = os.path.join("audit", "report.json")


def audit(run_dir: str, confidence: float) -> dict:
  """The audit of `run_dir`'s last checkpoint, also written to run_dir/audit/report.json."""
  run = export_run.restore_run(run_dir)
  metrics_path = os.path.join(run_dir, "metrics.json")
  if not os.path.exists(metrics_path):
    raise ValueError(f"{run_dir} has not finished (no metrics.json): audit the released model")
  with open(metrics_path) as f:
    metrics = json.load(f)
  loss_fn = losses.get(run.spec["config"]["model"]["loss"])
  with release.released_weights(run.weight_average):
    result = canary_audit.audit_run(run_dir, run.model, run.preprocess, loss_fn, metrics,
                                    confidence)
  atomic.write_text(os.path.join(run_dir, REPORT), json.dumps(result, indent=2, sort_keys=True))
  return result


def main(argv):
  del argv
  if not _RUN_DIR.value:
    sys.exit("tfdp.audit: error: --run_dir is required")
  try:
    result = audit(_RUN_DIR.value, _CONFIDENCE.value)
  except (ValueError, OSError) as error:
    sys.exit(f"tfdp.audit: error: {error}")
  print(f"Wrote {os.path.join(_RUN_DIR.value, REPORT)}")
  if result["audit"]["above_proven"]:
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
