"""Checks of the private step over 2 logical CPU replicas, each run in a fresh process.

Logical devices can only be configured before TensorFlow starts, which a pytest worker has long
done, so tests/test_distribution.py runs `python -m tests.distributed_checks CHECK [ARG]`, and
this prints one JSON line.
"""

import json
import sys

import numpy as np
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import optimizers
from tfdp.dp import groups as groups_lib
from tfdp.training import distribution
from tfdp.training import steps

CLIP = 0.5


def _chunks(images, labels, rows):
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
  step(_chunks(images, labels, 4), step=0)  # 3 chunks: replica 0 gets 2, replica 1 one + padding.
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
  chunks = _chunks(np.zeros((batch, 4, 4, 1), np.float32), np.zeros(batch, np.int64), 2)
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


def keras_refusal():
  """make_private inside a 2-replica scope: refused with the reason."""
  import tfdp  # pylint: disable=import-outside-toplevel
  strategy = distribution.make_strategy("mirrored", 2)
  with strategy.scope():
    try:
      tfdp.keras.make_private(ref.small_conv_model(), optimizer="dp_sgd", l2_norm_clip=1.0,
                              noise_multiplier=1.0, target_delta=1e-3, epochs=1, train_size=60,
                              batch_size=20)
    except ValueError as error:
      return {"error": str(error)}
  return {"error": None}


CHECKS = {"clipped_sum": clipped_sum, "noise_std": noise_std, "keras_refusal": keras_refusal}

if __name__ == "__main__":
  print(json.dumps(CHECKS[sys.argv[1]](*sys.argv[2:])))
