"""Learning-rate schedules by name, over the run's planned logical steps.

The schedule reads only the step counter: public, no privacy cost.

>>> round(float(make_schedule("cosine", 0.1, total_steps=10, end_learning_rate=0.01)(10)), 6)
0.01
"""

from typing import Callable, Dict, Union

import tensorflow as tf

from tfdp import names

LearningRate = Union[float, tf.keras.optimizers.schedules.LearningRateSchedule]


def _constant(learning_rate, total_steps, end_learning_rate, warmup_steps):
  del total_steps, end_learning_rate, warmup_steps
  return learning_rate


def _cosine(learning_rate, total_steps, end_learning_rate, warmup_steps):
  del warmup_steps
  return tf.keras.optimizers.schedules.CosineDecay(
      learning_rate, decay_steps=max(total_steps, 1), alpha=end_learning_rate / learning_rate)


def _warmup_cosine(learning_rate, total_steps, end_learning_rate, warmup_steps):
  return tf.keras.optimizers.schedules.CosineDecay(
      0.0, decay_steps=max(total_steps - warmup_steps, 1),
      alpha=end_learning_rate / learning_rate, warmup_target=learning_rate,
      warmup_steps=warmup_steps)


LR_SCHEDULES: Dict[str, Callable[..., LearningRate]] = {
    "constant": _constant,
    "cosine": _cosine,  # From the learning rate down to end_learning_rate at the last step.
    "warmup_cosine": _warmup_cosine,  # Linear from 0 over warmup_steps, then cosine.
}


def check_name(name: str) -> None:
  """Raises ValueError, listing the valid names, unless `name` is a key of LR_SCHEDULES."""
  names.check("lr_schedule", name, LR_SCHEDULES)


def make_schedule(name: str, learning_rate: float, total_steps: int,
                  end_learning_rate: float = 0.0, warmup_steps: int = 0) -> LearningRate:
  """The learning rate (a float or a Keras schedule of the optimizer's step counter)."""
  check_name(name)
  if warmup_steps >= total_steps and name == "warmup_cosine":
    raise ValueError(f"warmup of {warmup_steps} steps leaves nothing of {total_steps} to decay")
  return LR_SCHEDULES[name](learning_rate, total_steps, end_learning_rate, warmup_steps)
