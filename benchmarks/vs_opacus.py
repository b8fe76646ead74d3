"""tfdp against Opacus on the same ResNet-20 (GroupNorm), same machine, one invocation.

  python benchmarks/vs_opacus.py                      # batch 256, 2 threads (about 10 min, 2 cores)
  python benchmarks/vs_opacus.py --physical_batch_size=256   # tfdp in one chunk, as the peer
  python benchmarks/vs_opacus.py --batch_size=64 --opacus_python=../venv-opacus/bin/python

Runs `../shared/bench/opacus_resnet20.py` (PyTorch + Opacus, in a venv of its own: torch and opacus
are never tfdp dependencies; set-up in that script's header) and `python -m tfdp.bench` twice, with
the weight-standardized convolutions tfdp's models use and with plain ones like the peer's, each in
float32 and in mixed bfloat16 (`--precision=mixed_bfloat16`; skipped, with "-", on a CPU without
bfloat16 arithmetic), one step of each mode per round for 12 rounds (`--rounds`; best round each,
so a noisy machine's slow spells hit every mode alike), then prints one markdown table: non-private
and DP examples/s, and the ratio of tfdp's fast DP step to the best Opacus DP mode. The first line
names the CPU; the last line is the JSON record.
Run it from the repository root with the tfdp venv's python.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "bench", "opacus_resnet20.py")
OPACUS_LINE = re.compile(r"^opacus (\w+)\s+batch=(\d+) examples/s=([\d.]+)")
OPACUS_DP_MODES = ("hooks", "ghost")
# tfdp.bench's (non-private, DP) modes per precision.
PRECISION_MODES = {"float32": ("nonprivate", "fast"),
                   "mixed_bfloat16": ("nonprivate_bf16", "fast_bf16")}


def run_opacus(python: str, batch_size: int, threads: int) -> Dict[str, float]:
  """{mode: examples/s} for the modes the peer script measured (a failed mode is absent)."""
  done = subprocess.run([python, PEER, str(batch_size), str(threads)], cwd=ROOT,
                        capture_output=True, text=True, check=True)
  speeds = {}
  for line in done.stdout.splitlines():
    match = OPACUS_LINE.match(line)
    if match:
      speeds[match.group(1)] = float(match.group(3))
  return speeds


def run_tfdp(batch_size: int, physical_batch_size: int, rounds: int, extra: List[str]) -> dict:
  """The JSON record of `python -m tfdp.bench` on ResNet-20, non-private and fast DP."""
  with tempfile.TemporaryDirectory() as scratch:
    output = os.path.join(scratch, "bench.json")
    subprocess.run([sys.executable, "-m", "tfdp.bench", "--model=resnet20",
                    f"--batch_size={batch_size}", f"--physical_batch_size={physical_batch_size}",
                    "--modes=" + ",".join(m for pair in PRECISION_MODES.values() for m in pair),
                    "--steps=1", f"--rounds={rounds}",
                    f"--output={output}", *extra],
                   cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(output) as f:
      return json.load(f)


def _cell(value) -> str:
  return "-" if value is None else f"{value:.1f}"


def _ratio(numerator, denominator) -> str:
  return f"{numerator / denominator:.2f}" if numerator and denominator else "-"


def table(opacus: Dict[str, float], tfdp_runs: Dict[str, dict]) -> List[str]:
  best_opacus = max((opacus[m] for m in OPACUS_DP_MODES if m in opacus), default=None)
  rows = ["| setup | non-private ex/s | DP ex/s | DP step / non-private step | "
          "DP / best Opacus DP | peak RSS DP / non-private |", "|---|---:|---:|---:|---:|---:|"]
  for mode in OPACUS_DP_MODES:
    dp, nonprivate = opacus.get(mode), opacus.get("nonprivate")
    rows.append(f"| Opacus {mode} | {_cell(nonprivate)} | {_cell(dp)} | "
                f"{_ratio(nonprivate, dp)} | {_ratio(dp, best_opacus)} | - |")
  for label, record in tfdp_runs.items():
    speed, memory = record["examples_per_second"], record["peak_memory_mb"]
    for precision, (nonprivate_mode, dp_mode) in PRECISION_MODES.items():
      nonprivate, fast = speed.get(nonprivate_mode), speed.get(dp_mode)
      rows.append(f"| tfdp fast, {label}, {precision} | {_cell(nonprivate)} | {_cell(fast)} | "
                  f"{_ratio(nonprivate, fast)} | {_ratio(fast, best_opacus)} | "
                  f"{_ratio(memory.get(dp_mode), memory.get(nonprivate_mode))} |")
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--physical_batch_size", type=int, default=64,
                      help="tfdp's rows per chunk; 64 is tfdp.train's default for the fast engine, "
                      "the batch size runs it in one chunk as the peer does.")
  parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (cores here).")
  parser.add_argument("--rounds", type=int, default=12,
                      help="tfdp's timed rounds, one step of each mode per round (round robin), so "
                      "that a noisy machine's slow spells hit every mode alike; best round each.")
  parser.add_argument("--opacus_python", default=os.path.join(ROOT, "..", "venv-opacus", "bin",
                                                              "python"))
  args = parser.parse_args()
  if not os.path.exists(args.opacus_python):
    sys.exit(f"vs_opacus: error: no Opacus python at {args.opacus_python}; make the venv as "
             f"{PEER}'s header says, or pass --opacus_python")
  from tfdp import cpu  # pylint: disable=import-outside-toplevel
  print(f"Machine: {cpu.describe()}; batch {args.batch_size} (tfdp in chunks of "
        f"{args.physical_batch_size}); PyTorch threads {args.threads}")
  opacus = run_opacus(args.opacus_python, args.batch_size, args.threads)
  chunk = args.physical_batch_size
  tfdp_runs = {"WS convolutions (tfdp default)": run_tfdp(args.batch_size, chunk, args.rounds,
                                                         []),
               "plain convolutions (as the peer)": run_tfdp(args.batch_size, chunk, args.rounds,
                                                            ["--noweight_standardization"])}
  print("\n".join(table(opacus, tfdp_runs)))
  print(json.dumps({"cpu": cpu.cpu_model(), "cpu_features": cpu.cpu_features(),
                    "onednn": cpu.onednn_enabled(), "batch_size": args.batch_size,
                    "physical_batch_size": chunk,
                    "opacus": opacus, "tfdp": tfdp_runs}))


if __name__ == "__main__":
  main()
