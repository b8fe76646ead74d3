"""Faults never shrink ε: a run's ledger counts every step whose results may be on disk.

The invariant each test asserts: the ε a resumed run reports covers every noisy step whose weights
or figures were written (issue 26's faults 2-4 and 6), or the run is refused in one line.
"""

import json
import os

import pytest
import tensorflow as tf

from tfdp import atomic
from tfdp import config as config_lib
from tfdp.training import checkpointing
from tfdp.training import loop as training

STEPS_PER_EPOCH = 6  # ceil(1437 / 256) digits steps.


def _config(output_dir, epochs=3):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(batch_size=256, epochs=epochs, output_dir=str(output_dir),
                               export=False))


class _Killed(BaseException):
  """What a SIGKILL would leave: nothing after the raise runs (not an Exception: no handler)."""


def _kill_before_state_json_of_epoch(monkeypatch, epoch):
  """Dies while epoch `epoch` is saved: its spent ledger and checkpoint are written, state.json
  (which would name that checkpoint) is not."""
  original = atomic.write_text

  def write_text(path, text):
    if path.endswith("state.json") and json.loads(text)["epoch"] == epoch:
      raise _Killed()
    original(path, text)

  monkeypatch.setattr(checkpointing.atomic, "write_text", write_text)


def test_a_kill_between_checkpoint_and_state_counts_the_lost_epoch(tmp_path, monkeypatch):
  with monkeypatch.context() as patch:
    _kill_before_state_json_of_epoch(patch, epoch=2)
    with pytest.raises(_Killed):
      training.train_and_evaluate(_config(tmp_path))
  assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1
  assert os.path.exists(tmp_path / "checkpoints" / "ckpt-2.index")  # Epoch 2 is on disk.

  metrics = training.train_and_evaluate(_config(tmp_path))
  # Epochs 1 and 2 of the first process, then epochs 2 and 3 again: 4 epochs of noisy steps.
  assert metrics["steps"] == 4 * STEPS_PER_EPOCH
  whole = training.train_and_evaluate(_config(tmp_path / "whole"))
  assert whole["steps"] == 3 * STEPS_PER_EPOCH and metrics["epsilon"] > whole["epsilon"]


def _one_epoch_run(tmp_path):
  training.train_and_evaluate(_config(tmp_path, epochs=1))
  return tmp_path / "state.json"


def test_a_deleted_state_json_is_refused_not_restarted_at_zero(tmp_path):
  state = _one_epoch_run(tmp_path)
  state.unlink()
  with pytest.raises(checkpointing.RunStateError,
                     match="spent.json and checkpoints/.*no state.json"):
    training.train_and_evaluate(_config(tmp_path, epochs=2))


def test_temporaries_alone_are_no_earlier_run(tmp_path):
  """A new run's chief probes checkpoints/ while its other workers, which sweep nothing, look for
  a run to resume: what they see there is no earlier run."""
  os.makedirs(tmp_path / "checkpoints" / "ckpt-1_temp")
  (tmp_path / "checkpoints" / ".tmp-probe").write_text("")
  model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
  state = checkpointing.RunState(str(tmp_path), model, tf.keras.optimizers.SGD(),
                                 save_dir=str(tmp_path / "scratch"))
  assert state.restore() is None


@pytest.mark.parametrize("history_too", [False, True])
def test_a_ledger_lowered_by_hand_is_refused_with_the_numbers(tmp_path, history_too):
  state = _one_epoch_run(tmp_path)
  recorded = json.loads(state.read_text())
  recorded["ledger"]["steps"] = 1  # Tampered, or copied from another save.
  if history_too:  # Consistent with the history: the checkpoint's step counter still says 6.
    recorded["history"][-1]["steps"] = 1
  state.write_text(json.dumps(recorded))
  expected = ("its checkpoint ckpt-1 took 6 optimizer steps" if history_too
              else "its history's epoch 1 ends at step 6")
  with pytest.raises(checkpointing.RunStateError,
                     match=f"counts 1 steps in its ledger, .*{expected}"):
    training.train_and_evaluate(_config(tmp_path, epochs=2))


def test_an_older_state_json_put_back_is_overruled_by_the_spent_ledger(tmp_path):
  state = _one_epoch_run(tmp_path)
  older = state.read_text()
  training.train_and_evaluate(_config(tmp_path, epochs=2))
  state.write_text(older)  # Consistent in itself: it names epoch 1's checkpoint, still on disk.
  metrics = training.train_and_evaluate(_config(tmp_path, epochs=3))
  assert metrics["steps"] == 4 * STEPS_PER_EPOCH  # Epoch 2 twice, not 3 epochs.


@pytest.mark.parametrize("damage, named", [
    (lambda text: text[:len(text) // 2], "state.json cannot be read"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "ledger"}),
     "state.json is damaged: it lacks ledger"),
    (lambda text: json.dumps({**json.loads(text), "ledger": {
        k: v for k, v in json.loads(text)["ledger"].items() if k != "steps"}}),
     "state.json is damaged: its ledger's steps is None"),
])
def test_a_damaged_state_json_is_refused_by_name(tmp_path, damage, named):
  state = _one_epoch_run(tmp_path)
  state.write_text(damage(state.read_text()))
  with pytest.raises(checkpointing.RunStateError, match=named):
    training.train_and_evaluate(_config(tmp_path, epochs=2))
