"""DiceSGD against a brute-force simulation of its recursion and its noise; that it is labelled as
having no proven guarantee, refuses --epsilon, and keeps its error state out of checkpoints."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config as config_lib
from tfdp.dp import clipping
from tfdp import optimizers
from tfdp.privacy import ledger as ledger_lib
from tfdp.training import checkpointing
from tfdp.training import export_run
from tfdp.training import loop as training
from tfdp.training import planning
from tfdp.training import steps

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

C1, C2, LEARNING_RATE, BATCH = 0.05, 0.1, 0.5, 4.0


def _clip(arrays, bound):
  norm = ref.global_norm(arrays)
  return [a * min(1.0, bound / max(norm, 1e-30)) for a in arrays]


def _brute_force_dice(model, images, labels, mask, steps_taken):
  """Weights and error after `steps_taken` DiceSGD steps (σ = 0), one example at a time."""
  weights = [v.numpy().astype(np.float64) for v in model.trainable_variables]
  error = [np.zeros_like(w) for w in weights]
  for _ in range(steps_taken):
    for variable, value in zip(model.trainable_variables, weights):
      variable.assign(value)
    per_example = [ref.per_example_gradient(model, images[i], labels[i])
                   for i in range(len(images)) if mask[i]]
    clipped = [sum(parts) for parts in zip(*(_clip(g, C1) for g in per_example))]
    plain = [sum(parts) for parts in zip(*per_example)]
    released = [c + e for c, e in zip(clipped, _clip(error, C2))]
    error = [e + p - r for e, p, r in zip(error, plain, released)]
    weights = [w - LEARNING_RATE * r / BATCH for w, r in zip(weights, released)]
  return weights, error


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
def test_three_steps_equal_the_brute_force_recursion(engine):
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 1, 0, 1, 1], np.float32)
  start = [v.numpy() for v in model.trainable_variables]
  optimizer = optimizers.build_optimizer("dice_sgd", LEARNING_RATE, l2_norm_clip=C1,
                                         noise_multiplier=0.0, error_clip=C2)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=BATCH,
                         engine=engine)
  for _ in range(3):
    step([(images[:3], labels[:3], mask[:3]), (images[3:], labels[3:], mask[3:])])
  ours = [v.numpy() for v in model.trainable_variables]
  ours_error = [e.numpy() for e in optimizer.error]
  for variable, value in zip(model.trainable_variables, start):
    variable.assign(value)
  weights, error = _brute_force_dice(model, images, labels, mask, 3)
  for actual, wanted in zip(ours + ours_error, weights + error):
    np.testing.assert_allclose(actual, wanted, rtol=2e-4, atol=2e-6)
  assert ref.global_norm(error) > C2  # The error clip was exercised.


def test_with_the_error_state_fixed_one_example_moves_the_release_by_at_most_c1():
  """V = Σ clip(g_i, C1) + clip(E, C2). The error state E also depends on past examples; bounding
  that dependence is the paper's analysis (the factor sqrt(1 + 2 C2 / C1) on the noise)."""
  model = ref.small_conv_model()
  images, labels = ref.batch(scale=10.0)
  mask = np.ones(len(images), np.float32)
  optimizer = optimizers.build_optimizer("dice_sgd", 1e-9, l2_norm_clip=C1, noise_multiplier=0.0,
                                         error_clip=C2)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, engine="fast")
  step([(images, labels, mask)])  # Builds up an error state.
  total, extras, *_ = step.accumulate([(images, labels, mask)])
  removed = mask.copy()
  removed[0] = 0
  other, other_extras, *_ = step.accumulate([(images, labels, removed)])
  errors = optimizer.error
  key = tf.constant([1, 2], tf.int64)
  released = optimizer.noised_mean(total, 1.0, noise_seed=key, **extras)
  for e, value in zip(optimizer._errors, errors):  # pylint: disable=protected-access
    e.assign(value)
  released_other = optimizer.noised_mean(other, 1.0, noise_seed=key, **other_extras)
  moved = ref.global_norm([a.numpy() - b.numpy() for a, b in zip(released, released_other)])
  assert 0 < moved <= C1 + 1e-6  # Same error state: only the clipped term moves.


def _dice_config(**privacy):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.5, l2_norm_clip=C1, **privacy),
      optimizer=config_lib.OptimizerConfig(name="dice_sgd"))


def test_noise_std_is_the_papers_and_the_statement_says_there_is_no_proven_guarantee():
  config = _dice_config(dice_error_clip=C2)
  ledger = planning.plan_privacy(config, num_train=1000)
  query = planning.noise_query(config, ledger, ref.small_conv_model())
  optimizer = optimizers.build_optimizer("dice_sgd", 0.1, dp_query=query, error_clip=C2)
  assert optimizer.noise_multiplier == pytest.approx(1.5 * math.sqrt(1 + 2 * C2 / C1))
  assert ledger.noise_multiplier == 1.5  # The ε shown is DP-SGD's at σ, for comparison only.
  assert any("DiceSGD" in note and "sqrt(1 + 2·C2/C1)" in note for note in ledger.notes)
  assert ledger.guarantee() == "unproven" and not ledger.proven
  assert ledger.statement().startswith("NO PROVEN DP GUARANTEE")
  assert "NO PROVEN DP GUARANTEE" in " ".join(ledger.notes)


def test_error_clip_must_not_be_below_the_clip():
  with pytest.raises(ValueError, match="dice_error_clip"):
    _dice_config(dice_error_clip=C1 / 2)
  with pytest.raises(ValueError, match="dice_sgd"):
    config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=1.0, dice_error_clip=1.0))


def test_epsilon_is_refused_because_there_is_no_proven_guarantee():
  with pytest.raises(ValueError, match="no proven DP guarantee.*--noise_multiplier"):
    config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=3.0),
                      optimizer=config_lib.OptimizerConfig(name="dice_sgd"))


def _build_dice():
  model = ref.small_conv_model()
  dice = optimizers.build_optimizer("dice_sgd", 0.1, l2_norm_clip=C1, noise_multiplier=0.0,
                                    error_clip=C2)
  return model, dice, steps.TrainStep(model, dice, tf.identity, private=True)


def test_error_state_is_in_no_checkpoint_and_a_resume_restarts_it_at_zero(tmp_path, capsys):
  images, labels = ref.batch()
  model, dice, step = _build_dice()
  step([(images, labels, np.ones(6, "f"))])
  error = [e.numpy() for e in dice.error]
  assert any(np.any(e) for e in error)
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=1e-5,
                                    steps=1)  # The step above: a resume checks the count.
  checkpointing.RunState(str(tmp_path), model, dice).save(1, ledger, [])
  prefix = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  names = [name for name, _ in tf.train.list_variables(prefix)]
  assert not [n for n in names if "dice_error" in n or "OPTIMIZER_SLOT" in n], names
  reader = tf.train.load_checkpoint(prefix)
  for name in names:
    value = reader.get_tensor(name)
    assert not any(np.shape(value) == e.shape and np.allclose(value, e) for e in error), name

  fresh_model, fresh, _ = _build_dice()
  planned = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=1e-5)
  epoch, resumed, _, _ = training._restore_or_start(  # pylint: disable=protected-access
      checkpointing.RunState(str(tmp_path), fresh_model, fresh), planned)
  assert epoch == 1 and not any(np.any(e.numpy()) for e in fresh.error)
  assert resumed.history[-1]["reset"] == list(dice.not_checkpointed)
  assert "restarts at zero" in capsys.readouterr().out


def test_adaptive_clip_survives_a_checkpoint(tmp_path):
  from tfdp.dp import noise
  model = ref.small_conv_model()
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=1e-5)
  adaptive = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.adaptive(
      1.0, 1.0, 0.5, 0.2, 3.2, 64))
  adaptive._adaptive_clip.assign(0.37)  # pylint: disable=protected-access
  checkpointing.RunState(str(tmp_path / "adaptive"), model, adaptive).save(1, ledger, [])
  again = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.adaptive(
      1.0, 1.0, 0.5, 0.2, 3.2, 64))
  checkpointing.RunState(str(tmp_path / "adaptive"), model, again).restore()
  assert again.l2_norm_clip == pytest.approx(0.37)


def test_a_run_reports_no_epsilon_only_dp_sgds_labelled_and_its_card_says_so(tmp_path):
  from tfdp.serving import model_card
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0, dice_error_clip=2.0),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dice_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(batch_size=256, epochs=1, output_dir=str(tmp_path), export=False))
  metrics = training.train_and_evaluate(config)
  assert metrics["epsilon"] is None and metrics["epsilon_pld"] is None
  assert metrics["epsilon_if_dp_sgd"] > 0 and metrics["dp_guarantee"] == "unproven"
  assert metrics["dice_error_clip"] == 2.0
  assert all("epsilon" not in record for record in metrics["history"])
  assert metrics["privacy_statement"].startswith("NO PROVEN DP GUARANTEE")
  card = model_card.build(metrics)
  assert card["guarantee"].startswith("NO PROVEN") and card["covered_fields"] == []
  assert "add/remove-one" not in card["guarantee"]
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=1e-5,
                                    steps=10, proven=False)
  # pylint: disable-next=protected-access
  from_checkpoint = export_run._metrics_for_card(str(tmp_path / "none"), (1, ledger, []))
  assert from_checkpoint["epsilon"] is None and from_checkpoint["epsilon_if_dp_sgd"] > 0
  assert model_card.build(from_checkpoint)["dp_guarantee"] == "unproven"
