"""Noise schedules: the noise multiplier of every epoch, fixed before training. No TensorFlow.

A schedule maps (epoch index, planned epochs, parameters) to a factor; epoch e's noise multiplier is
σ_base * factor(e), with factor(0) = 1. The factors are computed from public quantities only (never
from training data), so the run is a predetermined heterogeneous composition that the accountant
composes step by step. σ changes at epoch boundaries, which keeps the number of distinct steps the
PLD accountant must convolve at one per epoch.

>>> epoch_factors("linear_decay", 3, {"end_factor": 0.5})
(1.0, 0.75, 0.5)
>>> epoch_factors("step", 4, {"step_epochs": 2, "step_gamma": 0.5})
(1.0, 1.0, 0.5, 0.5)
"""

import math
from typing import Callable, Dict, Mapping, Tuple

ScheduleFn = Callable[[int, int, Mapping[str, float]], float]


def _progress(epoch: int, epochs: int) -> float:
  return epoch / (epochs - 1) if epochs > 1 else 0.0


def _linear_decay(epoch, epochs, params):
  return 1.0 + (params["end_factor"] - 1.0) * _progress(epoch, epochs)


def _cosine(epoch, epochs, params):
  end = params["end_factor"]
  return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * _progress(epoch, epochs)))


def _step(epoch, epochs, params):
  del epochs
  return params["step_gamma"] ** (epoch // int(params["step_epochs"]))


SCHEDULES: Dict[str, ScheduleFn] = {
    "constant": lambda epoch, epochs, params: 1.0,
    "linear_decay": _linear_decay,  # From 1 down (or up) to end_factor at the last epoch.
    "cosine": _cosine,  # Half a cosine from 1 to end_factor.
    "step": _step,  # Multiplied by step_gamma every step_epochs epochs.
}
DEFAULT_PARAMS = {
    "end_factor": 0.5,  # Noise at the last epoch relative to the first.
    "step_epochs": 1,  # Epochs between two steps of the step schedule.
    "step_gamma": 0.9,  # Factor applied at each step.
}


def epoch_factors(name: str, epochs: int,
                  params: Mapping[str, float] = DEFAULT_PARAMS) -> Tuple[float, ...]:
  """The factor of every planned epoch (all > 0); an unknown name raises ValueError."""
  if name not in SCHEDULES:
    raise ValueError(f"unknown noise_schedule {name!r}; valid: {', '.join(SCHEDULES)}")
  if epochs < 1:
    raise ValueError(f"a noise schedule needs epochs >= 1, got {epochs}")
  merged = {**DEFAULT_PARAMS, **params}
  check_params(merged)
  return tuple(float(SCHEDULES[name](e, epochs, merged)) for e in range(epochs))


def check_params(params: Mapping[str, float]) -> None:
  if not params["end_factor"] > 0:
    raise ValueError(f"noise_schedule_end_factor must be > 0, got {params['end_factor']}")
  if not (params["step_epochs"] >= 1 and float(params["step_epochs"]).is_integer()):
    raise ValueError(f"noise_schedule_step_epochs must be an integer >= 1, got "
                     f"{params['step_epochs']}")
  if not params["step_gamma"] > 0:
    raise ValueError(f"noise_schedule_step_gamma must be > 0, got {params['step_gamma']}")
