"""The mechanism's coins (tfdp.dp.randomness): secret by default, reproducible only on request.

The argument under test: a default run's batches and noise cannot be recomputed from anything it
releases (its seed included), while --reproducible_noise makes two runs repeat exactly and says so.
"""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config as config_lib
from tfdp.dp import randomness
from tfdp.privacy import mechanisms
from tfdp import optimizers
from tfdp.training import loop as training
from tfdp.training import steps


def _one_step_update(coins, seed=0):
  """The weights after one noised step of a fixed model on a fixed batch."""
  model = ref.small_conv_model(seed=seed)
  images, labels = ref.batch()
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.5, noise_multiplier=1.0)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=6.0,
                         coins=coins)
  step([(images, labels, np.ones(len(images), np.float32))], step=0)
  return np.concatenate([v.numpy().ravel() for v in model.trainable_variables])


def test_same_seed_gives_different_noise_by_default_and_the_same_when_reproducible():
  first, second = _one_step_update(None), _one_step_update(None)  # TrainStep's default coins.
  assert not np.allclose(first, second)  # Same seed, same init, same batch: only noise differs.
  repeated = [_one_step_update(randomness.ReproducibleCoins(7)) for _ in range(2)]
  np.testing.assert_array_equal(repeated[0], repeated[1])
  assert not np.allclose(repeated[0], _one_step_update(randomness.ReproducibleCoins(8)))


def test_noise_outside_a_keyed_step_is_refused():
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=1.0, noise_multiplier=1.0)
  query, state = optimizer._dp_sum_query, optimizer._global_state  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="keyed_noise"):
    query.get_noised_result([tf.zeros([3])], state)


def test_optimizers_refuse_queries_that_draw_from_the_public_seed():
  from tfdp.compat.tf_privacy import gaussian_query  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="GaussianSumQuery.*secret coins"):
    optimizers.build_optimizer("dp_sgd", 0.1,
                               dp_query=gaussian_query.GaussianSumQuery(1.0, 1.0))


def test_keyed_draws_are_a_function_of_the_key_and_differ_within_a_step():
  key = tf.constant([3, 4], tf.int64)
  with randomness.keyed_noise(key):
    a, b = randomness.gaussian([1000], 1.0), randomness.gaussian([1000], 1.0)
  with randomness.keyed_noise(key):
    again = randomness.gaussian([1000], 1.0)
  np.testing.assert_array_equal(a.numpy(), again.numpy())
  assert not np.allclose(a.numpy(), b.numpy())  # Two tensors of one step: independent draws.


def _digits_config(output_dir, **run):
  return config_lib.Config(
      data=config_lib.DataConfig(dataset="digits"),
      model=config_lib.ModelConfig(name="linear"),
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(batch_size=256, epochs=1, output_dir=str(output_dir),
                               export=False, **run))


def _final_weights(output_dir):
  reader = tf.train.load_checkpoint(os.path.join(output_dir, "checkpoints"))
  names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("model/"))
  return np.concatenate([np.ravel(reader.get_tensor(n)) for n in names])


def test_two_runs_with_one_seed_differ_unless_reproducible(tmp_path):
  runs = {}
  for name, reproducible in (("a", False), ("b", False), ("c", True), ("d", True)):
    metrics = training.train_and_evaluate(
        _digits_config(tmp_path / name, reproducible_noise=reproducible))
    runs[name] = (_final_weights(tmp_path / name), metrics)
  assert not np.allclose(runs["a"][0], runs["b"][0])
  np.testing.assert_array_equal(runs["c"][0], runs["d"][0])
  assert runs["a"][1]["randomness"] == "secret"
  reproducible_metrics = runs["c"][1]
  assert reproducible_metrics["randomness"] == "reproducible"
  assert "no DP guarantee against anyone who knows" in reproducible_metrics["privacy_statement"]
  assert runs["a"][1]["epsilon"] == reproducible_metrics["epsilon"]  # Same mechanism, same ε.
  tail = runs["a"][1]["delta_float_tail"]  # (1 + e^ε) · steps · d · 2^-106 for the float64 noise.
  assert 0 < tail < 1e-20 and "δ + " in runs["a"][1]["privacy_statement"]


def _released_files(*directories):
  for directory in directories:
    for root, _, files in os.walk(directory):
      for name in files:
        yield os.path.join(root, name)


def _forms(key: np.ndarray):
  """The ways a [2] int64 key could be written down: raw bytes, decimal and hex of each word."""
  words = [int(w) for w in key]
  yield key.tobytes()
  for word in words:
    for text in (str(word), str(word & (2**64 - 1)), format(word & (2**64 - 1), "x")):
      if len(text) >= 8:  # Shorter numbers occur by chance in any file.
        yield text.encode()
  yield json.dumps(words).encode()


def test_released_files_hold_no_value_of_the_secret(tmp_path, monkeypatch):
  drawn = []
  original = randomness.SecretCoins.noise_seed

  def recording(self, step):
    key = original(self, step)
    drawn.append(key.copy())
    return key

  monkeypatch.setattr(randomness.SecretCoins, "noise_seed", recording)
  config = _digits_config(tmp_path / "run")
  config = dataclasses.replace(config, run=dataclasses.replace(
      config.run, export=True, export_dir=str(tmp_path / "export")))
  training.train_and_evaluate(config)
  assert len(drawn) == 6  # ceil(1437 / 256) steps, each with its own key.
  assert len({k.tobytes() for k in drawn}) == len(drawn)
  files = list(_released_files(tmp_path / "run", tmp_path / "export"))
  names = {os.path.basename(f) for f in files}
  assert {"metrics.json", "run_spec.json", "state.json"} <= names
  assert any("events.out.tfevents" in n for n in names)
  assert any(n.startswith("model_card") for n in names)
  for path in files:
    with open(path, "rb") as f:
      content = f.read()
    for key in drawn:
      for form in _forms(key):
        assert form not in content, f"{path} holds a noise key"


def _extreme_draws(monkeypatch, sampler):
  """`sampler`'s draw when every random bit is 0: the smallest uniforms, so the largest radius
  (Box-Muller) or magnitude (Laplace) it can ever produce, at a zero angle or a negative sign."""
  monkeypatch.setattr(tf.random, "stateless_uniform",
                      lambda shape, *args, **kwargs: tf.zeros(shape, tf.uint64))
  with randomness.keyed_noise(tf.constant([0, 0], tf.int64)):
    return float(np.max(np.abs(sampler([4], 1.0).numpy())))


def test_the_stated_gaussian_tail_covers_the_samplers_actual_support(monkeypatch):
  """Box-Muller caps the radius R, not each coordinate: where the sampler differs from the ideal
  Gaussian is the event R > its largest radius, of ideal probability exp(-R_max² / 2) per
  coordinate. The tail added to δ must be at least that (erfc(R_max / √2) is not)."""
  largest = _extreme_draws(monkeypatch, randomness.gaussian)
  assert largest == pytest.approx(mechanisms.GAUSSIAN_MAX, rel=1e-12)
  assert mechanisms.GAUSSIAN_TAIL >= math.exp(-largest ** 2 / 2) * (1 - 1e-9)
  ledger_tail = mechanisms.float_tail_delta(3.0, steps=2000, coordinates=272_474, noise="gaussian")
  assert ledger_tail >= (1 + math.exp(3.0)) * 2000 * 272_474 * math.exp(-largest ** 2 / 2) * 0.999


def test_the_stated_laplace_tail_covers_the_samplers_actual_support(monkeypatch):
  largest = _extreme_draws(monkeypatch, randomness.laplace)
  assert largest == pytest.approx(mechanisms.LAPLACE_MAX, rel=1e-12)
  assert mechanisms.LAPLACE_TAIL >= math.exp(-largest) * (1 - 1e-9)  # Ideal P(|Z| > largest).


def test_uniform106_reaches_both_ends_and_is_uniform():
  with randomness.keyed_noise(tf.constant([3, 4], tf.int64)):
    u = randomness.uniform106([400_000]).numpy()
  assert 0 < u.min() and u.max() <= 1.0
  # Mean and variance of U(0, 1) within 6 standard errors of 400,000 draws.
  assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / len(u))
  assert abs(u.var() - 1 / 12) < 6 * math.sqrt(1 / 180 / len(u))
