"""DP feature statistics (tfdp.dp.feature_statistics): the sums against brute force, each
example's influence, the noise, the accounting, and a run that releases them once."""

import dataclasses
import json
import pathlib

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tfdp import config
from tfdp.data import random_processes
from tfdp.dp import clipping
from tfdp.dp import feature_statistics as stats
from tfdp.dp import randomness
from tfdp import models
from tfdp.models import scatter
from tfdp.privacy import ledger as ledger_lib
from tfdp.training import loop as training
from tfdp.training import planning

CLIPS = stats.ClipNorms(first=2.0, second=5.0)
_NOWHERE = pathlib.Path("unused")  # Output directory of configs that are only planned.


def _features(count=40, seed=0):
  """[count, 3, 3, 6] features on very different scales, a few of them far beyond the clips."""
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(count, 3, 3, 6)) * np.array([3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
  features[::7] *= 20.0
  return features.astype(np.float32)


def _brute_force_sums(features, clips):
  """One example at a time: its moment vectors, clipped, added up."""
  first, second = np.zeros(features.shape[-1]), np.zeros(features.shape[-1])
  for example in features.astype(np.float64):
    maps = example.reshape(-1, example.shape[-1])
    a, b = maps.mean(axis=0), np.square(maps).mean(axis=0)
    first += a * min(1.0, clips.first / np.linalg.norm(a))
    second += b * min(1.0, clips.second / np.linalg.norm(b))
  return first, second


def test_clipped_sums_equal_brute_force():
  features = _features()
  actual, expected = stats.clipped_sums(features, CLIPS), _brute_force_sums(features, CLIPS)
  for got, wanted in zip(actual, expected):
    np.testing.assert_allclose(got, wanted, rtol=1e-10)


def test_one_example_moves_each_sum_by_at_most_its_clip():
  features = _features()
  without = stats.clipped_sums(features, CLIPS)
  for outlier in (np.full((1, 3, 3, 6), 1e6, np.float32), features[:1] * 0.01):
    with_it = stats.clipped_sums(np.concatenate([features, outlier]), CLIPS)
    for before, after, bound in zip(without, with_it, (CLIPS.first, CLIPS.second)):
      assert np.linalg.norm(after - before) <= bound * (1 + 1e-9)
  huge = stats.clipped_sums(np.concatenate([features, np.full((1, 3, 3, 6), 1e6)]), CLIPS)
  assert np.linalg.norm(huge[0] - without[0]) == pytest.approx(CLIPS.first, rel=1e-9)


def test_noise_std_is_sigma_times_each_clip():
  features, sigma = _features(count=10), 3.0
  exact = stats.clipped_sums(features, CLIPS)
  draws = [stats.noisy_sums(features, CLIPS, sigma, randomness.ReproducibleCoins(seed))
           for seed in range(300)]
  for part, clip in ((0, CLIPS.first), (1, CLIPS.second)):
    noise = np.stack([d[part] for d in draws]) - exact[part]  # [300, 6]
    assert np.std(noise) == pytest.approx(sigma * clip, rel=0.06)
    assert abs(np.mean(noise)) < 0.1 * sigma * clip
  first, second = draws[0]
  again = stats.noisy_sums(features, CLIPS, sigma, randomness.ReproducibleCoins(0))
  np.testing.assert_array_equal(first, again[0])
  assert not np.allclose(first - exact[0], (second - exact[1]) * CLIPS.first / CLIPS.second)


def test_secret_coins_draw_fresh_noise_and_sigma_must_be_positive():
  features = _features(count=10)
  one = stats.noisy_sums(features, CLIPS, 1.0, randomness.SecretCoins())
  two = stats.noisy_sums(features, CLIPS, 1.0, randomness.SecretCoins())
  assert not np.allclose(one[0], two[0])
  with pytest.raises(ValueError, match="noise_multiplier must be > 0"):
    stats.noisy_sums(features, CLIPS, 0.0, randomness.SecretCoins())


def test_standardization_by_exact_statistics_centres_and_scales_each_map():
  features = _features(count=200)
  layer = scatter.FeatureStandardization()
  layer.build(features.shape)
  layer.set_moments(stats.exact_moments(features))
  assert not layer.trainable_weights
  out = layer(features).numpy().reshape(-1, 6)
  np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
  # The variance of positions and examples together is what the moments measure.
  np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=0.02)


def test_private_variance_is_never_negative():
  features = np.zeros((5, 2, 2, 4), np.float32)  # Variance 0: noise alone could make it < 0.
  moments = stats.private_moments(features, 5, CLIPS, 50.0, randomness.ReproducibleCoins(1))
  assert (moments.variance >= 0).all()


def test_public_clip_norms_come_from_random_process_images_alone():
  front = scatter.Scattering()
  preprocess = lambda pixels: tf.cast(pixels, tf.float32) / 255.0
  public = lambda shape: random_processes.pixels(stats.PUBLIC_SOURCE, 64, shape, stats.PUBLIC_SEED)
  one = stats.public_clip_norms(front, preprocess, public((8, 8, 1)))
  two = stats.public_clip_norms(front, preprocess, public((8, 8, 1)))
  assert one == two and one.first > 0 and one.second > 0  # Public seed: the same every time.
  with pytest.raises(ValueError, match="square images"):
    stats.public_clip_norms(front, preprocess, public((8, 12, 1)))


def test_model_option_and_fast_engine():
  model = models.build_model("scatter_cnn", 3, (16, 16, 3), normalization="statistics")
  assert isinstance(scatter.statistics_layer(model), scatter.FeatureStandardization)
  assert scatter.statistics_layer(models.build_model("scatter_cnn", 3, (16, 16, 3))) is None
  _, head = scatter.split(model)
  assert not clipping.make_engine("fast", head).fallback_layers
  with pytest.raises(ValueError, match="normalization must be one of"):
    models.build_model("scatter_linear", 3, (16, 16, 3), normalization="batch")


def test_ledger_composes_the_statistics_ahead_of_the_steps_as_dp_accounting_does():
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.1, sampling_probability=0.05,
                                    delta=1e-5, steps=300,
                                    normalization={"noise_multiplier": 8.0, "releases": 2},
                                    normalization_released=True)
  events = dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(8.0), 2),
      dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
          0.05, dp_accounting.GaussianDpEvent(1.1)), 300)])
  rdp = dp_accounting.rdp.RdpAccountant()
  rdp.compose(events)
  assert ledger.epsilon("rdp") == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-9)
  pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
  pld.compose(events)
  assert ledger.epsilon("pld") == pytest.approx(pld.get_epsilon(1e-5), rel=1e-6)
  assert ledger.epsilon() > ledger.epsilon(normalized=False)  # Not free.
  assert "DP feature statistics (2 Gaussian releases, σ = 8.0000" in ledger.describe()


def _digits_run(tmp_path, name="run", epochs=2, optimizer="dp_sgd", epsilon=3.0,
                **privacy):
  return config.Config(
      data=config.DataConfig(dataset="digits", train_examples=512),
      model=config.ModelConfig(name="scatter_linear",
                               options=(("normalization", "statistics"),)),
      privacy=config.PrivacyConfig(epsilon=epsilon, delta=1e-3, l2_norm_clip=0.1, **privacy),
      optimizer=config.OptimizerConfig(name=optimizer, learning_rate=2.0, momentum=0.9),
      run=config.RunConfig(batch_size=128, epochs=epochs, output_dir=str(tmp_path / name),
                           export=False, reproducible_noise=True))


def test_calibration_leaves_room_for_the_statistics():
  with_stats = planning.plan_privacy(_digits_run(_NOWHERE), 512)
  plain = dataclasses.replace(_digits_run(_NOWHERE),
                              model=config.ModelConfig(name="scatter_linear"))
  without = planning.plan_privacy(plain, 512)
  assert with_stats.noise_multiplier > without.noise_multiplier
  planned = with_stats.history[0]["planned_steps"]
  assert with_stats.planned_epsilon(planned) <= 3.0 < with_stats.planned_epsilon(planned + 4)
  assert with_stats.max_steps() == planned
  with pytest.raises(ValueError, match="feature statistics alone spend"):
    planning.plan_privacy(_digits_run(_NOWHERE, epsilon=0.5,
                                      normalization_noise_multiplier=1.0), 512)


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="normalization_noise_multiplier must be > 0"):
    config.PrivacyConfig(normalization_noise_multiplier=0.0)
  with pytest.raises(ValueError, match="normalization=statistics is accounted as Gaussian"):
    _digits_run(_NOWHERE, noise="laplace", clipping="vectorized")


def test_a_run_releases_them_once_and_a_resume_reads_them_from_the_checkpoint(
    tmp_path, monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  releases = []
  original = stats.private_moments
  monkeypatch.setattr(stats, "private_moments",
                      lambda *args: releases.append(1) or original(*args))
  # A given σ: the longer resumed run keeps the recorded mechanism rather than recalibrating.
  fixed = {"epsilon": None, "noise_multiplier": 1.2}
  first = training.train_and_evaluate(_digits_run(tmp_path, epochs=1, **fixed))
  assert len(releases) == 1
  summary = first["feature_statistics"]
  assert summary["released"] and summary["noise_multiplier"] == 8.0
  assert summary["mean_clip"] > 0 and summary["square_clip"] > 0
  assert first["epsilon"] > summary["epsilon_alone"] > 0
  resumed = training.train_and_evaluate(_digits_run(tmp_path, epochs=3, **fixed))
  assert len(releases) == 1  # Not drawn again.
  state = json.loads((tmp_path / "run" / "state.json").read_text())
  ledger = ledger_lib.PrivacyLedger(**state["ledger"])
  events = [e["event"] for e in ledger.history]
  assert events.count("feature_statistics") == 1 and "resume" in events
  assert ledger.steps == 12
  assert resumed["epsilon"] == pytest.approx(ledger.epsilon(), rel=1e-12)
  assert ledger.epsilon() > ledger.epsilon(normalized=False)  # Counted once, and counted.
  assert resumed["test_accuracy"] > 0.3  # Chance is 0.1.


def test_a_non_private_run_uses_the_exact_statistics(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(stats, "private_moments", lambda *args: pytest.fail("noised"))
  metrics = training.train_and_evaluate(_digits_run(tmp_path, epochs=2, optimizer="sgd",
                                                    epsilon=None))
  assert metrics["feature_statistics"] is None and metrics["epsilon"] is None
  assert metrics["test_accuracy"] > 0.5
