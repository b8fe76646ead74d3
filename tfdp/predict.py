"""`python -m tfdp.predict`: classifies image files with an export; the command is tfdp.serving.predict."""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdp.serving.predict", run_name="__main__", alter_sys=True)
