"""Training for the command line: the privacy plan (planning), the compiled private step (steps),
the epoch loop with its checkpoints and ledger (loop, checkpointing), per-example losses, weight
averaging and learning-rate schedules. `tfdp.keras` runs the same private step inside `fit`."""
