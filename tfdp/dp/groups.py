"""Clipping groups and per-example scaling rules.

Groups: flat (one group), K contiguous groups of layers, or one group per layer. With G groups each
bounded by C / sqrt(G), an example's whole gradient has L2 norm at most sqrt(G * C^2 / G) = C, so the
sensitivity, the noise and the accountant are those of flat clipping.

With L1 clipping (Laplace noise) a group's bound is C / G instead, and the L1 norms add up to C.

Scaling rules (SCALINGS) map a group's per-example norm to the factor applied to it:
- clip: min(1, bound / norm) (Abadi et al. 2016);
- normalize: bound / (norm + gamma) (automatic clipping, Bu et al. 2022): every example is rescaled,
  and its scaled norm bound * norm / (norm + gamma) stays below the bound, so the sensitivity is C too.

Dropped rows: padding (mask 0) and examples whose gradient norm is not finite (an inf or NaN from
the example's own data) get weight exactly 0, and their rows are selected away (`tf.where`), never
multiplied by 0, since 0 * inf is NaN and would poison the whole sum. A dropped example contributes
the zero vector, within every bound, so the sensitivity stays C; whether an example is dropped
depends on its own gradient alone, so it cannot change any other example's contribution.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

ClipGroups = Optional[Union[int, str]]  # None (flat), K, or "layer".


def parameter_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers that own trainable variables, in model order."""
  return [layer for layer in model.layers if layer.trainable_weights]


def layer_groups(num_layers: int, clip_groups: ClipGroups) -> List[int]:
  """Group index of each of `num_layers` layers with parameters, in order: all 0 (None), one
  each ('layer'), or K contiguous runs of near-equal length (an int K)."""
  if clip_groups is None:
    return [0] * num_layers
  if clip_groups == "layer":
    return list(range(num_layers))
  if isinstance(clip_groups, int) and 1 <= clip_groups <= num_layers:
    return [g for g, part in enumerate(np.array_split(np.arange(num_layers), clip_groups))
            for _ in part]
  raise ValueError(f"clip_groups must be None, 'layer' or an int in [1, {num_layers}] (the "
                   f"number of layers with parameters), got {clip_groups!r}")


def variable_groups(model: tf.keras.Model, clip_groups: ClipGroups) -> List[int]:
  """Group index of each of model.trainable_variables; a layer's variables share a group."""
  layers = parameter_layers(model)
  layer_group = layer_groups(len(layers), clip_groups)
  group_of = {}
  for layer, group in zip(layers, layer_group):
    for variable in layer.trainable_weights:
      group_of[variable.ref()] = group
  return [group_of[v.ref()] for v in model.trainable_variables]


SCALINGS = {
    "clip": lambda norm, bound, gamma: bound / tf.maximum(norm, bound),
    "normalize": lambda norm, bound, gamma: bound / (norm + gamma),
}


@dataclasses.dataclass(frozen=True)
class Scaling:
  """How each example's (group) gradient is bounded: a SCALINGS mode and its gamma (normalize)."""
  mode: str = "clip"
  gamma: float = 0.01  # Stability constant of normalize (Bu et al. 2022's default).

  def __post_init__(self):
    if self.mode not in SCALINGS:
      raise ValueError(f"unknown clipping_mode {self.mode!r}; valid: {', '.join(SCALINGS)}")
    if not self.gamma > 0:
      raise ValueError(f"normalize gamma must be > 0, got {self.gamma}")

  def factor(self, norm: tf.Tensor, bound: tf.Tensor) -> tf.Tensor:
    return SCALINGS[self.mode](norm, bound, tf.cast(self.gamma, norm.dtype))


@dataclasses.dataclass(frozen=True)
class Norm:
  """An L_p norm built from per-variable terms: L2 from squared norms, L1 from absolute sums."""
  combine: Callable[[tf.Tensor], tf.Tensor]  # Sum of a group's terms -> the group's norm.
  group_bound: Callable[[float, int], float]  # (C, G) -> C_g, so the groups' norms add up to C.


NORMS: Dict[str, Norm] = {
    "l2": Norm(tf.sqrt, lambda clip, groups: clip / np.sqrt(groups)),
    "l1": Norm(lambda total: total, lambda clip, groups: clip / groups),
}


def repeat_rows(per_example: tf.Tensor, augmult: int) -> tf.Tensor:
  """[B, ...] -> [B * augmult, ...], each example's value on each of its copies (example-major)."""
  return per_example if augmult == 1 else tf.repeat(per_example, augmult, axis=0)


def example_means(per_row: tf.Tensor, augmult: int) -> tf.Tensor:
  """[B * augmult, ...] -> [B, ...], the mean over each example's copies."""
  if augmult == 1:
    return per_row
  shape = tf.shape(per_row)
  grouped = tf.reshape(per_row, tf.concat([[-1, augmult], shape[1:]], 0))
  return tf.reduce_mean(grouped, axis=1)


def whole_norms(norm_terms: Sequence[tf.Tensor], norm: str = "l2") -> tf.Tensor:
  """[B] norm of each example's whole gradient from per-variable terms (squared or L1)."""
  return NORMS[norm].combine(tf.add_n(list(norm_terms)))


def kept_examples(norm_terms: Sequence[tf.Tensor], mask: tf.Tensor) -> tf.Tensor:
  """[B] bool: real (mask > 0) examples whose whole gradient norm is finite.

  Each example's verdict reads only its own norm terms, so one example cannot drop another.
  """
  return tf.logical_and(mask > 0, tf.math.is_finite(tf.add_n(list(norm_terms))))


def clip_weights(norm_terms: Sequence[tf.Tensor], groups: Sequence[int],
                 clip: float, mask: tf.Tensor, scaling: Scaling = Scaling(),
                 norm: str = "l2") -> List[tf.Tensor]:
  """Per variable, the [B] weights factor(||g_{g,i}||, C_g) of its group g, or 0 if i is dropped.

  Example i is dropped when it is padding (mask 0) or its gradient norm is not finite
  (`kept_examples`); its weight is then exactly 0, selected rather than multiplied. Sensitivity:
  a kept example's group g is scaled to norm <= C_g, a dropped one contributes nothing, so adding
  or removing one example moves the weighted sum by at most C.

  Args:
    norm_terms: per variable, [B] terms of each example's gradient norm for it: squared L2 norms
      (norm 'l2') or L1 norms (norm 'l1').
    groups: group index per variable.
    clip: C, the bound on each example's whole gradient in that norm.
    mask: [B], 1 for real examples and 0 for padding.
    scaling: the per-example rule (clip by default); every rule keeps the scaled norm <= C_g.
    norm: a NORMS key.
  """
  rule = NORMS[norm]
  num_groups = max(groups) + 1
  bound = tf.cast(rule.group_bound(clip, num_groups), mask.dtype)
  kept = kept_examples(norm_terms, mask)
  factors = []
  for g in range(num_groups):
    group_norm = rule.combine(tf.add_n([n for n, group in zip(norm_terms, groups) if group == g]))
    factors.append(tf.where(kept, scaling.factor(group_norm, bound), tf.zeros_like(group_norm)))
  return [factors[g] for g in groups]


def zero_rows(values: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
  """values [B, ...] with every row i where keep[i] is False set to exactly 0 (even inf or NaN)."""
  keep = tf.reshape(keep, [-1] + [1] * (values.shape.rank - 1))
  return tf.where(keep, values, tf.zeros_like(values))


def weighted_sum(weights: tf.Tensor, per_example: tf.Tensor) -> tf.Tensor:
  """sum_i weights[i] * per_example[i]: [B] x [B, ...] -> [...], rows of weight 0 left out.

  A row of weight 0 is zeroed before the contraction, so an inf or NaN in a dropped example's
  gradient never reaches the sum (0 * inf would be NaN).
  """
  return tf.tensordot(weights, zero_rows(per_example, tf.not_equal(weights, 0)), axes=1)
