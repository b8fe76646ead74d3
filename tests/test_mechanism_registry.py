"""Every mechanism through both front doors: one object per mechanism, one planner.

For each mechanism the registry holds, `tfdp.keras.make_private` + `fit` must (1) plan the same σ,
ledger, ε and statement as `tfdp.train`'s planner for the same settings, (2) noise with the
mechanism's own query, and (3) take one step whose update is the brute-force sum (per-example
gradients one example at a time, clipped or normalized as the mechanism says) when σ ≈ 0.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tests import dp_reference as ref
from tfdp import config as config_lib
from tfdp.dp import groups as groups_lib
from tfdp.dp import noise
from tfdp.dp import randomness
from tfdp import optimizers
from tfdp.privacy import mechanisms
from tfdp.training import planning

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

CLIP, N, BATCH, EPOCHS, DELTA = 0.5, 12, 6, 3, 1e-3
_LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# name -> (make_private / PrivacyConfig keywords, brute-force update of one step or None)
CASES = {
    "gaussian": ({}, "clip"),
    "grouped_gaussian": ({"clip_groups": 2, "layer_noise": "depth_decay"}, "grouped"),
    "adaptive_clipping": ({"adaptive_clip_quantile": 0.5, "adaptive_clip_count_stddev": 5.0},
                          "clip"),
    "laplace": ({"noise": "laplace", "l1_norm_clip": CLIP, "clipping": "vectorized"}, "l1"),
    "discrete_gaussian": ({"noise": "discrete_gaussian"}, "clip"),
    "gaussian, normalized, on a schedule": ({"clipping_mode": "normalize",
                                             "noise_schedule": "linear_decay"}, "normalize"),
}


def _keras_options(options):
  keras = dict(options)
  keras["engine"] = keras.pop("clipping", "fast")
  return keras


def _keras(target_epsilon=None, noise_multiplier=None, **options):
  private = tfdp.keras.make_private(
      ref.small_conv_model(), optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=CLIP,
      target_delta=DELTA, epochs=EPOCHS, train_size=N, batch_size=BATCH,
      target_epsilon=target_epsilon, noise_multiplier=noise_multiplier, **_keras_options(options))
  private.compile(loss=_LOSS)
  return private


def _cli_ledger(epsilon, **options):
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=epsilon, delta=DELTA, l2_norm_clip=CLIP, **options),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=1.0),
      run=config_lib.RunConfig(batch_size=BATCH, epochs=EPOCHS))
  return config, planning.plan_privacy(config, N)


def test_every_steps_mechanism_has_a_case():
  assert {name.split(",")[0] for name in CASES} | {"dice_sgd"} == set(mechanisms.STEPS)


@pytest.mark.parametrize("name", CASES)
def test_make_private_plans_and_states_as_the_command_line(name):
  options, _ = CASES[name]
  private = _keras(target_epsilon=2.0, **options)
  config, cli = _cli_ledger(2.0, **options)
  keras = private.privacy_ledger
  assert keras.noise_multiplier == pytest.approx(cli.noise_multiplier, rel=1e-12)
  assert keras.noise == cli.noise and keras.notes == cli.notes
  assert keras.epoch_factors == cli.epoch_factors
  assert keras.mechanism == cli.mechanism
  cli.coordinates = keras.coordinates
  for steps in (1, 4):
    keras.steps = cli.steps = steps
    assert keras.epsilon() == pytest.approx(cli.epsilon(), rel=1e-12)
    assert keras.statement() == cli.statement()
  private.privacy_steps.assign(4)
  card = private.privacy_report()  # What the Keras export's model card is built from.
  released = cli.mechanism_report()  # What tfdp.train's metrics.json and card carry.
  assert {key: card[key] for key in released} == pytest.approx(released, rel=1e-12)
  query = private._dp.optimizer._dp_sum_query  # pylint: disable=protected-access
  expected = planning.noise_query(config, cli, ref.small_conv_model())
  assert type(query) is type(expected)  # The mechanism's own query, through either door.


def test_the_registry_selects_by_settings_and_refuses_by_name():
  assert mechanisms.select(mechanisms.Settings(optimizer="dice_sgd")).name == "dice_sgd"
  assert mechanisms.select(mechanisms.Settings(adaptive_clip_quantile=0.5)).name == \
      "adaptive_clipping"
  with pytest.raises(ValueError, match="unknown noise 'uniform'"):
    mechanisms.select(mechanisms.Settings(noise="uniform"))
  with pytest.raises(ValueError, match="clipping=vectorized"):
    _keras(noise_multiplier=1.0, noise="laplace")  # The CLI's check, through make_private.


def _brute_force(kind, model, images, labels, drawn, model_for_groups):
  if kind == "l1":
    return ref.l1_clipped_sum(model, images, labels, drawn, CLIP)
  if kind == "normalize":
    return ref.normalized_sum(model, images, labels, drawn, CLIP, 0.01)
  groups = groups_lib.variable_groups(model_for_groups, 2 if kind == "grouped" else None)
  return ref.grouped_clipped_sum(model, images, labels, drawn, CLIP, groups)


@pytest.mark.parametrize("name", CASES)
def test_one_fit_step_is_the_brute_force_sum(name):
  options, kind = CASES[name]
  images, labels = ref.batch(size=N)
  private = _keras(noise_multiplier=1e-9, **options)
  before = [v.numpy() for v in private.trainable_variables]
  dataset = tfdp.data.poisson_dataset(images, labels, batch_size=BATCH, physical_batch_size=2,
                                      seed=5)
  private.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  drawn = randomness.ReproducibleCoins(5).inclusion(0, N, BATCH / N).astype(np.float32)
  reference = ref.small_conv_model()
  expected = _brute_force(kind, reference, images, labels, drawn, reference)
  unclipped = ref.grouped_clipped_sum(reference, images, labels, drawn, 1e9, [0] * len(before))
  assert not np.allclose(expected[0], unclipped[0])  # The clip bites: the test can fail.
  query = private._dp.optimizer._dp_sum_query  # pylint: disable=protected-access
  # The discrete Gaussian rounds the sum to its grid γ and its integer noise scale is at least 1
  # (one grid unit, however small σ): half a unit of rounding plus 6 units of noise, at most.
  rounding = getattr(query, "grid", 0.0) * 6.5
  for variable, old, total in zip(private.trainable_variables, before, expected):
    np.testing.assert_allclose(old - variable.numpy(), total / BATCH, rtol=2e-3,
                               atol=2e-6 + rounding / BATCH, err_msg=variable.name)


def test_every_mechanism_setting_is_a_privacy_config_field_of_the_same_name():
  front_door_only = {"optimizer", "batch_size", "target_epsilon"}
  settings = {field.name for field in dataclasses.fields(mechanisms.Settings)} - front_door_only
  fields = {field.name for field in dataclasses.fields(config_lib.PrivacyConfig)}
  assert settings <= fields, settings - fields
  privacy = config_lib.PrivacyConfig(noise="discrete_gaussian", discrete_rounding_inflation=0.02)
  assert privacy.settings().discrete_rounding_inflation == 0.02  # Carried by name.


def test_an_optimizer_instance_is_refused_for_another_mechanism():
  instance = optimizers.build_optimizer(
      "dp_sgd", 1.0, dp_query=noise.SecretGaussianSumQuery(CLIP, CLIP * 1.0))
  with pytest.raises(ValueError, match="discrete_gaussian mechanism"):
    tfdp.keras.make_private(ref.small_conv_model(), optimizer=instance, l2_norm_clip=CLIP,
                            target_delta=DELTA, epochs=EPOCHS, train_size=N, batch_size=BATCH,
                            noise_multiplier=1.0, noise="discrete_gaussian")


def test_a_noise_schedule_sets_each_steps_noise_from_the_ledger():
  images, labels = ref.batch(size=N)
  private = _keras(noise_multiplier=1.0, noise_schedule="linear_decay",
                   noise_schedule_end_factor=0.5)
  dataset = tfdp.data.poisson_dataset(images, labels, batch_size=BATCH, seed=5)
  private.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  ledger = private.privacy_ledger
  assert ledger.epoch_factors[-1] == pytest.approx(0.5)
  scale = private._dp.optimizer.noise_scale.numpy()  # pylint: disable=protected-access
  last = ledger.noise_multiplier_at(ledger.steps - 1) / ledger.noise_multiplier
  assert last == pytest.approx(0.5) and scale == pytest.approx(last)  # The last step's σ.
