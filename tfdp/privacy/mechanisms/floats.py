"""How far the float64 noise samplers (tfdp.dp.randomness) are from the ideal noise. No TensorFlow.

Every sampler is within a bounded total variation of its ideal distribution per coordinate (its
mechanism's `float_tail`); over a run of `steps` releases of `coordinates` coordinates that makes
the drawn run within η = steps · coordinates · tail of the ideal one, and an (ε, δ)-DP ideal run
makes the drawn one (ε, δ + (1 + e^ε) η)-DP (float_tail_delta).
"""

import math

# The float64 noise samplers of tfdp.dp.randomness draw uniforms in (0, 1] on the 2^-53 grid, and
# the ones whose logarithm sets a tail (Box-Muller's radius, the Laplace magnitude) from two such
# draws, whose smallest value is 2^-106.
FLOAT_UNIT = 2.0 ** -53
TAIL_UNIT = 2.0 ** -106
# Box-Muller's radius sqrt(-2 ln U) is at most sqrt(212 ln 2) = 12.13: that caps the *radius*, not
# each coordinate R cos θ. The sampler differs from the ideal one only where U < 2^-106 (ideal
# mass 2^-106), so each coordinate is within total variation 2^-106 = 1.2e-32 of N(0, 1).
GAUSSIAN_MAX = math.sqrt(-2.0 * math.log(TAIL_UNIT))  # Largest |Gaussian draw|, in stds: 12.13.
GAUSSIAN_TAIL = TAIL_UNIT  # = exp(-GAUSSIAN_MAX² / 2), the ideal P(R > GAUSSIAN_MAX).
LAPLACE_MAX = -math.log(TAIL_UNIT)  # Largest Laplace magnitude, in scales: 106 ln 2 = 73.5.
LAPLACE_TAIL = TAIL_UNIT  # = exp(-LAPLACE_MAX), the ideal P(|Z| > LAPLACE_MAX scales).


def tail_delta(epsilon: float, releases: int, coordinates: int, tail: float) -> float:
  """(1 + e^ε) · releases · coordinates · tail, at most 1 (1 when ε is infinite)."""
  if not math.isfinite(epsilon):
    return 1.0
  return min(1.0, (1.0 + math.exp(min(epsilon, 700.0))) * releases * coordinates * tail)
