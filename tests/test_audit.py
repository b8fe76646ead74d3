"""The one-run audit (tfdp.privacy.audit, tfdp.data.canaries, tfdp.audit): the bound against direct
binomial sums, the guesses, the canary draw, and training runs on digits whose leakage the audit
must see (no noise) or must not see (ε = 1)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special

from tfdp import config
from tfdp.data import canaries
from tfdp.data import sampling
from tfdp.dp import randomness
from tfdp.privacy import audit
from tfdp.serving import model_card
from tfdp.training import loop as training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _binomial_tail(r, p, v):
  """P[Binomial(r, p) >= v] by direct summation."""
  return sum(math.comb(r, k) * p**k * (1 - p)**(r - k) for k in range(v, r + 1))


def _theorem_bound(m, r, v, epsilon, delta):
  """Steinke et al.'s Theorem 3 right-hand side, term by term."""
  p = math.exp(epsilon) / (1 + math.exp(epsilon))
  tail = _binomial_tail(r, p, v)
  windows = [(_binomial_tail(r, p, v - i) - tail) / i for i in range(1, v + 1)]
  return min(1.0, tail + 2 * m * delta * max(windows, default=0.0))


@pytest.mark.parametrize("m, r, v, epsilon, delta", [
    (10, 10, 10, 1.0, 0.0), (10, 6, 4, 0.5, 0.0), (20, 12, 11, 2.0, 1e-3), (50, 30, 25, 1.5, 1e-5),
    (8, 8, 0, 1.0, 1e-2), (100, 40, 39, 3.0, 0.05)])
def test_p_value_is_the_theorems_bound_summed_directly(m, r, v, epsilon, delta):
  assert audit.p_value(m, r, v, epsilon, delta) == pytest.approx(
      _theorem_bound(m, r, v, epsilon, delta), rel=1e-9, abs=1e-15)


def test_the_bound_for_all_guesses_right_without_delta_has_a_closed_form():
  # P[B >= r] = p^r = 0.05 at the bound, so p = 0.05^(1/r) and ε = logit(p).
  for r in (5, 20, 100):
    expected = special.logit(0.05 ** (1 / r))
    assert audit.epsilon_lower_bound(r, r, r, 0.0) == pytest.approx(expected, abs=1e-5)


def test_the_bound_sits_where_the_p_value_reaches_the_significance():
  bound = audit.epsilon_lower_bound(1000, 200, 170, 1e-5, confidence=0.95)
  assert bound > 0.5
  assert audit.p_value(1000, 200, 170, bound, 1e-5) == pytest.approx(0.05, abs=1e-6)
  assert audit.p_value(1000, 200, 170, bound * 0.9, 1e-5) < 0.05  # Rejected below it.
  assert audit.epsilon_lower_bound(1000, 200, 170, 1e-5, confidence=0.99) < bound
  assert audit.epsilon_lower_bound(1000, 200, 170, 1e-3) < bound  # δ explains some guesses.


@pytest.mark.parametrize("correct", [0, 50, 100, 105])
def test_chance_level_guessing_proves_nothing(correct):
  assert audit.epsilon_lower_bound(400, 200, correct, 1e-5) == 0.0


def test_bad_counts_are_refused():
  for args in [(10, 11, 5), (10, 5, 6), (10, 5, -1)]:
    with pytest.raises(ValueError, match="correct"):
      audit.p_value(*args, 1.0, 0.0)
  with pytest.raises(ValueError, match="confidence"):
    audit.epsilon_lower_bound(10, 10, 10, 0.0, confidence=1.0)
  with pytest.raises(ValueError, match="finite"):
    audit.audit(np.array([1.0, np.nan]), np.array([True, False]), 1e-5)


def test_guesses_take_the_lowest_losses_as_in_and_the_highest_as_out():
  losses = np.array([0.1, 5.0, 0.2, 3.0, 1.0, 4.0])
  included = np.array([True, False, False, False, True, True])
  # Lowest two (0.1 in, 0.2 out) guessed in; highest two (5.0 out, 4.0 in) guessed out.
  assert audit.guess(losses, included, 4) == (4, 2)
  assert audit.guess(losses, included, 2) == (2, 2)  # 0.1 in, 5.0 out.


def test_perfect_separation_gives_the_bonferroni_bound_of_all_guesses_right():
  m = 200
  included = np.arange(m) % 2 == 0
  losses = np.where(included, 0.01, 5.0) + np.arange(m) * 1e-6
  result = audit.audit(losses, included, delta=1e-5, proven_epsilon=1.0)
  counts = audit.guess_counts(m)
  assert result["audit_guesses"] == result["audit_correct"] == m
  assert result["audit_epsilon_lower_bound"] == pytest.approx(
      audit.epsilon_lower_bound(m, m, m, 1e-5, confidence=1 - 0.05 / len(counts)))
  assert result["audit"]["above_proven"] and "PROBABLE BUG" in result["audit"]["verdict"]
  assert result["mia_auc"] == 1.0 and result["mia_tpr_at_fpr_0.01"] == 1.0


def test_membership_inference_is_near_chance_for_identical_scores():
  rng = np.random.default_rng(0)
  figures = audit.membership_inference(rng.normal(size=4000), rng.normal(size=4000))
  assert abs(figures["mia_auc"] - 0.5) < 0.03
  assert figures["mia_tpr_at_fpr_0.01"] < 0.03


# The canary draw.


def _digits_like(n=300, classes=10):
  rng = np.random.default_rng(5)
  return (rng.integers(0, 256, size=(n, 8, 8, 1)).astype(np.uint8),
          rng.integers(0, classes, size=n).astype(np.int64))


@pytest.mark.parametrize("kind", canaries.KINDS)
def test_the_canary_draw_is_reproducible_from_its_seed_alone(kind):
  images, labels = _digits_like()
  first = canaries.draw(images, labels, 10, 40, kind, canaries.audit_rng(7))
  again = canaries.draw(images, labels, 10, 40, kind, canaries.audit_rng(7))
  other = canaries.draw(images, labels, 10, 40, kind, canaries.audit_rng(8))
  secret = canaries.draw(images, labels, 10, 40, kind, canaries.audit_rng(None))
  assert np.array_equal(first.included, again.included)
  assert np.array_equal(first.images, again.images)
  assert not np.array_equal(first.included, other.included)
  assert not np.array_equal(first.included, secret.included)


def test_mislabeled_canaries_carry_another_label_and_the_left_out_ones_leave_the_set():
  images, labels = _digits_like()
  drawn = canaries.draw(images, labels, 10, 60, "mislabeled", canaries.audit_rng(1))
  assert np.all(drawn.labels != labels[drawn.source_indices])
  assert np.array_equal(drawn.images, images[drawn.source_indices])
  assert 15 < drawn.included.sum() < 45  # Each in with probability 1/2.
  train_images, train_labels = canaries.training_set(images, labels, drawn)
  assert len(train_labels) == 300 - (~drawn.included).sum()
  kept = np.ones(300, bool)
  kept[drawn.source_indices[~drawn.included]] = False
  assert np.array_equal(train_images, images[kept])
  relabeled = labels.copy()
  relabeled[drawn.source_indices] = drawn.labels
  assert np.array_equal(train_labels, relabeled[kept])


def test_noise_canaries_drawn_in_are_added_to_the_set():
  images, labels = _digits_like()
  drawn = canaries.draw(images, labels, 10, 30, "noise", canaries.audit_rng(2))
  train_images, train_labels = canaries.training_set(images, labels, drawn)
  assert len(train_labels) == 300 + drawn.included.sum()
  assert np.array_equal(train_images[300:], drawn.images[drawn.included])
  assert drawn.images.std() > 50  # Uniform pixels, not a constant.


def _config(tmp_path, name="run", *, optimizer="sgd", epochs=1, audit_seed=1, seed=0,
            learning_rate=0.1, **privacy):
  return config.Config(
      data=config.DataConfig(dataset="digits", train_examples=400, audit_canaries=200,
                             audit_canary_type="noise", audit_seed=audit_seed),
      model=config.ModelConfig(name="cnn"),
      privacy=config.PrivacyConfig(delta=1e-5, **privacy),
      optimizer=config.OptimizerConfig(name=optimizer, learning_rate=learning_rate, momentum=0.9),
      run=config.RunConfig(batch_size=64, epochs=epochs, seed=seed, export=False,
                           reproducible_noise=True, output_dir=str(tmp_path / name)))


def test_the_canary_draw_is_apart_from_the_training_sampler(tmp_path):
  def first_draws(n):  # The run's Poisson sampler, from the run's own coins (run seed 0).
    sampler = sampling.PoissonSampler(n, 64, 64, randomness.make_coins(True, 0))
    return [sampler.sample(step) for step in range(5)]

  before = first_draws(501)
  training.load_training_data(_config(tmp_path, "a"))
  training.load_training_data(_config(tmp_path, "b", seed=3))
  training.load_training_data(_config(tmp_path, "c", audit_seed=2))
  drawn = {name: canaries.load(str(tmp_path / name)) for name in "abc"}
  assert np.array_equal(drawn["a"].included, drawn["b"].included)  # The run's seed plays no part.
  assert not np.array_equal(drawn["a"].included, drawn["c"].included)  # The audit's seed does.
  after = first_draws(501)  # Drawing canaries took nothing from the sampler's coins.
  assert all(np.array_equal(x, y) for x, y in zip(before, after))


def test_a_run_resumed_or_redone_in_its_directory_keeps_its_canaries(tmp_path):
  first = training.load_training_data(_config(tmp_path, audit_seed=None))
  secret = canaries.load(str(tmp_path / "run"))
  again = training.load_training_data(_config(tmp_path, audit_seed=None))
  assert np.array_equal(secret.included, canaries.load(str(tmp_path / "run")).included)
  assert np.array_equal(first.train_images, again.train_images)
  changed = _config(tmp_path)
  changed = config.Config(data=config.DataConfig(
      dataset="digits", train_examples=400, audit_canaries=100, audit_canary_type="noise"),
      model=changed.model, privacy=changed.privacy, optimizer=changed.optimizer, run=changed.run)
  with pytest.raises(ValueError, match="holds 200 noise canaries"):
    training.load_training_data(changed)


@pytest.mark.parametrize("options, message", [
    ({"audit_canaries": 1}, "audit_canaries"), ({"audit_canary_type": "loud"}, "loud")])
def test_bad_audit_settings_are_refused(options, message):
  with pytest.raises(ValueError, match=message):
    config.DataConfig(dataset="digits", **options)


# Training runs: 400 digits + 200 noise canaries, 40 epochs of a small CNN.


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Three runs of the same training: without privacy, DP-SGD with next to no noise, and DP-SGD
  at ε = 1. One seed each (reproducible noise), so the figures are fixed."""
  base = tmp_path_factory.mktemp("audit")
  return {
      "non_private": training.train_and_evaluate(_config(base, "np", epochs=40)),
      "no_noise": training.train_and_evaluate(_config(
          base, "nn", optimizer="dp_sgd", epochs=40, learning_rate=0.3, noise_multiplier=1e-3,
          l2_norm_clip=10.0)),
      "eps1": training.train_and_evaluate(_config(
          base, "eps1", optimizer="dp_sgd", epochs=40, learning_rate=0.3, epsilon=1.0,
          l2_norm_clip=10.0)),
      "dir": base}


def test_a_model_that_memorizes_its_canaries_gets_a_bound_well_above_1(runs):
  metrics = runs["non_private"]
  assert metrics["audit_epsilon_lower_bound"] > 2.0
  assert metrics["mia_auc"] > 0.9
  assert metrics["audit"]["proven_epsilon"] is None


def test_the_same_training_at_epsilon_1_gets_a_bound_within_its_proof(runs):
  # Clipped but unnoised, the same training leaks, and the audit sees it in this setting (within
  # its astronomical proven ε); with the noise of ε = 1, it sees no more than ε = 1.
  assert runs["no_noise"]["audit_epsilon_lower_bound"] > 2.0
  assert not runs["no_noise"]["audit"]["above_proven"]
  metrics = runs["eps1"]
  assert metrics["epsilon"] <= 1.0
  assert metrics["audit_epsilon_lower_bound"] <= 1.0
  assert not metrics["audit"]["above_proven"]


def test_canaries_count_in_n_for_the_accountant(runs):
  drawn = canaries.load(str(runs["dir"] / "eps1"))
  metrics = runs["eps1"]
  assert metrics["train_examples"] == 400 + int(drawn.included.sum())
  assert metrics["sampling_probability"] == pytest.approx(64 / metrics["train_examples"])


def test_the_audit_goes_in_the_model_card_as_not_covered(runs):
  card = model_card.build(runs["eps1"])
  for field in model_card.AUDIT_FIELDS:
    assert card[field] is not None
    assert field in card["not_covered"] and field not in card["covered_fields"]
  assert "not covered" in card["audit"]["note"]


def test_the_audit_command_recomputes_the_runs_audit_and_fails_loudly_above_the_proof(runs):
  run_dir = runs["dir"] / "np"
  result = subprocess.run([sys.executable, "-m", "tfdp.audit", f"--run_dir={run_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((run_dir / "audit" / "report.json").read_text())
  assert report["audit_epsilon_lower_bound"] == pytest.approx(
      runs["non_private"]["audit_epsilon_lower_bound"])
  metrics = json.loads((run_dir / "metrics.json").read_text())
  metrics.update(epsilon=0.5, dp_guarantee="proven", delta=1e-5)  # A claim the model belies.
  (run_dir / "metrics.json").write_text(json.dumps(metrics))
  result = subprocess.run([sys.executable, "-m", "tfdp.audit", f"--run_dir={run_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 3
  assert "PROBABLE BUG" in result.stderr


def test_the_audit_command_refuses_a_run_without_canaries(tmp_path):
  result = subprocess.run([sys.executable, "-m", "tfdp.audit", f"--run_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "tfdp.audit: error:" in result.stderr
