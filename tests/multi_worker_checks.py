"""The private step over two worker processes (MultiWorkerMirroredStrategy on localhost).

tests/test_sharded_sampler.py starts `python -m tests.multi_worker_checks` once per worker, each
with its TF_CONFIG; every process prints one JSON line. Both checks share one cluster, since
starting TensorFlow and the cluster is most of the time:
- the clipped sum: one step at σ = 0 and learning rate 1, each worker holding the examples of its
  shard (index % workers) of one drawn batch, in different numbers of chunks; the update must be
  the brute-force clipped sum of the whole batch (one example at a time) over the expected batch;
- the noise: steps of a model whose every gradient is 0, each worker with its own secret coins;
  every update is the noise, whose std must be σC once per step (not once per worker) and which
  must be the same on every worker (the chief's key).
"""

import hashlib
import json

import numpy as np
import tensorflow as tf

from tests import distributed_checks
from tests import dp_reference as ref
from tfdp import optimizers
from tfdp.training import distribution
from tfdp.training import steps

CLIP = 0.5
EXAMPLES, EXPECTED_BATCH, ROWS = 9, 6, 2  # 5 and 4 examples: 3 and 2 chunks of 2 rows.
SIGMA, NOISE_CLIP, NOISE_BATCH, NOISE_STEPS = 2.0, 1.5, 8, 100


def _digest(model):
  return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.trainable_variables)
                        ).hexdigest()


def _dense_model():
  """Two dense layers, deterministic weights: per-example gradients differ in norm."""
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input((6, 6, 2))
  hidden = tf.keras.layers.Dense(8, activation="tanh")(tf.keras.layers.Flatten()(inputs))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(hidden))


def clipped_sum(strategy, index, workers):
  images, labels = ref.batch(size=EXAMPLES)
  with strategy.scope():
    model = _dense_model()
    optimizer = optimizers.build_optimizer("dp_sgd", 1.0, l2_norm_clip=CLIP, noise_multiplier=0.0)
    step = steps.TrainStep(model, optimizer, tf.identity, private=True,
                           expected_batch_size=EXPECTED_BATCH, strategy=strategy)
  before = [v.numpy() for v in model.trainable_variables]
  mine = np.arange(index, EXAMPLES, workers)
  step(distributed_checks.padded_chunks(images[mine], labels[mine], ROWS), step=0)
  reference = _dense_model()  # The same seed: the weights before the step.
  everyone = np.ones(EXAMPLES, np.float32)
  expected = ref.clipped_sum(reference, images, labels, everyone, CLIP)
  unclipped = ref.clipped_sum(reference, images, labels, everyone, 1e9)
  errors = [float(np.max(np.abs((old - v.numpy()) - total / EXPECTED_BATCH)))
            for v, old, total in zip(model.trainable_variables, before, expected)]
  return {"errors": errors, "scales": [float(np.max(np.abs(t / EXPECTED_BATCH)))
                                       for t in expected],
          "clip_bites": not np.allclose(expected[0], unclipped[0]),
          "chunks": len(distributed_checks.padded_chunks(images[mine], labels[mine], ROWS)),
          "sum_digest": _digest(model)}


def noise_std(strategy, index, workers):
  with strategy.scope():
    inputs = tf.keras.Input((8, 8, 1))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(16, use_bias=False)(
        tf.keras.layers.Flatten()(inputs)))
    optimizer = optimizers.build_optimizer("dp_sgd", 1.0, l2_norm_clip=NOISE_CLIP,
                                           noise_multiplier=SIGMA)
    step = steps.TrainStep(model, optimizer, tf.identity, private=True,
                           expected_batch_size=NOISE_BATCH, strategy=strategy)
  mine = len(np.arange(index, NOISE_BATCH, workers))
  chunks = distributed_checks.padded_chunks(np.zeros((mine, 8, 8, 1), np.float32),
                                            np.zeros(mine, np.int64), ROWS)
  noise, last = [], model.trainable_variables[0].numpy()
  for i in range(NOISE_STEPS):
    step(chunks, step=i)  # Secret coins: a fresh key per step on each worker.
    now = model.trainable_variables[0].numpy()
    noise.append((last - now) * NOISE_BATCH)
    last = now
  noise = np.asarray(noise, np.float64)
  distinct = len({n.tobytes() for n in noise}) == len(noise)
  return {"rms_over_sigma_c": float(np.sqrt(np.mean(noise ** 2)) / (SIGMA * NOISE_CLIP)),
          "mean_over_sigma_c": float(np.mean(noise) / (SIGMA * NOISE_CLIP)),
          "samples": int(noise.size), "steps_distinct": distinct, "noise_digest": _digest(model)}


if __name__ == "__main__":
  cluster = distribution.make_strategy("multi_worker")
  task, count = distribution.worker(cluster)
  print(json.dumps({"worker": task, "workers": count, **clipped_sum(cluster, task, count),
                    **noise_std(cluster, task, count)}))
