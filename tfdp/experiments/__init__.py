"""Experiments over many runs: grids over flags and seeds (sweep, sweep_plots) and the speed and
memory benchmark of the clipping modes (bench)."""
