"""Mixed precision: the model's forward and backward pass in bfloat16, the private step in float32.

`--precision=mixed_bfloat16` builds the model under Keras's mixed precision policy of that name:
layers compute in bfloat16 and keep float32 variables. `float32` (the default) changes nothing.

Privacy argument. What a step releases is what the float32 step releases: the noised mean of the
clipped per-example gradients, a float32 tensor, and the update computed from it.
- Rows stay independent. Rounding to bfloat16 is elementwise, so each layer's input a_i and
  output gradient dz_i still come from example i alone (no layer mixes rows; BatchNorm is refused
  as in float32). The rounding changes *which* function of example i its gradient g_i is, not
  whether it depends on other examples.
- Nothing is rounded to bfloat16 after the clip. The engines cast a_i and dz_i to float32 (exact:
  every bfloat16 is a float32) before any per-example contraction (`to_float32`), so the norms,
  the clip factors w_i = min(1, C / ||g_i||), the clipped sum, the noise and the update are the
  float32 computations of the float32 step. The logits are cast to float32 before the loss
  (`float32_loss`). So each example moves the sum by ||w_i g_i|| <= C, up to the float32 rounding
  of the sum that the float32 step has too (docs/guarantee.md). Rounding the clipped gradient to
  bfloat16 instead would break the bound: round-to-nearest can raise a coordinate's magnitude by
  up to 2^-8 of itself, so a gradient clipped to norm C exactly can leave with norm up to
  C (1 + 2^-8) (tests/test_precision.py builds one, and checks the engines' sums one example
  removed at a time on inputs where that happens).
- The same σ, q and steps: the accountant applies the same theorem to the same mechanism.

A ScatterNet model's frozen scattering transform is built float32 under any policy (its features
are computed once and cached); only the trained head follows the policy.

Mixed float16 needs loss scaling, which Keras makes dynamic: the scale follows whether the batch's
gradients overflowed, a function of the private data that would steer training unaccounted. It is
refused until a fixed loss scale is built (and it would need a GPU to be worth it).
"""

import contextlib
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


def check(precision: str, features=None) -> None:
  """Raises ValueError, with the reason, unless `precision` can run here.

  Args:
    precision: one of PRECISIONS.
    features: the CPU's feature flags (default: this machine's, from /proc/cpuinfo).
  """
  names.check("precision", precision, PRECISIONS)
  if precision == MIXED_FLOAT16:
    raise ValueError(
        "--precision=mixed_float16 is refused: float16 needs loss scaling, and Keras's dynamic "
        "loss scale follows whether the private batch's gradients overflowed, which would steer "
        "training by the data without noise. Use mixed_bfloat16 (no loss scaling) or float32.")
  if precision == MIXED_BFLOAT16 and not tf.config.list_physical_devices("GPU"):
    have = set(cpu.cpu_features() if features is None else features)
    if not have.intersection(BFLOAT16_FEATURES):
      raise ValueError(
          "--precision=mixed_bfloat16 is refused on this CPU: it has no bfloat16 arithmetic "
          f"({' or '.join(f.upper() for f in BFLOAT16_FEATURES)}), so oneDNN would emulate it, "
          "slower than float32 (docs/speed.md). Use --precision=float32.")


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
