"""The DP linear probe before the main steps (DP-RandP phase II, --linear_probe_steps). No TensorFlow.

Release per probe step (tfdp.training.linear_probe): the head's gradient on frozen public-prior
features, clipped to the run's C and noised as DP-SGD's (Gaussian, σ_p), on batches Poisson-
sampled at their own q_p. The probe's steps are Gaussian steps of (σ_p, q_p), composed ahead of the
main steps; the main steps start from the probe's head (post-processing).

>>> MECHANISM.text({"noise_multiplier": 3.0, "sampling_probability": 1.0, "steps": 10}, 10)
'a linear probe of 10 steps (σ = 3.0000, q = 1.00000) and '
"""

from typing import Any, Dict, List, Optional, Tuple

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import gaussian


class LinearProbe(gaussian.Gaussian):
  """The probe's steps, accounted as Gaussian steps of their own q and σ."""
  name = "linear_probe"

  def applies(self, settings: base.Settings) -> bool:
    return False  # A phase ahead of the steps, never the steps' mechanism.

  def check_run(self, *, private: bool, proven: bool, noise: str, optimizer: str,
                target_epsilon: Optional[float], probe_noise_multiplier: Optional[float]) -> None:
    base.require(private, f"--linear_probe_steps trains the head with DP before the main steps: "
                 f"it needs a dp_* optimizer, not {optimizer}")
    base.require(proven, "--linear_probe_steps cannot precede --optimizer=dice_sgd, whose ε no "
                 "proof backs")
    base.require(noise == "gaussian", f"--linear_probe_steps is accounted as Gaussian steps: it "
                 f"needs --noise=gaussian, not {noise}")
    base.require(target_epsilon is not None or probe_noise_multiplier is not None,
                 "--linear_probe_steps without --epsilon needs --probe_noise_multiplier (there "
                 "is no target ε to split)")

  def segments(self, planned: Dict[str, Any], steps: int) -> List[Tuple[float, int, float]]:
    if not planned:
      return []
    return [(planned["noise_multiplier"], steps, planned["sampling_probability"])]

  def text(self, planned: Dict[str, Any], steps: int) -> str:
    return (f"a linear probe of {steps} steps (σ = {planned['noise_multiplier']:.4f}, q = "
            f"{planned['sampling_probability']:.5f}) and ")


MECHANISM = LinearProbe()
