"""tfdp.keras.weights_ledger: weights trained privately before bring their ε to make_private.

Phase 1 trains at σ = 1.0, q = 20/60 for 6 steps; phase 2 at σ = 1.5, q = 10/60 (different q and
σ, so a wrong composition cannot pass). The expected ε is computed by the accountant directly.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tests import dp_reference as ref
from tfdp.keras import weights_ledger
from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib

DELTA = 1e-3
N = 60
FIRST = dict(noise_multiplier=1.0, batch_size=20)  # q = 1/3, 3 steps per epoch.
SECOND = dict(noise_multiplier=1.5, batch_size=10)  # q = 1/6, 6 steps per epoch.
_LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def _register(tmp_path, monkeypatch):
  """A fresh register in tmp_path (never ~), and no memory of other tests' models."""
  monkeypatch.setenv(weights_ledger.LEDGER_DIR_ENV, str(tmp_path / "ledgers"))
  weights_ledger.forget()
  yield tmp_path / "ledgers"
  weights_ledger.forget()


def _private(model, **overrides):
  options = dict(optimizer="dp_sgd", learning_rate=0.1, l2_norm_clip=1.0, target_delta=DELTA,
                 epochs=2, train_size=N, **FIRST)
  options.update(overrides)
  private = tfdp.keras.make_private(model, **options)
  private.compile(loss=_LOSS)
  return private


def _fit(private, epochs, callbacks=()):
  images, labels = ref.batch(size=N)
  batch_size = private._plan.batch_size  # pylint: disable=protected-access
  dataset = tfdp.data.poisson_dataset(images, labels, batch_size=batch_size,
                                      physical_batch_size=10)
  return private.fit(dataset, epochs=epochs, verbose=0,
                     callbacks=[tfdp.keras.PrivacyBudget(pld=False), *callbacks])


def _two_phases(first_steps, second_steps, second_sigma=1.5):
  return accounting.composed_epsilon(
      [(1.0, first_steps, 1 / 3), (second_sigma, second_steps, 1 / 6)], 1 / 6, DELTA)


def _trained_first_phase(model=None):
  """Phase 1: 6 steps on `model` (default: a new small conv model)."""
  first = _private(model if model is not None else ref.small_conv_model())
  _fit(first, epochs=2)
  assert first.privacy_ledger.steps == 6
  return first


def _assert_continues(model, first_steps=6):
  """Phase 2 on `model`: its History ε is both phases', not the second's alone."""
  second = _private(model, **SECOND)
  assert second.privacy_ledger.prior_steps == first_steps
  history = _fit(second, epochs=1)
  assert history.history["privacy_steps"] == [6]
  assert history.history["epsilon"][-1] == pytest.approx(_two_phases(first_steps, 6), rel=1e-12)
  assert history.history["epsilon"][-1] > accounting.epsilon(1.5, 1 / 6, 6, DELTA) + 0.5
  return second


class _WrapMidFit(tf.keras.callbacks.Callback):
  """Wraps the same model again after the second step of the first epoch."""

  def __init__(self, model):
    super().__init__()
    self._user_model, self.wrapper = model, None

  def on_train_batch_end(self, batch, logs=None):
    if self.wrapper is None and batch == 1:
      self.wrapper = _private(self._user_model, **SECOND)


def test_wrapping_the_same_model_again_composes_both_phases(capsys):
  model = ref.small_conv_model()
  first = _private(model)
  mid_fit = _WrapMidFit(model)
  _fit(first, epochs=2, callbacks=[mid_fit])
  assert mid_fit.wrapper.privacy_ledger.prior_steps == 2  # The first wrapper's live count.
  second = _assert_continues(model)  # 6, not the 2 the mid-fit wrapper saw.
  assert "trained privately before: 6 steps, ε = " in capsys.readouterr().out
  report = second.privacy_report()
  assert report["epsilon"] == pytest.approx(_two_phases(6, 6), rel=1e-12)
  assert [phase["steps"] for phase in report["prior_phases"]] == [6]
  assert "after 1 earlier phase (6 steps) and 6 steps" in report["privacy_statement"]
  third = _private(model, **SECOND)  # Both phases, each once.
  assert [p["steps"] for p in third.privacy_ledger.prior_phases] == [6, 6]


@pytest.mark.parametrize("filename", ["weights.ckpt", "weights.h5"])
def test_weights_saved_and_loaded_into_a_new_model_continue(tmp_path, filename):
  first = _trained_first_phase()
  path = str(tmp_path / filename)
  first.save_weights(path)
  assert os.path.exists(weights_ledger.sidecar_path(path))
  weights_ledger.forget()  # A new process: only the register's files remain.
  fresh = ref.small_conv_model(seed=5)
  fresh.load_weights(path)
  np.testing.assert_array_equal(fresh.get_weights()[0], first.get_weights()[0])
  _assert_continues(fresh)


def test_a_keras_file_loads_as_a_plain_model_that_continues(tmp_path):
  first = _trained_first_phase()
  path = str(tmp_path / "model.keras")
  first.save(path)
  weights_ledger.forget()
  loaded = tf.keras.models.load_model(path)
  assert not isinstance(loaded, tfdp.keras.PrivateModel)  # A plain Keras model.
  np.testing.assert_array_equal(loaded.get_weights()[0], first.get_weights()[0])
  _assert_continues(loaded)


class _CheckpointAfterFirstEpoch(tf.keras.callbacks.Callback):
  def __init__(self, path):
    super().__init__()
    self.path = path

  def on_epoch_end(self, epoch, logs=None):
    if epoch == 0:
      tf.train.Checkpoint(model=self.model).write(self.path)


def test_a_checkpoint_written_during_fit_restored_into_a_plain_model_continues(tmp_path):
  first = _private(ref.small_conv_model())
  _fit(first, epochs=2, callbacks=[_CheckpointAfterFirstEpoch(str(tmp_path / "ckpt"))])
  fresh = ref.small_conv_model(seed=5)
  tf.train.Checkpoint(model=fresh).read(str(tmp_path / "ckpt")).expect_partial()
  _assert_continues(fresh, first_steps=3)  # The checkpoint's weights: after 3 steps, not 6.


def test_model_checkpoint_weights_restored_into_a_plain_model_continue(tmp_path):
  first = _private(ref.small_conv_model())
  pattern = str(tmp_path / "weights-{epoch}.ckpt")
  _fit(first, epochs=2, callbacks=[tf.keras.callbacks.ModelCheckpoint(pattern,
                                                                      save_weights_only=True)])
  weights_ledger.forget()
  fresh = ref.small_conv_model(seed=5)
  fresh.load_weights(pattern.format(epoch=1))
  _assert_continues(fresh, first_steps=3)


def test_a_target_covers_both_phases_and_refuses_weights_that_spent_it():
  model = ref.small_conv_model()
  _trained_first_phase(model)
  spent = accounting.composed_epsilon([(1.0, 6, 1 / 3)], 1, DELTA)
  assert 4.0 < spent < 5.0
  with pytest.raises(ValueError, match=f"already spent ε = {spent:.3f} at δ = 0.001 in 6 "
                                       "earlier private steps.*target_epsilon = 4.0"):
    _private(model, noise_multiplier=None, target_epsilon=4.0, batch_size=10)
  second = _private(model, noise_multiplier=None, target_epsilon=spent + 2.0, batch_size=10,
                    epochs=1)
  sigma, allowed = second.privacy_ledger.noise_multiplier, second.max_privacy_steps
  assert _two_phases(6, allowed, sigma) <= spent + 2.0 < _two_phases(6, allowed + 1, sigma)
  assert allowed < accounting.max_steps(sigma, 1 / 6, DELTA, spent + 2.0)  # Alone: more.
  history = _fit(second, epochs=5)
  assert history.history["privacy_steps"][-1] == allowed
  assert history.history["epsilon"][-1] <= spent + 2.0


def test_fresh_weights_start_at_zero_and_other_deltas_are_refused():
  fresh = _private(ref.small_conv_model(seed=7))
  assert fresh.privacy_ledger.prior_phases == []
  assert fresh.register_weights() is None  # Nothing spent: nothing recorded.
  model = ref.small_conv_model()
  _trained_first_phase(model)
  with pytest.raises(ValueError, match="delta = 0.001.*delta = 0.0001"):
    _private(model, target_delta=1e-4)
  with pytest.raises(ValueError, match="sampling = 'poisson'"):
    _private(model, sampling="shuffle")
  probe = ledger_lib.PrivacyLedger(noise_multiplier=1.0, sampling_probability=0.1, delta=DELTA,
                                   steps=4, probe={"noise_multiplier": 2.0,
                                                   "sampling_probability": 0.5, "steps": 2})
  with pytest.raises(ValueError, match="linear probe"):
    _private(ref.small_conv_model(seed=8), prior_ledger=probe)


def test_prior_ledger_from_the_sidecar_when_the_register_is_gone(tmp_path, _register):
  first = _trained_first_phase()
  path = str(tmp_path / "weights.h5")
  first.save_weights(path)
  shutil.rmtree(_register)
  weights_ledger.forget()
  fresh = ref.small_conv_model(seed=5)
  fresh.load_weights(path)
  assert _private(fresh).privacy_ledger.prior_phases == []  # Unknown here without the file.
  second = _private(fresh, **SECOND, prior_ledger=weights_ledger.sidecar_path(path))
  assert second.privacy_ledger.prior_steps == 6
  again = _private(fresh, **SECOND, prior_ledger=first.privacy_ledger)  # And the register now
  assert again.privacy_ledger.prior_steps == 6  # knows it too: merged, counted once.


def test_an_h5_file_loads_into_the_plain_model_and_resumes_a_private_one(tmp_path):
  first = _trained_first_phase()
  path = str(tmp_path / "weights.h5")
  first.save_weights(path)
  resumed = _private(ref.small_conv_model(seed=5))  # Fresh weights: a resume, not a new phase.
  resumed.load_weights(path)
  assert int(resumed.privacy_steps.numpy()) == 6 and resumed.privacy_ledger.prior_phases == []
  np.testing.assert_array_equal(resumed.get_weights()[0], first.get_weights()[0])
