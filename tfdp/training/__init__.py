"""Training for the command line: the privacy plan (planning), the compiled private step (steps),
its multi-device path (distribution), the epoch loop with its checkpoints and ledger (loop,
checkpointing), what a run prints and writes (reporting), per-example losses and weight averaging.
`tfdp.keras` runs the same private step inside `fit`."""
