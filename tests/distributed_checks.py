"""Checks of the private step over 2 logical CPU replicas, each run in a fresh process.

Logical devices can only be configured before TensorFlow starts, which a pytest worker has long
done, so tests/test_distribution.py runs `python -m tests.distributed_checks CHECK [ARG]`, and
this prints one JSON line.
"""

import contextlib
import json
import socket
import sys

import numpy as np
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import optimizers
from tfdp.dp import groups as groups_lib
from tfdp.training import distribution
from tfdp.training import steps

CLIP = 0.5


def free_ports(count):
  """`count` localhost ports free right now, for a cluster's workers."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def padded_chunks(images, labels, rows):
  """[P]-row chunks of a batch, the last padded and masked."""
  count = -(-len(images) // rows) * rows
  mask = np.zeros(count, np.float32)
  mask[:len(images)] = 1.0
  pad = lambda a: np.concatenate([a, np.zeros((count - len(a),) + a.shape[1:], a.dtype)])
  return list(zip(np.split(pad(images), count // rows), np.split(pad(labels), count // rows),
                  np.split(mask, count // rows)))


def clipped_sum(clip_groups):
  """One step at σ = 0, lr 1: the update against the single-device brute-force sum."""
  strategy = distribution.make_strategy("mirrored", 2)
  clip_groups = None if clip_groups == "None" else clip_groups
  clip_groups = int(clip_groups) if clip_groups not in (None, "layer") else clip_groups
  images, labels = ref.batch(size=10)
  with strategy.scope():
    model = ref.small_conv_model()
    optimizer = optimizers.build_optimizer("dp_sgd", 1.0, l2_norm_clip=CLIP, noise_multiplier=0.0)
    step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=6,
                           clip_groups=clip_groups, strategy=strategy)
  before = [v.numpy() for v in model.trainable_variables]
  # 3 chunks: replica 0 gets 2, replica 1 one + padding.
  step(padded_chunks(images, labels, 4), step=0)
  reference = ref.small_conv_model()
  groups = groups_lib.variable_groups(reference, clip_groups)
  expected = ref.grouped_clipped_sum(reference, images, labels, np.ones(10), CLIP, groups)
  unclipped = ref.grouped_clipped_sum(reference, images, labels, np.ones(10), 1e9, groups)
  errors = [float(np.max(np.abs((old - v.numpy()) - total / 6)))
            for v, old, total in zip(model.trainable_variables, before, expected)]
  scales = [float(np.max(np.abs(total / 6))) for total in expected]
  identical = all(np.array_equal(v.values[0].numpy(), v.values[1].numpy())
                  for v in model.trainable_variables)
  return {"errors": errors, "scales": scales, "replicas_identical": identical,
          "clip_bites": not np.allclose(expected[0], unclipped[0]),
          "replicas": strategy.num_replicas_in_sync}


def noise_std(steps_to_take):
  """Updates of a model whose gradients are all 0: noise only. Its std / (σC) and the replicas."""
  sigma, clip, batch = 2.0, 1.5, 8
  strategy = distribution.make_strategy("mirrored", 2)
  with strategy.scope():
    inputs = tf.keras.Input((4, 4, 1))
    outputs = tf.keras.layers.Dense(10, use_bias=False)(tf.keras.layers.Flatten()(inputs))
    model = tf.keras.Model(inputs, outputs)
    optimizer = optimizers.build_optimizer("dp_sgd", 1.0, l2_norm_clip=clip,
                                           noise_multiplier=sigma)
    step = steps.TrainStep(model, optimizer, tf.identity, private=True,
                           expected_batch_size=batch, strategy=strategy)
  chunks = padded_chunks(np.zeros((batch, 4, 4, 1), np.float32), np.zeros(batch, np.int64), 2)
  noise, last = [], model.get_weights()[0]
  for i in range(int(steps_to_take)):
    step(chunks, step=i)
    now = model.get_weights()[0]
    noise.append((last - now) * batch)
    last = now
  kernel = model.trainable_variables[0]
  return {"std_over_sigma_c": float(np.std(noise) / (sigma * clip)),
          "mean_over_sigma_c": float(np.mean(noise) / (sigma * clip)),
          "samples": int(np.size(noise)),
          "replicas_identical": bool(np.array_equal(kernel.values[0].numpy(),
                                                    kernel.values[1].numpy()))}


def keras_fit(noise_multiplier):
  """make_private + fit inside a 2-replica scope: one step at σ = 0 against brute force, or the
  noise of a zero-gradient model over many steps; and whether the replicas stay identical."""
  import tfdp  # pylint: disable=import-outside-toplevel
  from tfdp.dp import randomness  # pylint: disable=import-outside-toplevel
  strategy = distribution.make_strategy("mirrored", 2)
  sigma = float(noise_multiplier)
  zero = sigma > 0.01  # The noise check: a model whose every gradient is 0.
  images, labels = ref.batch(size=12)
  if zero:
    images, labels = np.zeros((64, 4, 4, 1), np.float32), np.zeros(64, np.int64)
  batch = 8 if zero else 6
  with strategy.scope():
    model = ref.small_conv_model()
    if zero:
      inputs = tf.keras.Input((4, 4, 1))
      model = tf.keras.Model(inputs, tf.keras.layers.Dense(10, use_bias=False)(
          tf.keras.layers.Flatten()(inputs)))
    private = tfdp.keras.make_private(
        model, optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=CLIP if not zero else 1.5,
        noise_multiplier=sigma, target_delta=1e-3, epochs=1, train_size=len(images),
        batch_size=batch)
    private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  kernel = private.trainable_variables[0]
  before = [v.numpy() for v in private.trainable_variables]
  updates = []
  record = tf.keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda batch_index, logs: updates.append(kernel.numpy().copy()))
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=batch, physical_batch_size=2,
                                        seed=5),
              epochs=50 if zero else 1, steps_per_epoch=None if zero else 1, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False), record])
  identical = all(np.array_equal(v.values[0].numpy(), v.values[1].numpy())
                  for v in private.trainable_variables)
  if zero:
    noise = np.diff(np.stack([before[0]] + updates), axis=0) * batch
    return {"std_over_sigma_c": float(np.std(noise) / (sigma * 1.5)), "samples": noise.size,
            "replicas_identical": identical}
  drawn = randomness.ReproducibleCoins(5).inclusion(0, 12, 0.5).astype(np.float32)
  expected = ref.clipped_sum(ref.small_conv_model(), images, labels, drawn, CLIP)
  errors = [float(np.max(np.abs((old - v.numpy()) - total / 6)))
            for v, old, total in zip(private.trainable_variables, before, expected)]
  return {"errors": errors, "scales": [float(np.max(np.abs(t / 6))) for t in expected],
          "drawn": int(drawn.sum()), "replicas_identical": identical,
          "steps": int(private.privacy_steps.numpy())}


def _build_for(option, strategy):
  """Model, optimizer and step with `option`'s state, under `strategy` (None: one device)."""
  from tfdp.dp import noise  # pylint: disable=import-outside-toplevel
  from tfdp.dp import randomness  # pylint: disable=import-outside-toplevel
  from tfdp.training import ema  # pylint: disable=import-outside-toplevel
  with strategy.scope() if strategy else contextlib.nullcontext():
    model = ref.small_conv_model()
    if option == "dice":
      optimizer = optimizers.build_optimizer("dice_sgd", 0.5, l2_norm_clip=CLIP,
                                             noise_multiplier=1.0, error_clip=2 * CLIP)
    elif option == "adaptive":
      optimizer = optimizers.build_optimizer("dp_sgd", 0.5, dp_query=noise.adaptive(
          CLIP, 1.0, target_quantile=0.5, learning_rate=0.2, count_stddev=2.0,
          expected_batch_size=6))
    else:
      optimizer = optimizers.build_optimizer("dp_adam", 0.05, l2_norm_clip=CLIP,
                                             noise_multiplier=1.0)
    average = ema.WeightAverage(model, 0.9) if option == "ema" else None
    step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=6,
                           weight_average=average, coins=randomness.ReproducibleCoins(7),
                           strategy=strategy)
  return model, optimizer, average, step


def _state(model, optimizer, average, option):
  """Everything the steps change, as arrays of this process's first replica."""
  first = lambda v: (v.values[0] if hasattr(v, "values") else v).numpy()
  state = [first(v) for v in model.trainable_variables]
  if option == "ema":
    state += [first(v) for v in average.averages]
  if option == "dice":
    state += [e.numpy() for e in optimizer.error]
  if option == "adaptive":
    state.append(np.array(optimizer.clip_norm()))
  if option == "schedule":
    state += [first(v) for v in optimizer.variables()]
  return state


def same_as_one_device(*options):
  """Per option, three steps with the same chunks and noise keys on one device and on two
  replicas (all options in one process: starting TensorFlow is most of a check's time)."""
  strategy = distribution.make_strategy("mirrored", 2)
  return {option: _same_as_one_device(option, strategy) for option in options}


def _same_as_one_device(option, strategy):
  images, labels = ref.batch(size=10)
  states, moved = [], None
  for where in (None, strategy):
    model, optimizer, average, step = _build_for(option, where)
    initial = model.get_weights()[0]
    for i in range(3):
      if option == "schedule":
        step.set_noise_factor(1.0 / (i + 1))
      step(padded_chunks(images, labels, 4), step=i)
    states.append(_state(model, optimizer, average, option))
    moved = moved or float(np.max(np.abs(model.get_weights()[0] - initial)))
  errors = [float(np.max(np.abs(a - b))) for a, b in zip(*states)]
  scales = [float(np.max(np.abs(a))) for a in states[0]]
  return {"errors": errors, "scales": scales, "compared": len(errors), "moved": moved}


CHECKS = {"clipped_sum": clipped_sum, "noise_std": noise_std, "keras_fit": keras_fit,
          "same_as_one_device": same_as_one_device}

if __name__ == "__main__":
  print(json.dumps(CHECKS[sys.argv[1]](*sys.argv[2:])))
