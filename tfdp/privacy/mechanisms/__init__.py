"""Every DP mechanism tfdp runs, one module each, found by name. No TensorFlow.

A mechanism module (its contract: tfdp.privacy.mechanisms.base) owns what the mechanism is: its
checks, the DPQuery it noises with, its DpEvent and Rényi curve for the accountant, its float
sampler's term in δ, its statement text, whether a proof backs its ε, and the settings a resume
must match. The steps' mechanisms, most specific first (`select` takes the first that applies):

  dice_sgd           DiceSGD's noise, NO proven guarantee (labelled baseline)
  laplace            L1 clip + Laplace noise, PLD
  discrete_gaussian  integer-grid noise, RDP with the general subsampling bound
  adaptive_clipping  quantile-adaptive clip (Andrew et al. 2021), one Gaussian mechanism
  grouped_gaussian   per-group noise stds (--layer_noise), one Gaussian mechanism
  gaussian           DP-SGD's Gaussian noise

The one-off releases beside the steps: scatter_statistics (ScatterNet feature statistics, composed
ahead), linear_probe (its steps, composed ahead), local_dp (per image, reported beside).

Adding a mechanism: write its module (a base.Mechanism subclass and MECHANISM), add it to STEPS
below, and test it against brute force through both front doors (tests/test_mechanism_registry.py).

>>> select(base.Settings(noise="laplace", clipping="vectorized")).name
'laplace'
>>> round(grouped_gaussian.effective_noise_multiplier([0.5] * 4, [1.0] * 4), 6)
1.0
>>> round(adaptive_clipping.adaptive_gradient_noise_multiplier(1.0, count_stddev=3.2), 4)
1.0124
>>> f"{float_tail_delta(3.0, steps=2000, coordinates=272_474, noise='gaussian'):.2g}"
'1.4e-22'
"""

from typing import Any, Dict, Optional

from tfdp.privacy.mechanisms import adaptive_clipping
from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import dice_sgd
from tfdp.privacy.mechanisms import discrete_gaussian
from tfdp.privacy.mechanisms import floats
from tfdp.privacy.mechanisms import gaussian
from tfdp.privacy.mechanisms import grouped_gaussian
from tfdp.privacy.mechanisms import laplace
from tfdp.privacy.mechanisms import linear_probe
from tfdp.privacy.mechanisms import local_dp
from tfdp.privacy.mechanisms import scatter_statistics

Settings = base.Settings
Mechanism = base.Mechanism

# The steps' mechanisms, most specific first: select() takes the first that applies.
STEPS = {m.name: m for m in (dice_sgd.MECHANISM, laplace.MECHANISM, discrete_gaussian.MECHANISM,
                             adaptive_clipping.MECHANISM, grouped_gaussian.MECHANISM,
                             gaussian.MECHANISM)}
ONE_OFF = {m.name: m for m in (scatter_statistics.MECHANISM, linear_probe.MECHANISM,
                               local_dp.MECHANISM)}
MECHANISMS = {**STEPS, **ONE_OFF}
# The noise distributions the accountant composes (a ledger's `noise`), each its own mechanism;
# in the order --noise lists them.
NOISES = tuple(m.name for m in (gaussian.MECHANISM, laplace.MECHANISM, discrete_gaussian.MECHANISM))
LAYER_NOISE = grouped_gaussian.LAYER_NOISE

# Names kept where the rest of tfdp and its tests read them.
FLOAT_UNIT, TAIL_UNIT = floats.FLOAT_UNIT, floats.TAIL_UNIT
GAUSSIAN_MAX, GAUSSIAN_TAIL = floats.GAUSSIAN_MAX, floats.GAUSSIAN_TAIL
LAPLACE_MAX, LAPLACE_TAIL = floats.LAPLACE_MAX, floats.LAPLACE_TAIL
DISCRETE_GAUSSIAN_ROUNDS = discrete_gaussian.DISCRETE_GAUSSIAN_ROUNDS
DISCRETE_GAUSSIAN_ROUND_TV = discrete_gaussian.DISCRETE_GAUSSIAN_ROUND_TV
discrete_gaussian_tail = discrete_gaussian.discrete_gaussian_tail
discrete_gaussian_scale = discrete_gaussian.discrete_gaussian_scale
effective_noise_multiplier = grouped_gaussian.effective_noise_multiplier
group_noise_stddevs = grouped_gaussian.group_noise_stddevs
adaptive_gradient_noise_multiplier = adaptive_clipping.adaptive_gradient_noise_multiplier
dice_noise_factor = dice_sgd.dice_noise_factor


def get(name: str) -> base.Mechanism:
  """The mechanism called `name`; ValueError listing the valid names."""
  if name not in MECHANISMS:
    raise ValueError(f"unknown mechanism {name!r}; valid: {', '.join(MECHANISMS)}")
  return MECHANISMS[name]


def of_noise(name: str) -> base.Mechanism:
  """The mechanism of the noise distribution `name` (a ledger's `noise`, one of NOISES)."""
  if name not in NOISES:
    raise ValueError(f"unknown noise {name!r}; valid: {', '.join(NOISES)}")
  return STEPS[name]


def check_noise_name(name: str) -> None:
  if name not in NOISES:
    raise ValueError(f"unknown noise {name!r}; valid: {', '.join(NOISES)}")


def check(settings: base.Settings) -> None:
  """Every mechanism's checks of `settings` (each checks the settings that concern it), in
  registry order; ValueError naming the value and the fix."""
  check_noise_name(settings.noise)
  for mechanism in STEPS.values():
    mechanism.check(settings)


def select(settings: base.Settings) -> base.Mechanism:
  """The mechanism the steps run under `settings` (checked first)."""
  check(settings)
  return next(m for m in STEPS.values() if m.applies(settings))


def resume_fields(settings: base.Settings) -> Dict[str, Any]:
  """Every setting, beyond σ, q, δ, the noise and its schedule, that changes what the noisy
  steps release, as JSON values; a setting the selected mechanism does not use is None."""
  fields = {"optimizer": settings.optimizer, "l2_norm_clip": None, "l1_norm_clip": None,
            "dice_error_clip": None, "clip_groups": settings.clip_groups,
            "clipping_mode": settings.clipping_mode,
            "normalize_gamma": (settings.normalize_gamma if settings.clipping_mode == "normalize"
                                else None),
            "layer_noise": settings.layer_noise,
            "adaptive_clip_quantile": settings.adaptive_clip_quantile,
            "adaptive_clip_learning_rate": None, "adaptive_clip_count_stddev": None,
            "discrete_rounding_inflation": None}
  fields.update(select(settings).resume_fields(settings))
  return fields


def float_tail_delta(epsilon: float, steps: int, coordinates: int, noise: str,
                     grid_scale: Optional[int] = None) -> float:
  """What the float64 samplers' distance from the ideal noise adds to δ after `steps` steps of
  `coordinates` (tfdp.privacy.mechanisms.floats): (1 + e^ε) · steps · coordinates · tail, the
  tail being the noise's own (`grid_scale`: the discrete Gaussian's integer scale)."""
  tail = of_noise(noise).float_tail(grid_scale)
  return floats.tail_delta(epsilon, steps, coordinates, tail)
