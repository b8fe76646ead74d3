"""The ScatterNet feature statistics' one-off release (normalization=statistics). No TensorFlow.

Release, once before the first step (tfdp.dp.feature_statistics): two sums over the whole training
set (q = 1) of per-example statistics of the scattering features, each clipped to its own L2
bound and noised with N(0, σ_n² · bound²): two Gaussian mechanisms of noise multiplier σ_n. They
are composed ahead of the probe and the steps, as `RELEASES` Gaussian releases at q = 1; the model
reads the noised statistics only (post-processing).

>>> MECHANISM.text({"noise_multiplier": 8.0, "releases": 2})
'DP feature statistics (2 Gaussian releases, σ = 8.0000, q = 1), '
"""

from typing import Any, Dict, List, Tuple

from tfdp.privacy.mechanisms import base
from tfdp.privacy.mechanisms import gaussian

RELEASES = 2  # A and B: two Gaussian releases, each at q = 1.


class ScatterStatistics(gaussian.Gaussian):
  """The statistics' releases, accounted as Gaussian steps at q = 1."""
  name = "scatter_statistics"

  def applies(self, settings: base.Settings) -> bool:
    return False  # A one-off release beside the steps, never the steps' mechanism.

  def check_run(self, *, private: bool, noise: str, proven: bool, optimizer: str) -> None:
    base.require(not private or (noise == "gaussian" and proven),
                 "normalization=statistics is accounted as Gaussian releases composed with the "
                 f"steps: it needs --noise=gaussian and a proven optimizer, not --noise={noise} "
                 f"with {optimizer}")

  def planned(self, sigma: float) -> Dict[str, Any]:
    return {"noise_multiplier": sigma, "releases": RELEASES}

  def segments(self, planned: Dict[str, Any]) -> List[Tuple[float, int, float]]:
    return [(planned["noise_multiplier"], planned["releases"], 1.0)] if planned else []

  def text(self, planned: Dict[str, Any]) -> str:
    return (f"DP feature statistics ({planned['releases']} Gaussian releases, σ = "
            f"{planned['noise_multiplier']:.4f}, q = 1), ")


MECHANISM = ScatterStatistics()
