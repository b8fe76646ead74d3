"""DiceSGD against a brute-force simulation of its recursion, its noise, and its checkpointed state."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import checkpointing
from tfdp import config as config_lib
from tfdp import optimizers
from tfdp import steps
from tfdp import planning
from tfdp.dp import clipping
from tfdp.privacy import ledger as ledger_lib

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
  ours_error = [optimizer.get_slot(v, "dice_error").numpy() for v in model.trainable_variables]
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
  errors = [e.read_value() for e in optimizer._errors]  # pylint: disable=protected-access
  released = optimizer.noised_mean(total, 1.0, **extras)
  for e, value in zip(optimizer._errors, errors):  # pylint: disable=protected-access
    e.assign(value)
  released_other = optimizer.noised_mean(other, 1.0, **other_extras)
  moved = ref.global_norm([a.numpy() - b.numpy() for a, b in zip(released, released_other)])
  assert 0 < moved <= C1 + 1e-6  # Same error state: only the clipped term moves.


def _dice_config(**privacy):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.5, l2_norm_clip=C1, **privacy),
      optimizer=config_lib.OptimizerConfig(name="dice_sgd"))


def test_noise_std_is_the_papers_and_the_summary_states_the_guarantee():
  config = _dice_config(dice_error_clip=C2)
  ledger = planning.plan_privacy(config, num_train=1000)
  query = planning.noise_query(config, ledger, ref.small_conv_model())
  optimizer = optimizers.build_optimizer("dice_sgd", 0.1, dp_query=query, error_clip=C2)
  assert optimizer.noise_multiplier == pytest.approx(1.5 * math.sqrt(1 + 2 * C2 / C1))
  assert ledger.noise_multiplier == 1.5  # The accountant composes DP-SGD's σ, per the paper.
  assert any("DiceSGD" in note and "sqrt(1 + 2·C2/C1)" in note for note in ledger.notes)


def test_error_clip_must_not_be_below_the_clip():
  with pytest.raises(ValueError, match="dice_error_clip"):
    _dice_config(dice_error_clip=C1 / 2)
  with pytest.raises(ValueError, match="dice_sgd"):
    config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=1.0, dice_error_clip=1.0))


def test_error_state_and_adaptive_clip_survive_a_checkpoint(tmp_path):
  from tfdp.dp import noise

  def build():
    model = ref.small_conv_model()
    dice = optimizers.build_optimizer("dice_sgd", 0.1, l2_norm_clip=C1, noise_multiplier=0.0,
                                      error_clip=C2)
    steps.TrainStep(model, dice, tf.identity, private=True)
    return model, dice

  images, labels = ref.batch()
  model, dice = build()
  steps.TrainStep(model, dice, tf.identity, private=True)([(images, labels, np.ones(6, "f"))])
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=1e-5)
  checkpointing.RunState(str(tmp_path / "dice"), model, dice).save(1, ledger, [])
  fresh_model, fresh = build()
  assert checkpointing.RunState(str(tmp_path / "dice"), fresh_model, fresh).restore()[0] == 1
  for old, new in zip(model.trainable_variables, fresh_model.trainable_variables):
    np.testing.assert_array_equal(dice.get_slot(old, "dice_error").numpy(),
                                  fresh.get_slot(new, "dice_error").numpy())
  assert np.any(fresh.get_slot(fresh_model.trainable_variables[0], "dice_error").numpy())

  adaptive = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.adaptive(
      1.0, 1.0, 0.5, 0.2, 3.2, 64))
  adaptive._adaptive_clip.assign(0.37)  # pylint: disable=protected-access
  checkpointing.RunState(str(tmp_path / "adaptive"), model, adaptive).save(1, ledger, [])
  again = optimizers.build_optimizer("dp_sgd", 0.1, dp_query=noise.adaptive(
      1.0, 1.0, 0.5, 0.2, 3.2, 64))
  checkpointing.RunState(str(tmp_path / "adaptive"), model, again).restore()
  assert again.l2_norm_clip == pytest.approx(0.37)
