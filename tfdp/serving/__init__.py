"""What a trained model is served and released as: the SavedModel with its serving signatures
(saved_model), its model card (model_card), the run records and exports from checkpoints
(release), the held-out metrics both report (metrics), and the commands over an export (predict,
evaluate)."""
