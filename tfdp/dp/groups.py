"""Clipping groups: flat (one group), K contiguous groups of layers, or one group per layer.

With G groups each clipped to C / sqrt(G), an example's whole gradient has L2 norm at most
sqrt(G * C^2 / G) = C, so the sensitivity, the noise and the accountant are those of flat clipping.
"""

from typing import List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

ClipGroups = Optional[Union[int, str]]  # None (flat), K, or "layer".


def parameter_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers that own trainable variables, in model order."""
  return [layer for layer in model.layers if layer.trainable_weights]


def variable_groups(model: tf.keras.Model, clip_groups: ClipGroups) -> List[int]:
  """Group index of each of model.trainable_variables; a layer's variables share a group."""
  layers = parameter_layers(model)
  if clip_groups is None:
    layer_group = [0] * len(layers)
  elif clip_groups == "layer":
    layer_group = list(range(len(layers)))
  elif isinstance(clip_groups, int) and 1 <= clip_groups <= len(layers):
    layer_group = [g for g, part in enumerate(np.array_split(np.arange(len(layers)), clip_groups))
                   for _ in part]
  else:
    raise ValueError(f"clip_groups must be None, 'layer' or an int in [1, {len(layers)}] (the "
                     f"number of layers with parameters), got {clip_groups!r}")
  group_of = {}
  for layer, group in zip(layers, layer_group):
    for variable in layer.trainable_weights:
      group_of[variable.ref()] = group
  return [group_of[v.ref()] for v in model.trainable_variables]


def clip_weights(squared_norms: Sequence[tf.Tensor], groups: Sequence[int],
                 l2_norm_clip: float, mask: tf.Tensor) -> List[tf.Tensor]:
  """Per variable, the [B] weights mask_i * min(1, C_g / ||g_{g,i}||) of its group g.

  Args:
    squared_norms: per variable, [B] squared norms of each example's gradient for it.
    groups: group index per variable.
    l2_norm_clip: C, the bound on each example's whole gradient.
    mask: [B], 1 for real examples and 0 for padding.
  """
  num_groups = max(groups) + 1
  bound = tf.cast(l2_norm_clip / np.sqrt(num_groups), mask.dtype)
  factors = []
  for g in range(num_groups):
    norm = tf.sqrt(tf.add_n([n for n, group in zip(squared_norms, groups) if group == g]))
    factors.append(bound / tf.maximum(norm, bound) * mask)
  return [factors[g] for g in groups]
