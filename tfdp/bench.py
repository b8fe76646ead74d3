"""`python -m tfdp.bench`: measures the speed and memory of each clipping mode; the command is tfdp.experiments.bench."""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdp.experiments.bench", run_name="__main__", alter_sys=True)
