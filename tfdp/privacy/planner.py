"""Plan a run's privacy before training: ε of a planned run, or σ for a target ε (no TensorFlow).

The counterpart of TF Privacy's `compute_dp_sgd_privacy`, with tfdp's conventions: Poisson
sampling with q = batch_size / N, an epoch of ceil(N / batch_size) steps, add/remove-one adjacency,
and both accountants (RDP, which enforces tfdp's budgets, and PLD, tighter).

>>> round(epsilon(num_examples=60000, batch_size=256, epochs=60, noise_multiplier=1.1,
...               delta=1e-5), 2)
2.6
>>> sigma = calibrate_noise(num_examples=50000, batch_size=1024, epochs=10, target_epsilon=3.0,
...                         delta=1e-5)
>>> 2.97 <= epsilon(num_examples=50000, batch_size=1024, epochs=10, noise_multiplier=sigma,
...                 delta=1e-5) <= 3.0
True
"""

import dataclasses
import math
from typing import Optional

from tfdp.privacy import accounting
from tfdp.privacy import mechanisms
from tfdp.privacy import run_plan


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
  """A planned DP-SGD run: N, expected batch, epochs, δ; steps = epochs * ceil(N / batch)."""

  num_examples: int
  batch_size: int
  epochs: int
  delta: float

  def __post_init__(self):
    for name in ("num_examples", "batch_size", "epochs"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if self.batch_size > self.num_examples:
      raise ValueError(f"batch_size {self.batch_size} is larger than num_examples "
                       f"{self.num_examples}")
    if not 0 < self.delta < 1:
      raise ValueError(f"delta must be in (0, 1), got {self.delta}")

  @property
  def sampling_probability(self) -> float:
    return self.batch_size / self.num_examples

  @property
  def steps(self) -> int:
    return self.epochs * math.ceil(self.num_examples / self.batch_size)


def epsilon(*, num_examples: int, batch_size: int, epochs: int, noise_multiplier: float,
            delta: float, accountant: str = "rdp") -> float:
  """ε after the planned run at noise multiplier σ (noise std / L2 clip norm).

  Args:
      num_examples: N, the training set size.
      batch_size: Expected (Poisson) batch size; q = batch_size / N.
      epochs: Epochs of ceil(N / batch_size) steps.
      noise_multiplier: σ.
      delta: δ of the guarantee.
      accountant: "rdp" or "pld".
  """
  plan = Plan(num_examples=num_examples, batch_size=batch_size, epochs=epochs, delta=delta)
  return accounting.epsilon(noise_multiplier, plan.sampling_probability, plan.steps, delta,
                            accountant)


def calibrate_noise(*, num_examples: int, batch_size: int, epochs: int, target_epsilon: float,
                    delta: float, accountant: str = "rdp") -> float:
  """The smallest σ (to 1% in ε) whose planned run spends at most `target_epsilon`, as
  `tfdp.train --epsilon` calibrates it (the one planner, tfdp.privacy.run_plan). Arguments as
  for `epsilon`."""
  plan = Plan(num_examples=num_examples, batch_size=batch_size, epochs=epochs, delta=delta)
  return _run_plan(plan, target_epsilon=target_epsilon, accountant=accountant).sigma()


def statement(*, num_examples: int, batch_size: int, epochs: int, noise_multiplier: float,
              delta: float, target_epsilon: Optional[float] = None) -> str:
  """The privacy statement a tfdp run of this plan would write once all its steps are taken
  (Gaussian noise, Poisson sampling, secret randomness; the model's size, which sizes the
  float noise's tail in δ, is unknown here)."""
  plan = Plan(num_examples=num_examples, batch_size=batch_size, epochs=epochs, delta=delta)
  ledger = _run_plan(plan, noise_multiplier=noise_multiplier).ledger()
  ledger.target_epsilon, ledger.steps, ledger.history = target_epsilon, plan.steps, []
  return ledger.describe()


def _run_plan(plan: Plan, **budget) -> run_plan.RunPlan:
  """`plan` as the one planner's RunPlan: DP-SGD's Gaussian mechanism, Poisson sampling."""
  return run_plan.RunPlan(train_size=plan.num_examples, batch_size=plan.batch_size,
                          epochs=plan.epochs, delta=plan.delta, settings=mechanisms.Settings(),
                          **budget)


def report(num_examples, batch_size, epochs, delta, noise_multiplier=None,
           target_epsilon=None) -> str:
  """The lines the command prints; ValueError naming a bad or missing value."""
  if (noise_multiplier is None) == (target_epsilon is None):
    raise ValueError("give exactly one of --noise_multiplier (to get ε) or --epsilon "
                     "(to get σ)")
  for name, value in (("num_examples", num_examples), ("batch_size", batch_size),
                      ("epochs", epochs)):
    if value is None:
      raise ValueError(f"--{name} is required")
  plan = Plan(num_examples=num_examples, batch_size=batch_size, epochs=epochs,
                      delta=delta)
  shape = dict(num_examples=num_examples, batch_size=batch_size, epochs=epochs, delta=delta)
  if noise_multiplier is None:
    noise_multiplier = calibrate_noise(target_epsilon=target_epsilon, **shape)
  rdp = epsilon(noise_multiplier=noise_multiplier, **shape)
  pld = epsilon(noise_multiplier=noise_multiplier, accountant="pld", **shape)
  calibrated = f" (calibrated to ε = {target_epsilon:g} by RDP)" if target_epsilon else ""
  lines = [f"{plan.steps} steps of q = {plan.sampling_probability:.6g} (Poisson), "
           f"σ = {noise_multiplier:.4f}{calibrated}",
           f"ε = {rdp:.4f} (RDP), {pld:.4f} (PLD) at δ = {delta:g}"]
  if delta >= 1 / num_examples:
    lines.append(f"warning: δ = {delta:g} is not below 1/N = {1 / num_examples:.3g}; "
                 "tfdp.train refuses it")
  lines.append("statement: " + statement(noise_multiplier=noise_multiplier,
                                                  target_epsilon=target_epsilon, **shape))
  return "\n".join(lines)
