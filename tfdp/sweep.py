"""`python -m tfdp.sweep`: runs tfdp.train over a grid of flags and seeds; the command is tfdp.experiments.sweep."""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdp.experiments.sweep", run_name="__main__", alter_sys=True)
