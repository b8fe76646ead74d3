"""The private step: per-example gradients -> clip -> masked sum (noise lives in the DP optimizer)."""
