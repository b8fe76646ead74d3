"""`python -m tfdp.evaluate`: evaluates an export on a dataset's test split; the command is tfdp.serving.evaluate."""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdp.serving.evaluate", run_name="__main__", alter_sys=True)
