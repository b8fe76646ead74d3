"""SavedModel export for TF Serving (tfdp.serving.saved_model), and its command.

    tfdp.export.export_saved_model(model, preprocess, class_names, "saved_models/mine")
    python -m tfdp.export --checkpoint_dir=runs/quickstart --export_dir=saved_models/quickstart
"""

from tfdp.serving.saved_model import (MODEL_CARD, export_saved_model, export_versioned,
                                      latest_version, next_version, read_model_card)

__all__ = ["MODEL_CARD", "export_saved_model", "export_versioned", "latest_version",
           "next_version", "read_model_card"]

if __name__ == "__main__":
  import runpy
  runpy.run_module("tfdp.serving.release", run_name="__main__", alter_sys=True)
