"""The compiled pieces of one training step and of evaluation.

A logical step takes the Poisson-drawn batch in fixed-shape physical chunks (so tf.function and XLA see
one shape, and a draw larger than a chunk is never truncated). Each chunk adds its masked, clipped
gradient sum into per-step accumulator variables inside its compiled function; once all chunks are
in, the DP optimizer adds noise once, applies the update and zeroes the accumulators. The host reads
nothing from the device during a step, and once after it (the monitoring sums), so a step on an
accelerator never waits on a host round trip between chunks.

The accumulators hold one step's clipped sums only: they are zeroed when the step's update is
applied, and when a step fails part-way, so nothing of one step's examples reaches another's update.
"""

import dataclasses
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfdp.dp import clipping
from tfdp.dp import groups as groups_lib
from tfdp.dp import randomness
from tfdp import precision
from tfdp.serving import metrics
from tfdp.training import distribution


class TrainStep:
  """Runs logical steps: chunks -> clipped sums -> one noised update.

  Args:
    model: Keras model mapping preprocessed images to logits.
    optimizer: a DP optimizer from tfdp.optimizers (private) or a Keras baseline. A DP optimizer's
      query fixes the clip bound (constant or adaptive) and the noise.
    preprocess: uint8 images [P, H, W, C] -> float32, with training augmentation.
    private: whether to clip and noise.
    expected_batch_size: q * N, the public divisor of the noised sum (private only).
    engine: per-example clipping engine name (tfdp.dp.clipping.CLIPPING_ENGINES).
    clip_groups: None (flat clipping), an int K or 'layer' (tfdp.dp.groups).
    scaling: per-example rule, tfdp.dp.groups.Scaling (clip by default, or normalize).
    norm: 'l2' (Gaussian noise) or 'l1' (Laplace noise), the norm each example is clipped in.
    augmult: augmented copies of each example (De et al. 2022); its gradient is the mean over its
      copies, clipped as one, so the sensitivity is unchanged.
    weight_decay: λ, adds λ·w to the (noised) gradient: post-processing, no privacy cost.
    weight_average: a tfdp.training.ema.WeightAverage updated after every step, or None.
    jit_compile: compile the chunk computation with XLA.
    loss_fn: per-example loss (tfdp.dp.losses).
    coins: the mechanism's coins (tfdp.dp.randomness); each step's noise is keyed by
      coins.noise_seed(step). Default: fresh SecretCoins.
    strategy: a tf.distribute strategy whose scope built the model and optimizer, or None (one
      device). Each step's chunks are dealt out to its replicas, their clipped sums all-reduced,
      and every replica applies the same noised update (tfdp.training.distribution).
    loss_scale: S, a public power of two (tfdp.precision): the engines differentiate S times each
      loss and clip at S C, and the sums, losses and norms are divided by S, which gives the
      unscaled values while a float16 backward pass keeps small gradients from flushing to zero.
  """

  def __init__(self, model: tf.keras.Model, optimizer, preprocess: Callable, *, private: bool,
               expected_batch_size: float = 1.0, engine: str = "fast", clip_groups=None,
               scaling=None, norm: str = "l2", augmult: int = 1, weight_decay: float = 0.0,
               weight_average=None, jit_compile: bool = False,
               loss_fn: Callable = clipping.per_example_loss,
               coins: Optional[randomness.Coins] = None,
               strategy: Optional[tf.distribute.Strategy] = None, loss_scale: float = 1.0):
    self._model = model
    self._optimizer = optimizer
    self._preprocess = preprocess
    self._loss_fn = precision.float32_loss(loss_fn)  # Mixed precision: the loss in float32.
    self._loss_scale = float(loss_scale)
    self._scaled_loss_fn = precision.scaled_loss(self._loss_fn, self._loss_scale)
    # Overflow under float16 is expected now and then: a non-private chunk whose gradient is not
    # finite is skipped, as Keras's loss-scale optimizer skips such a step.
    self._skip_non_finite = precision.computes_in_float16(model)
    self._private = private
    self._expected_batch_size = float(expected_batch_size)
    self._augmult = augmult
    self._weight_decay = weight_decay
    self._weight_average = weight_average
    self._coins = coins or randomness.SecretCoins()
    self._steps_taken = 0  # Keys the noise when the caller does not say which step this is.
    self._strategy = strategy
    self.engine = None
    if private:
      self.engine = clipping.make_engine(
          engine, model, clip_groups, _scaled(scaling or groups_lib.Scaling(), loss_scale), norm,
          augmult)
      optimizer.track_variables(model.trainable_variables)
    # The update rule's slots exist before the first trace: a tf.function whose first trace
    # creates variables is traced a second time, which doubles the compile time of a step.
    optimizer._create_all_weights(model.trainable_variables)  # pylint: disable=protected-access
    self._totals = [tf.Variable(tf.zeros_like(v), trainable=False, name="clipped_sum")
                    for v in model.trainable_variables]
    self._extra_totals = self._make_extra_totals()
    self._monitor_totals = tf.Variable(tf.zeros([3]), trainable=False,
                                       name="loss_correct_count")
    self._chunk = tf.function(self._chunk_add, jit_compile=jit_compile)
    self._step = None  # Traced on the first call, for any number of stacked chunks (_step_for).
    self._apply = tf.function(self._apply_update)
    self._reset = tf.function(self._zero_totals)
    # The multi-device path; also what a replica context someone else runs calls (replica_step).
    self._replicated = distribution.ReplicatedStep(self._chunk_sum, self._zero_sums,
                                                   self._update_with, strategy)

  def _make_extra_totals(self) -> Dict[str, object]:
    """Accumulators for what the optimizer's noise needs besides the clipped sums (private only)."""
    extras = {}
    if self._private and self._optimizer.adaptive:
      extras["centered_unclipped_count"] = tf.Variable(0.0, trainable=False)
    if self._private and self._optimizer.needs_plain_sum:
      extras["plain_sum"] = [tf.Variable(tf.zeros_like(v), trainable=False)
                             for v in self._model.trainable_variables]
    return extras

  def _chunk_sum(self, images, labels, mask):
    # Copies are example-major, so each copy is augmented independently by the preprocessing.
    inputs = self._preprocess(groups_lib.repeat_rows(images, self._augmult))
    labels = groups_lib.repeat_rows(labels, self._augmult)
    row_weight = groups_lib.repeat_rows(mask, self._augmult) / self._augmult  # Mean over copies.
    extras = {}
    if self._private:
      clip = self._optimizer.clip_norm()
      sums, losses, logits, norms = self._unscaled(*self.engine(
          self._scaled_loss_fn, inputs, labels, mask, clip * self._loss_scale))
      if self._optimizer.adaptive:  # Each example adds 1/2 or -1/2: sensitivity 1/2.
        extras["centered_unclipped_count"] = tf.reduce_sum(
            (tf.cast(norms <= clip, tf.float32) - 0.5) * mask)
      if self._optimizer.needs_plain_sum:
        extras["plain_sum"] = self._plain_sum(inputs, labels, row_weight)[0]
    else:
      sums, losses, logits = self._plain_sum(inputs, labels, row_weight)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=1), _class_indices(labels)), tf.float32)
    return sums, extras, tf.reduce_sum(losses * row_weight), tf.reduce_sum(correct * row_weight)

  def _unscaled(self, sums, losses, logits, *norms):
    """An engine's or plain_sum's results with the loss scale divided out (exact: a power of 2)."""
    if self._loss_scale == 1:
      return (sums, losses, logits, *norms)
    scale = self._loss_scale
    return ([s / scale for s in sums], losses / scale, logits, *(n / scale for n in norms))

  def _plain_sum(self, inputs, labels, row_weight):
    """Non-private gradient sum, loss and logits (a non-finite one skipped under float16)."""
    sums, losses, logits = self._unscaled(*clipping.plain_sum(
        self._model, self._scaled_loss_fn, inputs, labels, row_weight))
    if self._skip_non_finite:
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(s)) for s in sums])
      sums = [tf.where(finite, s, tf.zeros_like(s)) for s in sums]
    return sums, losses, logits

  def _chunk_add(self, images, labels, mask):
    sums, extras, loss_sum, correct = self._chunk_sum(images, labels, mask)
    for total, value in zip(self._totals, sums):
      total.assign_add(value)
    tf.nest.map_structure(lambda total, value: total.assign_add(value), self._extra_totals, extras)
    self._monitor_totals.assign_add(tf.stack([loss_sum, correct, tf.reduce_sum(mask)]))

  def _whole_step(self, images, labels, masks, noise_seed):
    """A logical step in one call: [n, P, ...] stacked chunks, a loop over n, then the update."""
    for i in tf.range(tf.shape(masks)[0]):
      self._chunk(images[i], labels[i], masks[i])
    return self._apply_update(noise_seed)

  def _zero_totals(self):
    for total in tf.nest.flatten(self._totals) + tf.nest.flatten(self._extra_totals):
      total.assign(tf.zeros_like(total))
    self._monitor_totals.assign(tf.zeros([3]))

  def _read_totals(self):
    """(clipped sums, extras, [loss sum, correct, count]) as tensors, from the accumulators."""
    return ([tf.identity(t) for t in self._totals],
            tf.nest.map_structure(tf.identity, self._extra_totals),
            tf.identity(self._monitor_totals))

  def _apply_update(self, noise_seed):
    """Noises and applies the accumulated step, zeroes the accumulators; returns the monitor sums."""
    sums, extras, monitored = self._read_totals()
    self._update_with(sums, extras, monitored, noise_seed)
    self._zero_totals()  # After the reads above: tf.function orders ops on a variable as written.
    return monitored

  def _update_with(self, sums, extras, monitored, noise_seed, aggregate: bool = True) -> None:
    """The noised mean of one step's clipped sums, applied; `aggregate`: let the optimizer
    all-reduce the gradients (False when every replica already holds the same ones)."""
    count = monitored[2]
    if self._private:
      gradients = self._optimizer.noised_mean(sums, self._expected_batch_size,
                                              noise_seed=noise_seed, **extras)
    else:
      gradients = [s / tf.maximum(count, 1.0) for s in sums]
    if self._weight_decay:  # Data-independent, applied after the noise.
      gradients = [g + self._weight_decay * v
                   for g, v in zip(gradients, self._model.trainable_variables)]
    self._optimizer.apply_gradients(zip(gradients, self._model.trainable_variables),
                                    experimental_aggregate_gradients=aggregate)
    if self._weight_average is not None:
      self._weight_average.update()

  def _zero_sums(self):
    """Zeros shaped like a step's (clipped sums, extras, [loss sum, correct, count])."""
    return ([tf.zeros_like(v) for v in self._model.trainable_variables],
            tf.nest.map_structure(tf.zeros_like, self._extra_totals), tf.zeros([3]))

  def replica_step(self, images, labels, masks, noise_seed) -> tf.Tensor:
    """One replica's share of a logical step, from inside a replica context (Keras's `fit` under
    a strategy): tfdp.training.distribution.ReplicatedStep.replica_step, with this step's
    clipping, noise and update. Returns the [3] monitor sums over all replicas."""
    return self._replicated.replica_step(images, labels, masks, noise_seed)

  def set_noise_factor(self, factor: float) -> None:
    """Multiplies every noise std of the next steps by `factor` (a noise schedule; private only)."""
    self._optimizer.noise_scale.assign(factor)

  def _add_chunks(self, chunks) -> None:
    """Adds every chunk into the accumulators, one call per chunk (any shapes)."""
    for images, labels, mask in chunks:
      self._chunk(images, labels, mask)

  def accumulate(self, chunks: Iterable[Tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Sums over chunks, applying nothing: (clipped gradient sums, extras for the noise, loss sum,
    correct, count). For inspection and tests; the accumulators are zeroed again."""
    try:
      self._add_chunks(chunks)
      total, extras, monitored = self._read_totals()
    finally:
      self._reset()
    loss_sum, correct, count = (float(v) for v in monitored.numpy())
    return total, extras, loss_sum, correct, count

  def clipped_sum(self, chunks: Iterable[Tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Sum over chunks of (clipped gradient sums, loss sum, correct count, example count)."""
    total, _, loss_sum, correct, count = self.accumulate(chunks)
    return total, loss_sum, correct, count

  def _step_for(self, stacked, noise_seed):
    """The whole-step function, traced once: the number of chunks (Poisson's draw decides it)
    is left unknown in its signature, so a new draw never costs a new trace."""
    if self._step is None:
      signature = [tf.TensorSpec((None,) + tuple(array.shape[1:]), tf.as_dtype(array.dtype))
                   for array in stacked]
      signature.append(tf.TensorSpec(noise_seed.shape, noise_seed.dtype))
      self._step = tf.function(self._whole_step, input_signature=signature)
    return self._step

  def step_in_graph(self, images, labels, masks, noise_seed) -> tf.Tensor:
    """One logical step from inside a compiled function (Keras's `fit`), on stacked chunks.

    Args:
      images: [n, P, ...] tensor, n chunks of P rows. Private.
      labels: [n, P, ...] tensor. Private.
      masks: [n, P] float32, 1 for real examples and 0 for padding.
      noise_seed: [2] int64, the step's secret noise key (tfdp.dp.randomness.SecretKeyStream).

    Returns:
      [3] float32: loss sum, correct predictions and real examples, for monitoring only
      (computed from private data without noise).
    """
    stacked = [images, labels, masks]
    return self._step_for(stacked, noise_seed)(*stacked, noise_seed)

  def __call__(self, chunks, step: Optional[int] = None) -> Tuple[float, float, float]:
    """One logical step over `chunks` of (uint8 images [P,...], labels [P], mask [P]).

    `step` (default: the calls so far) selects the noise key under reproducible coins; secret
    coins ignore it and draw a fresh key.

    Returns:
      (loss sum, correct predictions, real examples) over the step, for monitoring only: these
      are computed from private data without noise and never feed back into training.
    """
    step = self._steps_taken if step is None else step
    noise_seed = tf.constant(self._coins.noise_seed(step), tf.int64)
    try:
      if self._strategy is not None:
        monitored = self._replicated([np.stack(parts) for parts in zip(*chunks)], noise_seed)
      elif len({np.shape(chunk[0]) for chunk in chunks}) == 1:  # Training's case: one call.
        stacked = [np.stack(parts) for parts in zip(*chunks)]
        monitored = self._step_for(stacked, noise_seed)(*stacked, noise_seed)
      else:
        self._add_chunks(chunks)
        monitored = self._apply(noise_seed)
    except BaseException:
      self._reset()
      raise
    self._steps_taken += 1
    loss_sum, correct, count = (float(v) for v in monitored.numpy())  # The step's one host read.
    return loss_sum, correct, count


def _scaled(scaling: groups_lib.Scaling, loss_scale: float) -> groups_lib.Scaling:
  """The per-example rule for gradients S times larger: normalize's gamma times S, so that its
  factor C S / (S n + S gamma) is the unscaled one; clip needs nothing."""
  return dataclasses.replace(scaling, gamma=scaling.gamma * loss_scale)


def _class_indices(labels):
  """Integer class labels [P] from integer labels [P] or one-hot / probability labels [P, K]."""
  if labels.shape.rank is not None and labels.shape.rank > 1:
    return tf.argmax(labels, axis=-1)
  return tf.cast(labels, tf.int64)


def make_evaluate(model: tf.keras.Model, preprocess: Callable, batch_size: int = 500,
                  loss_fn: Callable = clipping.per_example_loss):
  """Returns evaluate(images uint8 [M,...], labels [M]) -> dict of held-out metrics.

  The dict has test_loss (mean), test_accuracy, test_balanced_accuracy (mean per-class recall: the
  honest number on imbalanced classes) and test_auc (ROC AUC of class 1 for two classes, macro
  one-vs-rest otherwise; None when a class is absent from the labels).
  """

  @tf.function
  def batch_outputs(images, labels):
    logits = precision.to_float32(model(preprocess(images), training=False))
    return tf.reduce_sum(loss_fn(labels, logits)), tf.nn.softmax(logits)

  def evaluate(images: np.ndarray, labels: np.ndarray) -> Dict[str, Optional[float]]:
    loss_sum, probabilities = 0.0, []
    for start in range(0, len(images), batch_size):
      batch_loss, batch_probabilities = batch_outputs(images[start:start + batch_size],
                                                      labels[start:start + batch_size])
      loss_sum += float(batch_loss)
      probabilities.append(batch_probabilities.numpy())
    return {"test_loss": loss_sum / len(images),
            **metrics.classification_metrics(labels, np.concatenate(probabilities))}

  return evaluate

