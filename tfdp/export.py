"""SavedModel export for TF Serving (tfdp.serving.saved_model), and its command
(tfdp.training.export_run).

    tfdp.export.export_saved_model(private, "saved_models/mine")  # A Keras model alone, or:
    tfdp.export.export_saved_model(model, "saved_models/mine", preprocess=preprocess,
                                   class_names=class_names, outputs="logits")
    python -m tfdp.export --checkpoint_dir=runs/quickstart --export_dir=saved_models/quickstart
"""

from tfdp.serving.saved_model import (MODEL_CARD, default_class_names, default_preprocess,
                                      export_saved_model, export_versioned, latest_version,
                                      next_version, output_kind, read_model_card)

__all__ = ["MODEL_CARD", "default_class_names", "default_preprocess", "export_saved_model",
           "export_versioned", "latest_version", "next_version", "output_kind", "read_model_card"]

if __name__ == "__main__":
  import runpy
  runpy.run_module("tfdp.training.export_run", run_name="__main__", alter_sys=True)
