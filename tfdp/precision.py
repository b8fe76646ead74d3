"""Mixed precision: the model's forward and backward pass in bfloat16 or float16, the private
step in float32.

`--precision=mixed_bfloat16` (CPUs with bfloat16 arithmetic, GPUs) or `mixed_float16` (GPUs) builds
the model under Keras's mixed precision policy of that name: layers compute in 16 bits and keep
float32 variables. `float32` (the default) changes nothing.

Privacy argument. What a step releases is what the float32 step releases: the noised mean of the
clipped per-example gradients, a float32 tensor, and the update computed from it.
- Rows stay independent. Rounding to 16 bits is elementwise, so each layer's input a_i and
  output gradient dz_i still come from example i alone (no layer mixes rows; BatchNorm is refused
  as in float32). The rounding changes *which* function of example i its gradient g_i is, not
  whether it depends on other examples.
- Nothing is rounded to 16 bits after the clip. The engines cast a_i and dz_i to float32 (exact:
  every bfloat16 and float16 is a float32) before any per-example contraction (`to_float32`), so
  the norms, the clip factors w_i = min(1, C / ||g_i||), the clipped sum, the noise and the update
  are the float32 computations of the float32 step. The logits are cast to float32 before the loss
  (`float32_loss`). So each example moves the sum by ||w_i g_i|| <= C, up to the float32 rounding
  of the sum that the float32 step has too (docs/guarantee.md). Rounding the clipped gradient to
  bfloat16 instead would break the bound: round-to-nearest can raise a coordinate's magnitude by
  up to 2^-8 of itself, so a gradient clipped to norm C exactly can leave with norm up to
  C (1 + 2^-8) (tests/test_precision.py builds one, and checks the engines' sums one example
  removed at a time on inputs where that happens).
- Overflow. float16 tops out at 65504: an example whose forward or backward pass overflows has an
  inf or NaN gradient norm, and every engine drops it (weight 0, its rows selected away: it adds
  exactly 0, tfdp.dp.groups). Whether example i overflows depends on example i alone, and 0 is
  within the bound, so the sensitivity stays C.
- The loss scale is fixed and public (`--loss_scale`, a power of two S). Keras's dynamic loss
  scale is refused: it halves after a step whose gradients overflowed and grows after a run of
  clean ones, so it would carry a function of the private data from step to step, unaccounted.
  With a fixed S the engines differentiate S times each example's loss and clip at S C (for the
  normalize rule, its gamma times S too); both rules are homogeneous, so the factor is the one
  of the unscaled gradient, and the clipped sum divided by S is the clipped sum of the unscaled
  gradients. Division by a power of two is exact in float32 unless the quotient falls below
  float32's normal range (1e-38), where its error is under 1e-45 per coordinate, within the
  float32 rounding of the sum allowed for above; so the bound survives it. S is at most 2^24, so
  S C and the scaled norms stay far inside float32's range. The per-example losses and norms are
  divided by S too (monitoring, adaptive clipping).
- The same σ, q and steps: the accountant applies the same theorem to the same mechanism.

Why S = 1 serves most runs: tfdp differentiates the *sum* of the per-example losses, so example
i's gradient is at its own scale, not 1/B of it as in a mean loss, and float16's subnormals reach
6e-8. A larger S lifts gradients that would flush to zero; an S too large overflows examples,
which are then dropped (they cost accuracy, not privacy).

A ScatterNet model's frozen scattering transform is built float32 under any policy (its features
are computed once and cached); only the trained head follows the policy.
"""

import contextlib
import math
from typing import Callable, Iterator

import tensorflow as tf

from tfdp import cpu
from tfdp import names

FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
MIXED_FLOAT16 = "mixed_float16"
PRECISIONS = (FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16)
# CPU features with bfloat16 arithmetic in hardware; without them oneDNN emulates it.
BFLOAT16_FEATURES = ("avx512_bf16", "amx_tile")
_LOW = (tf.bfloat16, tf.float16)
# float16's own range ends at 2^16; a larger scale only overflows examples, and S C, S ||g|| stay
# far inside float32's range below this.
MAX_LOSS_SCALE = 2.0**24


def check(precision: str, features=None, gpus=None) -> None:
  """Raises ValueError, with the reason, unless `precision` can run here.

  Args:
    precision: one of PRECISIONS.
    features: the CPU's feature flags (default: this machine's, from /proc/cpuinfo).
    gpus: whether a GPU is visible (default: asks TensorFlow).
  """
  names.check("precision", precision, PRECISIONS)
  if precision == FLOAT32:
    return
  if gpus is None:
    gpus = bool(tf.config.list_physical_devices("GPU"))
  if gpus:
    return
  if precision == MIXED_FLOAT16:
    raise ValueError(
        "--precision=mixed_float16 is refused on a CPU: TensorFlow's CPU kernels emulate float16 "
        "arithmetic, slower than float32. It is for GPUs; on a CPU with bfloat16 arithmetic use "
        "--precision=mixed_bfloat16.")
  have = set(cpu.cpu_features() if features is None else features)
  if not have.intersection(BFLOAT16_FEATURES):
    raise ValueError(
        "--precision=mixed_bfloat16 is refused on this CPU: it has no bfloat16 arithmetic "
        f"({' or '.join(f.upper() for f in BFLOAT16_FEATURES)}), so oneDNN would emulate it, "
        "slower than float32 (docs/speed.md). Use --precision=float32.")


def check_loss_scale(precision: str, loss_scale: float) -> None:
  """Raises ValueError unless `loss_scale` is a power of two in [1, MAX_LOSS_SCALE], and 1 unless
  `precision` is mixed_float16 (the only policy whose gradients can flush to zero for want of
  exponent range)."""
  mantissa, _ = math.frexp(loss_scale) if math.isfinite(loss_scale) else (0.0, 0)
  if not (1 <= loss_scale <= MAX_LOSS_SCALE and mantissa == 0.5):
    raise ValueError(f"loss_scale must be a power of two from 1 to 2^24 (division by it is then "
                     f"exact in float32), got {loss_scale}")
  if loss_scale != 1 and precision != MIXED_FLOAT16:
    raise ValueError(f"loss_scale={loss_scale:g} applies to the mixed_float16 policy only; "
                     f"{precision} needs none")


@contextlib.contextmanager
def policy(precision: str) -> Iterator[None]:
  """Keras's global dtype policy set to `precision` inside the block, restored after.

  Build the model inside it: each layer keeps the policy it was built with.
  """
  names.check("precision", precision, PRECISIONS)
  before = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(before)


def to_float32(tensor):
  """A bfloat16 or float16 tensor cast to float32 (exact); any other tensor unchanged."""
  if isinstance(tensor, tf.Tensor) and tensor.dtype in _LOW:
    return tf.cast(tensor, tf.float32)
  return tensor


def float32_loss(loss_fn: Callable) -> Callable:
  """`loss_fn` on float32 logits: (labels, logits) -> per-example losses [B] in float32."""
  def loss(labels, logits):
    return loss_fn(labels, to_float32(logits))
  return loss


def scaled_loss(loss_fn: Callable, loss_scale: float) -> Callable:
  """`loss_fn` times the public constant `loss_scale` (the same callable when it is 1)."""
  if loss_scale == 1:
    return loss_fn
  def loss(labels, logits):
    return loss_fn(labels, logits) * loss_scale
  return loss


def computes_in_float16(model: tf.keras.Model) -> bool:
  """Whether `model` was built under mixed_float16 (its layers compute in float16)."""
  return getattr(model, "compute_dtype", None) == "float16"
