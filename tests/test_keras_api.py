"""tfdp.keras.make_private + tfdp.data.poisson_dataset: a Keras user's own model in `fit`."""

import os

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tests import dp_reference as ref
from tfdp import config as config_lib
from tfdp.dp import groups as groups_lib
from tfdp.dp import randomness
from tfdp.training import loop
from tfdp.training import planning

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

CLIP = 0.5  # Small enough that the reference batch's gradients are clipped (checked below).
_LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _private(model, **overrides):
  options = dict(optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=CLIP, target_delta=1e-3,
                 epochs=2, train_size=12, batch_size=6, noise_multiplier=1.0)
  options.update(overrides)
  private = tfdp.keras.make_private(model, **options)
  private.compile(loss=_LOSS)
  return private


@pytest.mark.parametrize("clip_groups", [None, 2])
def test_one_fit_step_is_the_brute_force_clipped_sum_over_the_drawn_chunks(clip_groups):
  images, labels = ref.batch(size=12)
  private = _private(ref.small_conv_model(), noise_multiplier=1e-9, clip_groups=clip_groups)
  before = [v.numpy() for v in private.trainable_variables]
  dataset = tfdp.data.poisson_dataset(images, labels, batch_size=6, physical_batch_size=2, seed=5)
  private.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False)])  # PLD has no bound at σ ≈ 0.

  drawn = randomness.ReproducibleCoins(5).inclusion(0, 12, 0.5).astype(np.float32)
  assert drawn.sum() > 2  # Several chunks of 2: noise must still be added once.
  reference = ref.small_conv_model()  # Same seed: the weights before the step.
  groups = groups_lib.variable_groups(reference, clip_groups)
  expected = ref.grouped_clipped_sum(reference, images, labels, drawn, CLIP, groups)
  unclipped = ref.grouped_clipped_sum(reference, images, labels, drawn, 1e9, groups)
  assert not np.allclose(expected[0], unclipped[0])  # The clip bites: the test can fail.
  for variable, old, total in zip(private.trainable_variables, before, expected):
    np.testing.assert_allclose(old - variable.numpy(), total / 6, rtol=2e-3, atol=1e-6,
                               err_msg=variable.name)
  assert int(private.privacy_steps.numpy()) == 1


def _zero_gradient_model():
  """Dense without bias on all-zero images: every gradient is exactly 0, so updates are noise."""
  inputs = tf.keras.Input((4, 4, 1))
  outputs = tf.keras.layers.Dense(10, use_bias=False)(tf.keras.layers.Flatten()(inputs))
  return tf.keras.Model(inputs, outputs)


class _Updates(tf.keras.callbacks.Callback):
  """Every step's change of the weights."""

  def on_train_begin(self, logs=None):
    self.last, self.updates = self.model.get_weights()[0], []

  def on_train_batch_end(self, batch, logs=None):
    now = self.model.get_weights()[0]
    self.updates.append(now - self.last)
    self.last = now


def test_noise_std_is_sigma_c_once_per_logical_step():
  sigma, clip, batch = 2.0, 1.5, 8
  private = tfdp.keras.make_private(
      _zero_gradient_model(), optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=clip,
      noise_multiplier=sigma, target_delta=1e-3, epochs=5, train_size=64, batch_size=batch)
  private.compile(loss=_LOSS)
  images, labels = np.zeros((64, 4, 4, 1), np.float32), np.zeros(64, np.int64)
  updates = _Updates()
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=batch, physical_batch_size=2),
              epochs=5, verbose=0, callbacks=[updates])
  noise = np.stack(updates.updates) * batch  # Update = -noise / B at learning rate 1.
  assert noise.shape[0] == 40
  assert np.std(noise) == pytest.approx(sigma * clip, rel=0.05)  # Per chunk would be ~2x.
  assert abs(np.mean(noise)) < 0.1 * sigma * clip


def test_history_has_epsilon_per_epoch_equal_to_what_tfdp_train_plans():
  images, labels = ref.batch(size=60)
  private = tfdp.keras.make_private(
      ref.small_conv_model(), optimizer="dp_adam", learning_rate=0.01, l2_norm_clip=1.0,
      target_epsilon=8.0, target_delta=1e-3, epochs=3, train_size=60, batch_size=20)
  private.compile(loss=_LOSS)
  history = private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=3,
                        verbose=0)
  run = config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=8.0, delta=1e-3),
                          run=config_lib.RunConfig(batch_size=20, epochs=3))
  planned = planning.plan_privacy(run, 60)
  assert private.privacy_ledger.noise_multiplier == planned.noise_multiplier
  expected = []
  for steps in (3, 6, 9):
    planned.steps = steps
    expected.append(planned.epsilon())
  assert history.history["epsilon"] == pytest.approx(expected, rel=1e-12)
  assert history.history["privacy_steps"] == [3, 6, 9]
  assert len(history.history["epsilon_pld"]) == 3
  assert history.history["epsilon"][-1] <= 8.0


def test_budget_stops_training_before_a_step_would_exceed_the_target():
  images, labels = ref.batch(size=60)
  private = _private(ref.small_conv_model(), noise_multiplier=None, target_epsilon=4.0,
                     train_size=60, batch_size=20, epochs=2)
  allowed = private.max_privacy_steps
  assert allowed >= 6  # Calibrated for the 2 planned epochs.
  history = private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=10,
                        verbose=0)
  ledger = private.privacy_ledger
  assert ledger.steps == allowed
  assert history.history["epsilon"][-1] <= 4.0
  assert ledger.epsilon(steps=allowed + 1) > 4.0
  again = private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=1,
                      verbose=0)
  assert private.privacy_ledger.steps == allowed  # Not one step more, even when asked.
  assert again.history["privacy_steps"] in ([], [allowed])


class _Interrupt(tf.keras.callbacks.Callback):
  def on_epoch_end(self, epoch, logs=None):
    if epoch == 1:
      raise RuntimeError("interrupted")


def _digits_private(seed=0):
  tf.keras.utils.set_random_seed(seed)
  return _private(ref.small_conv_model(), train_size=60, batch_size=20, epochs=4,
                  noise_multiplier=1.0, learning_rate=0.1)


def test_backup_and_restore_resumes_with_the_same_steps_and_epsilon(tmp_path):
  images, labels = ref.batch(size=60)
  backup = str(tmp_path / "backup")
  first = _digits_private()
  with pytest.raises(RuntimeError, match="interrupted"):
    first.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=4, verbose=0,
              callbacks=[tf.keras.callbacks.BackupAndRestore(backup), _Interrupt()])
  assert int(first.privacy_steps.numpy()) == 6

  resumed = _digits_private()  # A fresh process's model: 0 steps until the backup is restored.
  history = resumed.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=4,
                        verbose=0, callbacks=[tf.keras.callbacks.BackupAndRestore(backup)])
  whole = _digits_private()
  whole.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=4, verbose=0)
  assert resumed.privacy_ledger.steps == whole.privacy_ledger.steps == 12
  assert history.history["privacy_steps"] == [9, 12]  # Epochs 3 and 4 only.
  assert history.history["epsilon"][-1] == pytest.approx(whole.privacy_ledger.epsilon(), rel=1e-12)
  assert [e["event"] for e in resumed.privacy_ledger.history] == ["start", "resume"]


def test_model_checkpoint_carries_the_step_count_and_no_noise_key(tmp_path):
  images, labels = ref.batch(size=60)
  private = _digits_private()
  path = str(tmp_path / "weights.ckpt")
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=1, verbose=0,
              callbacks=[tf.keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
  restored = _digits_private(seed=1)
  restored.load_weights(path)
  assert int(restored.privacy_steps.numpy()) == 3
  reader = tf.train.load_checkpoint(path)
  shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
  philox_states = [name for name in shapes if shapes[name] == [3] and dtypes[name] == tf.int64]
  assert philox_states == []  # A Philox generator's state is int64 [3].
  assert any("privacy_steps" in name for name in shapes)
  np.testing.assert_array_equal(restored.get_weights()[0], private.get_weights()[0])


def test_set_random_seed_does_not_fix_the_noise():
  images, labels = ref.batch(size=60)
  finals = []
  for _ in range(2):
    private = _digits_private(seed=3)
    private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20, seed=1), epochs=1,
                verbose=0)
    finals.append(private.get_weights()[0])
  assert not np.allclose(finals[0], finals[1])


@pytest.mark.parametrize("make_input", [
    lambda x, y: (tf.data.Dataset.from_tensor_slices((x, y)).batch(20), None),
    lambda x, y: (x, y),
    lambda x, y: (tfdp.data.poisson_dataset(x, y, batch_size=20).prefetch(1), None),
], ids=["batched_dataset", "numpy", "changed_poisson_dataset"])
def test_fit_refuses_input_that_is_not_poisson_sampled(make_input):
  images, labels = ref.batch(size=60)
  private = _digits_private()
  x, y = make_input(images, labels)
  with pytest.raises(ValueError, match="Poisson sampling"):
    private.fit(x, y, epochs=1, verbose=0)
  assert int(private.privacy_steps.numpy()) == 0


def test_fit_refuses_a_poisson_dataset_of_another_plan():
  images, labels = ref.batch(size=60)
  private = _digits_private()
  with pytest.raises(ValueError, match="ε would be wrong"):
    private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=30), epochs=1, verbose=0)


def test_shuffled_batch_in_chunks_is_the_brute_force_clipped_sum():
  images, labels = ref.batch(size=6)
  private = _private(ref.small_conv_model(), noise_multiplier=1e-9, train_size=6, batch_size=6,
                     sampling="shuffle", physical_batch_size=4)  # Chunks of 4 and 2 (+2 padding).
  before = [v.numpy() for v in private.trainable_variables]
  private.fit(images, labels, batch_size=6, epochs=1, shuffle=False, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  expected = ref.clipped_sum(ref.small_conv_model(), images, labels, np.ones(6), CLIP)
  for variable, old, total in zip(private.trainable_variables, before, expected):
    np.testing.assert_allclose(old - variable.numpy(), total / 6, rtol=2e-3, atol=1e-6,
                               err_msg=variable.name)


def test_shuffle_sampling_trains_on_arrays_and_labels_its_epsilon():
  images, labels = ref.batch(size=60)
  private = _private(ref.small_conv_model(), train_size=60, batch_size=20, sampling="shuffle")
  history = private.fit(images, labels, batch_size=20, epochs=2, verbose=0)
  assert history.history["privacy_steps"] == [3, 6]
  report = private.privacy_report()
  assert report["dp_guarantee"] == "shuffle" and "NOT Poisson" in report["privacy_statement"]
  with pytest.raises(ValueError, match="batch_size"):
    private.fit(images, labels, batch_size=30, epochs=1, verbose=0)


def test_reproducible_draws_label_the_model():
  images, labels = ref.batch(size=60)
  private = _digits_private()
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20, seed=2), epochs=1,
              verbose=0)
  assert private.privacy_report()["dp_guarantee"] == "reproducible"


@pytest.mark.parametrize("options, message", [
    ({"target_epsilon": 3.0}, "exactly one"),
    ({"noise_multiplier": None}, "exactly one"),
    ({"target_delta": 0.5}, "target_delta"),
    ({"batch_size": 100}, "batch_size"),
    ({"optimizer": "sgd"}, "not a DP optimizer"),
    ({"optimizer": "dice_sgd"}, "not a DP optimizer"),
    ({"engine": "magic"}, "unknown engine"),
    ({"sampling": "sliding"}, "unknown sampling"),
])
def test_bad_plans_are_refused_by_name(options, message):
  with pytest.raises(ValueError, match=message):
    _private(ref.small_conv_model(), **options)


def test_a_subclassed_model_and_a_second_optimizer_are_refused():
  class Subclassed(tf.keras.Model):
    def call(self, inputs):
      return inputs

  with pytest.raises(ValueError, match="functional or Sequential"):
    _private(Subclassed())
  private = _digits_private()
  with pytest.raises(ValueError, match="pass the optimizer to make_private"):
    private.compile(loss=_LOSS, optimizer=tf.keras.optimizers.SGD())


def test_a_given_optimizer_must_carry_the_planned_noise():
  model = ref.small_conv_model()
  wrong = tfdp.optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=CLIP, noise_multiplier=2.0)
  with pytest.raises(ValueError, match="must be the plan's"):
    _private(model, optimizer=wrong)
  right = tfdp.optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=CLIP, noise_multiplier=1.0)
  assert _private(model, optimizer=right).optimizer is right


def test_private_model_shares_the_layers_and_weights_of_the_users_model():
  model = ref.small_conv_model()
  private = _private(model)
  assert [layer.name for layer in private.layers] == [layer.name for layer in model.layers]
  assert all(a is b for a, b in zip(private.trainable_variables, model.trainable_variables))


def test_export_carries_the_privacy_report_in_its_model_card(tmp_path):
  images, labels = ref.batch(size=60)
  private = _digits_private()
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=20), epochs=1, verbose=0)
  path = tfdp.export.export_saved_model(private, str(tmp_path / "served"),
                                        preprocess=lambda pixels: tf.cast(pixels, tf.float32),
                                        class_names=["a", "b", "c"])
  card = tfdp.export.read_model_card(path)
  assert card["epsilon"] == pytest.approx(private.privacy_ledger.epsilon())
  assert card["dp_guarantee"] == "proven" and card["steps"] == 3
  names = [name for name, _ in tf.train.list_variables(os.path.join(path, "variables",
                                                                     "variables"))]
  assert not any("optimizer" in name or "privacy_steps" in name for name in names), names
  served = tf.saved_model.load(path)
  pixels = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 2)).astype(np.uint8)
  expected = tf.nn.softmax(private(tf.cast(pixels, tf.float32))).numpy()
  np.testing.assert_allclose(served.signatures["predict_pixels"](pixels=pixels)["probabilities"],
                             expected, rtol=1e-5, atol=1e-6)


def test_final_epsilon_equals_what_tfdp_train_reports_for_the_same_mechanism(tmp_path):
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=None, noise_multiplier=1.2, delta=1e-5),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(batch_size=128, epochs=2, output_dir=str(tmp_path / "cli"),
                               export=False))
  metrics = loop.train_and_evaluate(config)
  digits = tfdp.data.load_dataset("digits")
  images, labels = digits.train_images.astype(np.float32) / 255.0, digits.train_labels
  inputs = tf.keras.Input(images.shape[1:])  # A model of our own: not the CLI's linear model.
  hidden = tf.keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
  outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(hidden))
  private = tfdp.keras.make_private(
      tf.keras.Model(inputs, outputs), optimizer="dp_sgd", learning_rate=0.5, l2_norm_clip=1.0,
      noise_multiplier=1.2, target_delta=1e-5, epochs=2, train_size=len(images), batch_size=128)
  private.compile(loss=_LOSS)
  history = private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=128), epochs=2,
                        verbose=0)
  assert history.history["privacy_steps"][-1] == metrics["steps"]
  assert history.history["epsilon"][-1] == metrics["epsilon"]
  assert history.history["epsilon_pld"][-1] == metrics["epsilon_pld"]
  before_tail = lambda statement: statement.split("float64 Box-Muller")[0]  # d differs: its tail too.
  assert before_tail(private.privacy_report()["privacy_statement"]) == before_tail(
      metrics["privacy_statement"])


def test_make_private_refuses_to_run_across_workers(monkeypatch):
  from tfdp.training import distribution  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(distribution, "worker", lambda strategy: (0, 2))
  with pytest.raises(ValueError, match="not across workers"):
    _private(ref.small_conv_model())
