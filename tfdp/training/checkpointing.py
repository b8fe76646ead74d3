"""Checkpoints that carry the privacy ledger, so an interrupted run resumes with its budget intact.

Layout under the run's output_dir:
  spent.json             the ledger as soon as steps are taken, written atomically *before*
                         anything computed from them (the epoch's evaluation, TensorBoard, the
                         checkpoint): it never counts fewer steps than those whose results exist.
  checkpoints/ckpt-N.*   model and optimizer state at the N-th save (tf.train.CheckpointManager's
                         save counter, restored with the checkpoint: a save never overwrites the
                         checkpoint state.json names)
  state.json             {"epoch": E, "epoch_steps": K, "checkpoint": "ckpt-N", "ledger": {...},
                         "history": [...]}: E epochs done and K steps of the next (a run stopped
                         mid-epoch by a signal, tfdp.training.stopping), written atomically
                         *after* the checkpoint, so it never names a checkpoint that is not complete.
                         The history holds what the run releases per epoch (tfdp.training): no
                         training-batch figures of a private run unless --monitor_private_metrics
                         asked for them, under keys marked not private.

Why ε never shrinks across a crash. A run killed after steps but before state.json names their
checkpoint resumes from the checkpoint before and takes those steps again with fresh noise; the
lost steps' checkpoint or figures may already be on disk, so they count: a resume takes the
ledger's counts from spent.json where they exceed state.json's (the same run's mechanism, checked).
A directory that holds checkpoints or spent.json but no state.json is refused rather than started
again at zero steps, and a damaged file is refused by name. state.json's ledger is checked against
what it was saved with: the checkpoint's optimizer took no more steps than the ledger counts, and
the history's last epoch (plus K) ends at the ledger's count; a ledger edited by hand, or an older
state.json put back beside newer checkpoints, is refused with the numbers.

Optimizer state that must not be released (DiceSGD's error) is kept out of checkpoints; such an
optimizer names it in `not_checkpointed`, and a resume restarts it.
"""

import json
import os
from typing import List, NamedTuple, Optional

import tensorflow as tf

from tfdp import atomic
from tfdp.privacy import ledger as ledger_lib
from tfdp.serving import release


class Restored(NamedTuple):
  """A run's state as its last complete save left it."""
  epoch: int  # Epochs done.
  ledger: ledger_lib.PrivacyLedger
  history: List[dict]  # One record per epoch done.
  epoch_steps: int  # Steps of epoch `epoch + 1` already taken (a run stopped mid-epoch).


class RunState:
  """Saves and restores (model, optimizer, epoch, ledger) for one output_dir."""

  def __init__(self, output_dir: str, model: tf.keras.Model, optimizer, *,
               save_dir: Optional[str] = None, **extra):
    """`extra`: further trackables saved with the model (e.g. ema=WeightAverage).

    `save_dir`: where `save` writes, when not output_dir (a worker other than the chief restores
    the chief's run from output_dir and saves to a scratch directory).
    """
    # The optimizer's state that checkpoints leave out, one sentence each (a resume restarts it).
    self.not_checkpointed = tuple(getattr(optimizer, "not_checkpointed", ()))
    self._state_path = os.path.join(output_dir, "state.json")
    self._save_state_path = os.path.join(save_dir or output_dir, "state.json")
    self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **extra)
    self._directory = os.path.join(output_dir, "checkpoints")
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, os.path.join(save_dir or output_dir, "checkpoints"), max_to_keep=3)

  def restore(self) -> Optional[Restored]:
    """Restores the last complete checkpoint; None when output_dir holds no run.

    Raises:
      RunStateError: the directory's state is missing, damaged or inconsistent (named).
    """
    output_dir = os.path.dirname(self._state_path)
    if not os.path.exists(self._state_path):
      _refuse_orphans(output_dir)
      return None
    state = _read_state(self._state_path)
    prefix = os.path.join(self._directory, state["checkpoint"])
    _restore(self._checkpoint, prefix, output_dir)
    epoch_steps = state.get("epoch_steps", 0)
    _check_counts(self._state_path, state, epoch_steps, _iterations(prefix))
    return Restored(state["epoch"], _spent_ledger(output_dir, state["ledger"]), state["history"],
                    epoch_steps)

  def check_writable(self) -> None:
    """Raises RunStateError naming a directory the saves cannot write, before any step."""
    for directory in (os.path.dirname(self._save_state_path), self._manager.directory):
      try:
        os.makedirs(directory, exist_ok=True)
        atomic.write_text(os.path.join(directory, ".tmp-probe"), "")
        os.remove(os.path.join(directory, ".tmp-probe"))
      except OSError as error:
        raise RunStateError(f"{directory} cannot be written ({error.strerror}): the run would "
                            "take noisy steps it cannot save; fix its permissions or use "
                            "another --output_dir") from None

  def sweep(self) -> List[str]:
    """Clears the temporaries that a killed save left (atomic.sweep); call it holding the lock."""
    return (atomic.sweep(os.path.dirname(self._save_state_path))
            + atomic.sweep(self._manager.directory))

  def record_spent(self, ledger: ledger_lib.PrivacyLedger) -> None:
    """Writes the ledger to spent.json: call it once steps are taken, before any of their
    results (an evaluation, a log line, a checkpoint) can be written."""
    atomic.write_text(os.path.join(os.path.dirname(self._save_state_path), SPENT),
                      ledger.to_json())

  def save(self, epoch: int, ledger: ledger_lib.PrivacyLedger, history: List[dict],
           epoch_steps: int = 0) -> None:
    """Saves after `epoch` epochs and `epoch_steps` steps of the next (spent.json first)."""
    self.record_spent(ledger)
    try:
      prefix = self._manager.save()
    except tf.errors.OpError as error:  # A full disk, say: raised as the OSError it is.
      atomic.sweep(self._manager.directory)  # A part-written checkpoint's temporaries.
      raise OSError(f"cannot write a checkpoint in {self._manager.directory}: "
                    f"{error.message}") from None
    except BaseException:
      atomic.sweep(self._manager.directory)
      raise
    state = {"epoch": epoch, "epoch_steps": epoch_steps, "checkpoint": os.path.basename(prefix),
             "ledger": json.loads(ledger.to_json()), "history": history}
    atomic.write_text(self._save_state_path, json.dumps(state, indent=2, sort_keys=True))


def restore_weights(output_dir: str, model: tf.keras.Model, weight_average=None):
  """Restores only the model (and EMA) of a run's last complete checkpoint, for export.

  Returns:
    (epochs done, ledger, history) from state.json. Raises ValueError if there is no checkpoint.
  """
  state_path = os.path.join(output_dir, "state.json")
  if not os.path.exists(state_path):
    raise ValueError(f"{output_dir} has no completed epoch to export (no state.json)")
  state = _read_state(state_path)
  extra = {"ema": weight_average} if weight_average is not None else {}
  checkpoint = tf.train.Checkpoint(model=model, **extra)
  prefix = os.path.join(output_dir, "checkpoints", state["checkpoint"])
  checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
  _check_counts(state_path, state, state.get("epoch_steps", 0), _iterations(prefix))
  return state["epoch"], _spent_ledger(output_dir, state["ledger"]), state["history"]


SPENT = "spent.json"


class RunStateError(ValueError):
  """A run directory whose state cannot be trusted: named, with what to do."""


def _restore(checkpoint: tf.train.Checkpoint, prefix: str, output_dir: str) -> None:
  """Restores `prefix` into `checkpoint`; RunStateError when it cannot (in one line)."""
  try:
    checkpoint.restore(prefix).assert_existing_objects_matched()
  except (ValueError, AssertionError) as error:  # Another shape, or objects it does not hold.
    raise RunStateError(
        f"{output_dir} holds a run of another model or optimizer ({_recorded(output_dir)}): its "
        f"checkpoint does not fit this one ({_first_sentence(error)}); use a new --output_dir, "
        "or that run's flags to resume it") from None
  except tf.errors.OpError as error:  # A checkpoint file missing or damaged.
    raise RunStateError(f"{prefix} cannot be read ({_first_sentence(error.message)}); the run "
                        "cannot resume from it: use a new --output_dir") from None


def _recorded(output_dir: str) -> str:
  """The model and optimizer flags the run in `output_dir` recorded (release.RUN_SPEC)."""
  try:
    with open(os.path.join(output_dir, release.RUN_SPEC)) as f:
      config = json.load(f)["config"]
    options = ",".join(f"{key}={value}" for key, value in config["model"]["options"])
    return (f"recorded --model={config['model']['name']}"
            + (f" --model_kwargs={options}" if options else "")
            + f" --optimizer={config['optimizer']['name']}")
  except (OSError, ValueError, KeyError, TypeError):  # No spec, or another layout: say so.
    return f"its {release.RUN_SPEC} says which"


def _first_sentence(error) -> str:
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return text.split(". ")[0].rstrip(".")[:200]


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise RunStateError(f"{path} cannot be read ({error}); it holds this run's privacy ledger, so "
                        "the run cannot resume from it: use a new --output_dir") from None


def _read_state(path: str) -> dict:
  state = _read_json(path)
  missing = [key for key in ("epoch", "checkpoint", "ledger", "history") if key not in state]
  if missing:
    raise RunStateError(f"{path} is damaged: it lacks {', '.join(missing)}; the run cannot "
                        "resume from it: use a new --output_dir")
  return state


def _spent_ledger(output_dir: str, recorded: dict) -> ledger_lib.PrivacyLedger:
  """state.json's ledger, its counts raised to spent.json's where that holds more (steps taken
  whose checkpoint state.json never named)."""
  try:
    ledger = ledger_lib.PrivacyLedger(**recorded)
  except TypeError as error:
    raise RunStateError(f"{output_dir}/state.json holds a damaged ledger ({error}); use a new "
                        "--output_dir") from None
  spent_path = os.path.join(output_dir, SPENT)
  if not os.path.exists(spent_path):
    return ledger  # A run from before spent.json existed.
  try:
    spent = ledger_lib.PrivacyLedger(**_read_json(spent_path))
  except TypeError as error:
    raise RunStateError(f"{spent_path} holds a damaged ledger ({error}); use a new "
                        "--output_dir") from None
  changes = ledger.mechanism_changes(spent)
  if changes:
    raise RunStateError(f"{spent_path} and state.json describe different runs ({'; '.join(changes)})"
                        "; use a new --output_dir")
  extra = spent.steps - ledger.steps
  if extra > 0:
    print(f"{spent_path} counts {extra} steps after the last checkpoint (the run stopped while "
          "saving); they count in ε, and the epoch is taken again with fresh noise")
  ledger.steps = max(ledger.steps, spent.steps)
  ledger.probe_steps = max(ledger.probe_steps, spent.probe_steps)
  ledger.normalization_released = ledger.normalization_released or spent.normalization_released
  return ledger


ITERATIONS_KEY = "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"  # Keras's applied-step counter.


def _iterations(prefix: str) -> Optional[int]:
  """The steps the checkpoint's optimizer applied, when it saved a Keras step counter."""
  reader = tf.train.load_checkpoint(prefix)
  if not reader.has_tensor(ITERATIONS_KEY):
    return None
  return int(reader.get_tensor(ITERATIONS_KEY))


def _check_counts(path: str, state: dict, epoch_steps: int, iterations: Optional[int]) -> None:
  """Refuses a state.json whose ledger disagrees with what it was saved with: the checkpoint's
  step counter and the history's last epoch plus `epoch_steps`, neither of which may exceed the
  ledger's count (both fall below it when steps counted in spent.json were taken again)."""
  steps = state["ledger"].get("steps")
  if not isinstance(steps, int) or steps < 0:
    raise RunStateError(f"{path} is damaged: its ledger's steps is {steps!r}, not a count; the "
                        "run cannot resume from it: use a new --output_dir")
  problems = []
  if iterations is not None and iterations > steps:
    problems.append(f"its checkpoint {state['checkpoint']} took {iterations} optimizer steps")
  if state["history"]:
    last = state["history"][-1]
    if last.get("steps") is not None and last["steps"] + epoch_steps > steps:
      problems.append(f"its history's epoch {last.get('epoch')} ends at step {last['steps']}"
                      + (f" + {epoch_steps}" if epoch_steps else ""))
  if problems:
    raise RunStateError(f"{path} counts {steps} steps in its ledger, but {' and '.join(problems)}"
                        ": the ledger was changed or belongs to another save; restore the "
                        "run's own state.json or use a new --output_dir")


def _saved_checkpoints(directory: str) -> List[str]:
  """The checkpoint files in `directory`, not temporaries: another worker's chief may be probing
  or writing there (RunState.check_writable, a save in progress) while this one looks."""
  if not os.path.isdir(directory):
    return []
  return [name for name in os.listdir(directory) if name.startswith("ckpt-")
          and not name.endswith(atomic.TEMPORARY_SUFFIXES)]


def _refuse_orphans(output_dir: str) -> None:
  """Refuses a directory with checkpoints or a spent ledger but no state.json: starting again
  at zero steps would drop the steps they came from."""
  orphans = [name for name, there in (
      (SPENT, os.path.exists(os.path.join(output_dir, SPENT))),
      ("checkpoints/", bool(_saved_checkpoints(os.path.join(output_dir, "checkpoints"))))) if there]
  if orphans:
    raise RunStateError(
        f"{output_dir} holds {' and '.join(orphans)} of an earlier run but no state.json: "
        "starting again at zero steps would leave their steps out of ε; restore state.json or "
        "use a new --output_dir")
