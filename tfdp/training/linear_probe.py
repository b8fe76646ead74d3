"""DP linear probing (DP-RandP phase II): train only the head, with DP, on a frozen encoder.

    python -m tfdp.train --model=resnet20 --init_from=priors/resnet20_randp \
        --linear_probe_steps=100 --epsilon=1 ...    # probe, then the whole network (phase III)

Privacy argument. Let f be the encoder (every layer before "logits"), fixed before the probe: a
prior made from random-process images only, or a fresh initialization from the public seed; it
depends on no private example and does not change during the probe. Probe step k = 1..K releases
the head's update computed from

    g_k = Σ_{i ∈ S_k} clip_C(∇_head ℓ(head_{k-1}; f(x_i), y_i)) + N(0, σ_p² C² I),

where S_k is a Poisson sample (each example independently with probability q_p = B_p / N, from the
run's secret coins) and the noise comes from the same secret source. f(x_i) depends on x_i alone,
so adding or removing one example adds or removes at most one term, of norm at most C: each step
is the Poisson-subsampled Gaussian mechanism with noise multiplier σ_p. head_{k-1} is a function
of the earlier releases only (post-processing), so the K steps compose adaptively. Phase III
starts from (f, head_K), again post-processing of the probe's releases and public data, and its T
steps are subsampled Gaussian steps of their own (q, σ). Nothing else crosses from the probe into
phase III: the optimizer of the probe is discarded, the features (private, like the images) stay
in the local cache and are never released, and the probe's only figure, its test accuracy, is
computed from the released head and the test data. The accountant (tfdp.privacy.ledger) therefore
composes

    ComposedDpEvent([SelfComposed(PoissonSampled(q_p, Gaussian(σ_p)), K),
                     SelfComposed(PoissonSampled(q, Gaussian(σ)), T)])

under add/remove-one adjacency, by RDP (Mironov 2017, Prop. 1, adaptive composition; Mironov,
Talwar & Zhang 2019 for each subsampled Gaussian step) or PLD (Koskela et al.; dp_accounting).

Calibration rule (tfdp.training.planning.plan_probe): σ_p is given, or the smallest σ for which the K probe
steps alone spend a fraction (--probe_epsilon_fraction) of the target ε; σ of phase III is then the
smallest for which the composition of both spends at most the target.

A probe is all or nothing on disk: the run's first checkpoint (epoch 0) is written after its last
step, with the ledger recording all K steps. A run stopped during the probe has released nothing
and starts it again from the prior, with fresh coins.
"""

import dataclasses
from typing import Callable, Dict

import numpy as np
import tensorflow as tf

from tfdp import config as config_lib
from tfdp import data
from tfdp.data import feature_cache
from tfdp.dp import noise
from tfdp.dp import randomness
from tfdp import optimizers
from tfdp.priors import prior_files
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms
from tfdp.privacy.mechanisms import linear_probe as probe_mechanism
from tfdp.training import steps as steps_lib

# Probe step k asks the coins for step FIRST_STEP + k, so that under --reproducible_noise its keys
# differ from every main step's (secret coins draw fresh bits whatever the step number).
FIRST_STEP = 2**40
MAX_CHUNK = 4096  # Feature rows per compiled chunk: features are small, bigger chunks amortize.


@dataclasses.dataclass(frozen=True)
class Features:
  """The frozen encoder's features of the training and test images (private: never released)."""

  train: np.ndarray  # [N, D]
  test: np.ndarray  # [M, D]


def encoder_features(model: tf.keras.Model, dataset: data.Dataset,
                     preprocess: Callable) -> Features:
  """Features of `model`'s encoder (every layer before the head), from the cache when it has them.

  Args:
      model: A tfdp classifier ending in the Dense "logits".
      dataset: The run's data; its images are uint8 [N, H, W, C].
      preprocess: uint8 images -> the model's input, without augmentation.
  """
  encoder = prior_files.split_head(model)
  standardization = [list(dataset.mean), list(dataset.std)]
  compute = lambda images: feature_cache.features(images, encoder, preprocess, standardization)
  return Features(train=compute(dataset.train_images), test=compute(dataset.test_images))


def head_model(model: tf.keras.Model) -> tf.keras.Model:
  """A copy of the classifier's head, features [B, D] -> logits, with its current weights.

  A copy rather than the shared layer: the per-example engine reads each layer's (only) input.
  """
  head = model.get_layer(prior_files.HEAD_LAYER)
  copy = tf.keras.layers.Dense.from_config(head.get_config())
  features = tf.keras.Input(shape=head.input_shape[1:], name="features")
  probe = tf.keras.Model(features, copy(features), name=f"{model.name}_head")
  copy.set_weights(head.get_weights())
  return probe


def make_step(config: config_lib.Config, head: tf.keras.Model, noise_multiplier: float,
              batch_size: int, loss_fn: Callable, coins: randomness.Coins) -> steps_lib.TrainStep:
  """The probe's private step on `head`: flat clipping to C, Gaussian noise σ_p·C, DP-SGD."""
  optimizer = optimizers.build_optimizer(
      "dp_sgd", config.probe.learning_rate,
      dp_query=probe_mechanism.MECHANISM.make_query(
          mechanisms.Settings(l2_norm_clip=config.privacy.l2_norm_clip), noise_multiplier,
          groups=None, coordinates=0, queries=noise))
  return steps_lib.TrainStep(head, optimizer, _as_float, private=True,
                             expected_batch_size=batch_size, engine=config.privacy.clipping,
                             loss_fn=loss_fn, coins=coins)


def run(config: config_lib.Config, model: tf.keras.Model, dataset: data.Dataset,
        preprocess: Callable, ledger: ledger_lib.PrivacyLedger, loss_fn: Callable,
        coins: randomness.Coins) -> Dict[str, float]:
  """Takes the ledger's planned probe steps on `model`'s head, in place; counts them in `ledger`.

  Args:
      config: The run (its probe, clip norm, clipping engine and sampling).
      model: The classifier; only its "logits" layer changes (trained as a copy, then set).
      dataset: The private training set and the test set.
      preprocess: Test-time preprocessing of images for the encoder.
      ledger: The run's ledger, whose `probe` holds σ_p, q_p and the steps; its probe_steps end
          at the planned count.
      loss_fn: Per-example loss.
      coins: The run's coins (secret unless --reproducible_noise).

  Returns:
      {"test_accuracy": the probed head's accuracy on the test features}.
  """
  plan, num_train = ledger.probe, dataset.num_train
  batch_size = round(plan["sampling_probability"] * num_train)
  features = encoder_features(model, dataset, preprocess)
  head = head_model(model)
  step = make_step(config, head, plan["noise_multiplier"], batch_size, loss_fn, coins)
  sampler = data.make_sampler(config.data.sampling, num_train, batch_size,
                              min(batch_size, MAX_CHUNK), coins)
  print(f"Linear probe: {plan['steps']} DP steps on the head over {features.train.shape[1]} "
        f"frozen features, expected batch {batch_size}, σ = {plan['noise_multiplier']:.4f}, "
        f"lr {config.probe.learning_rate:g}", flush=True)
  while ledger.probe_steps < plan["steps"]:
    number = FIRST_STEP + ledger.probe_steps
    chunks = [data.sampling.gather_chunk(features.train, dataset.train_labels, c)
              for c in sampler.chunks(number)]
    step(chunks, step=number)
    ledger.probe_steps += 1
  model.get_layer(prior_files.HEAD_LAYER).set_weights(head.get_weights())
  evaluate = steps_lib.make_evaluate(head, _as_float, loss_fn=loss_fn)
  accuracy = evaluate(features.test, dataset.test_labels)["test_accuracy"]
  print(f"  after the probe: test accuracy {accuracy:.4f}; {ledger.describe()}", flush=True)
  return {"test_accuracy": accuracy}


def _as_float(features):
  return tf.cast(features, tf.float32)
