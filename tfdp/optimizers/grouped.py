"""Grouped clipping inside TF Privacy's DP Keras optimizers, for `model.compile` + `model.fit`.

`GroupedDPKerasSGDOptimizer` (and the Adam, Adagrad and RMSprop ones) take the constructor of TF
Privacy's `DPKerasSGDOptimizer` (`l2_norm_clip`, `noise_multiplier`, `num_microbatches`,
`gradient_accumulation_steps`, then the Keras optimizer's own arguments) plus `clip_groups`, and
override `_compute_gradients`, the method `model.fit` reaches through `minimize`. TF Privacy's
tutorial code runs unchanged with them: a loss with `reduction=NONE`, `compile`, `fit`.

Privacy argument. Each call of `_compute_gradients` is one step. Its input is a batch of M
examples, each its own microbatch: `num_microbatches` is None (one per example) or must equal the
batch size. The step releases

    (Σ_m clip_G(∇ loss_m) + N(0, σ² C² I)) / M

where clip_G scales each clipping group of example m's gradient to L2 norm at most C / sqrt(G)
(G groups), so the whole example gradient has norm at most sqrt(G · C²/G) = C. Adding or removing
one example adds or removes one term, which moves the clipped sum by at most C in L2: the
Gaussian mechanism with noise multiplier σ, as with flat clipping. Microbatches of several
examples (TF Privacy's `num_microbatches` < batch size) are refused: there the clipped term is a
microbatch's mean gradient, and removing one example changes that mean to another vector of norm
up to C, a move of up to 2C (and shifts which examples share a microbatch), twice the sensitivity
an accountant at σ assumes. The batch size is checked against `num_microbatches` at every step
(under XLA, which drops assertions, the reshape to one example per microbatch fails instead). A
microbatch whose gradient is not finite contributes zero (tfdp.dp.groups.clip_weights), which is
within the bound. The optimizer carries no private state from step to step other than the weights
and the update rule's moments, which are computed from released values alone (post-processing).
Over T steps the accountant composes T such releases; with TF Privacy's pattern the batches are
`fit`'s shuffled fixed-size batches, not Poisson draws, so an ε computed for Poisson sampling is
the usual approximation, not a proof (`python -m tfdp.train`, with Poisson sampling, is the
proven path).
`gradient_accumulation_steps` > 1 keeps TF Privacy's meaning: every call is noised, and the
applied update is the mean of several noised releases, still post-processing.

Coins. The noise of every call is drawn by tfdp's samplers (float64 Box-Muller, tfdp.dp.noise)
keyed by 128 bits from a Philox generator whose state comes from the operating system's CSPRNG
when the optimizer is built. That generator is kept out of Keras' tracking, so no checkpoint,
SavedModel or `get_config` holds it, and `tf.keras.utils.set_random_seed` does not fix it.

Groups. `clip_groups` is None (flat: one group, TF Privacy's clipping), "layer" (one group per
layer) or K (the layers in K contiguous runs). A variable's layer is its name without the last
path component ("dense_1/kernel:0" -> "dense_1"), in the order `model.trainable_variables` lists
them; every variable of a layer is in the layer's group.
"""

from typing import List, Sequence

import tensorflow as tf

from tfdp.dp import groups as groups_lib
from tfdp.dp import noise as noise_lib
from tfdp.dp import randomness
from tfdp.optimizers import dp_keras


def layer_name(variable: tf.Variable) -> str:
  """The owning layer's name of a Keras variable: 'block/conv/kernel:0' -> 'block/conv'."""
  name = variable.name.split(":")[0]
  return name.rsplit("/", 1)[0] if "/" in name else name


def variable_groups_by_name(variables: Sequence[tf.Variable], clip_groups) -> List[int]:
  """Group index of each variable, grouping by owning layer (see the module docstring)."""
  layers = list(dict.fromkeys(layer_name(v) for v in variables))
  layer_group = groups_lib.layer_groups(len(layers), clip_groups)
  group_of = dict(zip(layers, layer_group))
  return [group_of[layer_name(v)] for v in variables]


def grouped_clipped_sum(jacobians: Sequence[tf.Tensor], groups: Sequence[int],
                        l2_norm_clip: float) -> List[tf.Tensor]:
  """Σ_m of each microbatch's gradient with group g clipped to C / sqrt(G).

  Args:
    jacobians: per variable, [M, *variable.shape]: the gradient of each microbatch's loss. Private.
    groups: the group of each variable.
    l2_norm_clip: C, the bound on a microbatch's whole gradient.

  Returns:
    Per variable, the clipped sum (shape of the variable); sensitivity C in L2. Private.
  """
  norm_terms = [tf.reduce_sum(tf.reshape(tf.square(j), [tf.shape(j)[0], -1]), axis=1)
                for j in jacobians]
  weights = groups_lib.clip_weights(norm_terms, groups, l2_norm_clip,
                                    tf.ones_like(norm_terms[0]))
  return [groups_lib.weighted_sum(w, j) for w, j in zip(weights, jacobians)]


class GroupedClippingMixin:
  """TF Privacy's `_compute_gradients` with each microbatch's gradient clipped by groups."""

  def __init__(self, l2_norm_clip: float, noise_multiplier: float, num_microbatches=None,
               gradient_accumulation_steps: int = 1, *args, clip_groups=None, **kwargs):
    if not l2_norm_clip > 0:
      raise ValueError(f"l2_norm_clip must be > 0, got {l2_norm_clip}")
    if not noise_multiplier >= 0:
      raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if not (clip_groups in (None, "layer") or (isinstance(clip_groups, int) and clip_groups >= 1)):
      raise ValueError(f"clip_groups must be None, 'layer' or an int >= 1, got {clip_groups!r}")
    query = noise_lib.gaussian(l2_norm_clip, noise_multiplier)
    super().__init__(query, num_microbatches, gradient_accumulation_steps, *args, **kwargs)
    self.clip_groups = clip_groups
    # A list hides the generator from Keras' attribute tracking: no checkpoint may hold the coins.
    self._secret_keys = [randomness.SecretKeyStream()]

  def get_config(self):
    config = super().get_config()
    config.update(l2_norm_clip=self.l2_norm_clip, noise_multiplier=self.noise_multiplier,
                  clip_groups=self.clip_groups)
    config.pop("global_state", None)
    return config

  def _compute_gradients(self, loss, var_list, grad_loss=None, tape=None):
    """One private step: grouped clipping of each microbatch, noise once, divide by M."""
    del grad_loss  # TF Privacy ignores it too: the loss is per example.
    if not callable(loss) and tape is None:
      raise ValueError("`tape` is required when a `Tensor` loss is passed.")
    tape = tape if tape is not None else tf.GradientTape()
    with tape:
      if callable(loss):
        if not callable(var_list):
          tape.watch(var_list)
        loss = loss()
      _check_per_example(loss)
      num_microbatches = _one_example_each(loss, self._num_microbatches)
      microbatch_losses = tf.reshape(loss, [num_microbatches])
      if callable(var_list):
        var_list = var_list()
    var_list = tf.nest.flatten(var_list)
    jacobians = tape.jacobian(microbatch_losses, var_list, unconnected_gradients="zero")
    clipped = grouped_clipped_sum(jacobians, variable_groups_by_name(var_list, self.clip_groups),
                                  self.l2_norm_clip)
    grads = self.noised_mean(clipped, tf.cast(num_microbatches, tf.float32),
                             noise_seed=self._secret_keys[0].next())
    return list(zip(grads, var_list))

  def get_gradients(self, loss, params):
    raise NotImplementedError(
        f"{type(self).__name__} supports TF2 Keras (model.fit / minimize with a tape), not the "
        "graph-mode get_gradients path")


ONE_EXAMPLE_PER_MICROBATCH = (
    "num_microbatches must equal the batch size (or be None): a microbatch of several examples is "
    "clipped as their mean, and removing one example can move it by 2C, twice the sensitivity the "
    "accountant assumes; pass num_microbatches=None, or batches of exactly num_microbatches")


def _one_example_each(loss: tf.Tensor, num_microbatches):
  """The number of microbatches, refusing any batch whose size is not it (module docstring)."""
  if num_microbatches is None:
    return tf.shape(loss)[0]
  if loss.shape[0] is not None and loss.shape[0] != num_microbatches:
    raise ValueError(f"{ONE_EXAMPLE_PER_MICROBATCH} (a batch of {loss.shape[0]}, "
                     f"num_microbatches={num_microbatches})")
  tf.debugging.assert_equal(tf.shape(loss)[0], num_microbatches,
                            message=ONE_EXAMPLE_PER_MICROBATCH)
  return num_microbatches


def _check_per_example(loss: tf.Tensor) -> None:
  if loss.shape.rank == 0:
    raise ValueError(
        "the loss is a scalar: DP optimizers need one loss per example, e.g. "
        "tf.keras.losses.CategoricalCrossentropy(from_logits=True, "
        "reduction=tf.keras.losses.Reduction.NONE)")


class GroupedDPKerasSGDOptimizer(GroupedClippingMixin, dp_keras.DPSGD):
  """TF Privacy's DPKerasSGDOptimizer with `clip_groups` (None, 'layer' or K) and secret noise."""


class GroupedDPKerasAdamOptimizer(GroupedClippingMixin, dp_keras.DPAdam):
  """TF Privacy's DPKerasAdamOptimizer with `clip_groups` (None, 'layer' or K) and secret noise."""


class GroupedDPKerasAdagradOptimizer(GroupedClippingMixin, dp_keras.DPAdagrad):
  """TF Privacy's DPKerasAdagradOptimizer with `clip_groups` (None, 'layer' or K) and secret
  noise."""


class GroupedDPKerasRMSpropOptimizer(GroupedClippingMixin, dp_keras.DPRMSprop):
  """DP-RMSprop (TF Privacy's class factory) with `clip_groups` (None, 'layer' or K) and secret
  noise."""
