"""`python -m tfdp.baselines`: classical DP classifiers over ε; the command is tfdp.experiments.baselines."""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdp.experiments.baselines", run_name="__main__", alter_sys=True)
