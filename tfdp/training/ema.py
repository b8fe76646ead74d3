"""Exponential moving average of the weights (Polyak averaging), the studies' EMA.

The average reads only the weights, which are already differentially private: post-processing,
no privacy cost. Evaluation and export use the averaged weights when a run has --ema_decay.
"""

import contextlib

import tensorflow as tf


class WeightAverage(tf.Module):
  """EMA of a model's trainable weights with the warm-up rate min(decay, (1 + t) / (10 + t)).

  Args:
    model: the model whose trainable variables are averaged.
    decay: the asymptotic decay in (0, 1), e.g. 0.999.
  """

  def __init__(self, model: tf.keras.Model, decay: float):
    super().__init__(name="weight_average")
    if not 0 < decay < 1:
      raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    self._model = model
    self.decay = decay
    # Under tf.distribute every replica computes the same update: keep the first's.
    self.averages = [tf.Variable(v, trainable=False, name="ema", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                     for v in model.trainable_variables]
    self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates",
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def restart(self) -> None:
    """Starts the average again from the current weights (after weights changed outside steps)."""
    for average, variable in zip(self.averages, self._model.trainable_variables):
      average.assign(variable)
    self.updates.assign(0)

  def rate(self) -> tf.Tensor:
    """The decay of the next update: min(decay, (1 + t) / (10 + t)), t = updates so far."""
    t = tf.cast(self.updates, tf.float32)
    return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))

  def update(self) -> None:
    """average <- rate * average + (1 - rate) * weights, for every trainable variable."""
    rate = self.rate()
    for average, variable in zip(self.averages, self._model.trainable_variables):
      average.assign(rate * average + (1.0 - rate) * variable)
    self.updates.assign_add(1)

  @contextlib.contextmanager
  def applied(self):
    """Within the block the model holds the averaged weights; the live ones come back after."""
    live = [tf.identity(v) for v in self._model.trainable_variables]
    for variable, average in zip(self._model.trainable_variables, self.averages):
      variable.assign(average)
    try:
      yield self._model
    finally:
      for variable, value in zip(self._model.trainable_variables, live):
        variable.assign(value)
