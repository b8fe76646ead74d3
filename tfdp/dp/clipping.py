"""Per-example gradients, clipping and the masked clipped sum.

The private step is a chain: per-example gradients -> per-example norms -> clip factors -> masked
clipped sum. Noise is added afterwards, once per logical step, by the DP optimizer
(`tfdp.optimizers.dp_keras.PrivateGradientMixin.noised_mean`).

Engines (CLIPPING_ENGINES): `vectorized` materializes every example's gradient, each example's
forward and backward pass on its own, vectorized over the batch by `pfor`: exact, slow on conv nets,
kept as the reference. `fast` (tfdp.dp.fast) uses per-layer closed forms.

Examples whose gradient is not finite are dropped, padding rows too (tfdp.dp.groups): they get
weight 0 and their rows are selected away before any sum.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import tensorflow as tf

from tfdp import names
from tfdp.dp import groups as groups_lib
from tfdp.dp import losses as losses_lib
from tfdp.dp import per_example

LossFn = per_example.LossFn


per_example_loss = losses_lib.cross_entropy  # The default loss.


def per_example_norms(gradients: Sequence[tf.Tensor]) -> tf.Tensor:
  """L2 norm of each example's gradient over all variables jointly: [B]."""
  squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
             for g in gradients]
  return tf.sqrt(tf.add_n(squares))


def clip_factors(norms: tf.Tensor, l2_norm_clip: float) -> tf.Tensor:
  """min(1, C / norm) per example, as tf.clip_by_global_norm computes it: [B]."""
  clip = tf.cast(l2_norm_clip, norms.dtype)
  return clip / tf.maximum(norms, clip)


def weighted_sum(gradients: Sequence[tf.Tensor], weights: tf.Tensor) -> List[tf.Tensor]:
  """sum_i weights[i] * gradients[i] per variable: [B] x [B, *shape] -> [*shape].

  Rows of weight 0 are left out (selected away, so an inf or NaN there never reaches the sum).
  """
  return [groups_lib.weighted_sum(weights, g) for g in gradients]


def vectorized_clipped_sum(model: tf.keras.Model, loss_fn: LossFn, images: tf.Tensor,
                           labels: tf.Tensor, mask: tf.Tensor,
                           l2_norm_clip: float) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
  """Sum over the real rows of per-example gradients, each clipped to L2 norm `l2_norm_clip`.

  Sensitivity: adding or removing one example changes the returned sum by at most `l2_norm_clip`
  in L2 norm. Rows with mask 0 (padding) and examples whose gradient norm is not finite
  contribute exactly nothing (tfdp.dp.groups.kept_examples).

  Args:
    model, loss_fn, images, labels: as for `tfdp.dp.per_example.gradients`.
    mask: float32 [B], 1 for real examples and 0 for padding.
    l2_norm_clip: C > 0.

  Returns:
    (clipped_sum, losses, logits): one tensor per trainable variable (private, sensitivity C),
    and the per-example losses [B] and logits [B, K] for monitoring.
  """
  gradients, losses, logits = per_example.gradients(model, loss_fn, images, labels)
  norms = per_example_norms(gradients)
  kept = groups_lib.kept_examples([norms], mask)
  weights = tf.where(kept, clip_factors(norms, l2_norm_clip), tf.zeros_like(norms))
  return weighted_sum(gradients, weights), losses, logits


def plain_sum(model: tf.keras.Model, loss_fn: LossFn, images: tf.Tensor, labels: tf.Tensor,
              mask: tf.Tensor) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
  """Non-private: the gradient of the masked loss sum (no clipping), same return shape.

  Rows with mask 0 are selected out of the sum (0 * inf would be NaN); a real example whose loss
  or gradient is not finite still makes the sum non-finite.
  """
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    losses = loss_fn(labels, logits)
    total = tf.reduce_sum(tf.where(mask > 0, losses * mask, tf.zeros_like(losses)))
  gradients = tape.gradient(total, model.trainable_variables,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return gradients, losses, logits


def _row_l1_norms(gradient: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.reshape(tf.abs(gradient), [tf.shape(gradient)[0], -1]), axis=1)


_NORM_TERMS = {
    "l2": lambda g: tf.square(per_example_norms([g])),
    "l1": _row_l1_norms,
}


class VectorizedEngine:
  """Materialized per-example gradients, clipped flat or per group.

  Args:
    model, clip_groups, scaling: as for every engine.
    norm: 'l2' (Gaussian noise) or 'l1' (Laplace noise); the materialized per-example gradients
      allow any norm.
  """

  norms = ("l2", "l1")

  def __init__(self, model: tf.keras.Model, clip_groups: groups_lib.ClipGroups = None,
               scaling: groups_lib.Scaling = groups_lib.Scaling(), norm: str = "l2",
               augmult: int = 1):
    self._model = model
    self._groups = groups_lib.variable_groups(model, clip_groups)
    self._scaling = scaling
    self._norm = norm
    self._augmult = augmult

  def __call__(self, loss_fn, images, labels, mask, clip):
    """(clipped sums per variable, losses [R], logits [R, K], whole-gradient norms [B]).

    images and labels hold R = B * augmult rows, example-major; example i's gradient is the mean
    over its augmult copies, clipped as one; mask is [B].
    """
    gradients, losses, logits = per_example.gradients(self._model, loss_fn, images,
                                                                 labels)
    gradients = [groups_lib.example_means(g, self._augmult) for g in gradients]
    terms = [_NORM_TERMS[self._norm](g) for g in gradients]
    weights = groups_lib.clip_weights(terms, self._groups, clip, mask, self._scaling, self._norm)
    sums = [groups_lib.weighted_sum(w, g) for w, g in zip(weights, gradients)]
    return sums, losses, logits, groups_lib.whole_norms(terms, self._norm)


def _fast_engine(model, clip_groups=None, scaling=groups_lib.Scaling(), norm="l2", augmult=1):
  from tfdp.dp import fast  # pylint: disable=import-outside-toplevel  (fast imports the models)
  if norm != "l2":
    raise ValueError(f"the fast clipping engine computes L2 norms only; {norm.upper()} clipping "
                     "(--noise=laplace) needs --clipping=vectorized")
  return fast.FastEngine(model, clip_groups, scaling, augmult)


# name -> factory(model, clip_groups, scaling, norm, augmult) -> engine(loss_fn, images, labels,
#   mask, clip) returning (clipped sums per trainable variable, per-row losses, per-row logits,
#   per-example norms of the whole gradient before clipping).
CLIPPING_ENGINES: Dict[str, Callable] = {
    "fast": _fast_engine,
    "vectorized": VectorizedEngine,
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of CLIPPING_ENGINES."""
  names.check("clipping", name, sorted(CLIPPING_ENGINES))


def make_engine(name: str, model: tf.keras.Model, clip_groups: groups_lib.ClipGroups = None,
                scaling: groups_lib.Scaling = groups_lib.Scaling(), norm: str = "l2",
                augmult: int = 1):
  if name not in CLIPPING_ENGINES:
    raise ValueError(f"unknown clipping engine {name!r}; valid: {sorted(CLIPPING_ENGINES)}")
  if norm not in groups_lib.NORMS:
    raise ValueError(f"unknown clipping norm {norm!r}; valid: {sorted(groups_lib.NORMS)}")
  if augmult < 1:
    raise ValueError(f"augmult must be >= 1, got {augmult}")
  return CLIPPING_ENGINES[name](model, clip_groups, scaling, norm, augmult)
