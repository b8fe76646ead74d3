"""Faults a user meets never shrink ε: signals, a full disk, a kill at each write, read-only
directories, leftover temporaries and reruns of a finished run (issue 26).

The invariant each test asserts: the steps a run finally reports cover every noisy step whose
weights or figures were written, counted here independently of the ledger (by wrapping the step
function), or the command is refused in one line before any step.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tfdp import atomic
from tfdp import config as config_lib
from tfdp.training import checkpointing
from tfdp.training import loop as training
from tfdp.training import stopping

STEPS_PER_EPOCH = 6  # ceil(1437 / 256) digits steps.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(output_dir, epochs=3, export=False):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config_lib.RunConfig(batch_size=256, epochs=epochs, output_dir=str(output_dir),
                               export=export, export_dir=str(output_dir) + "-export"))


class _CountedStep:
  """The run's step function, counting the noisy steps it takes and calling `after(count)`."""

  def __init__(self, step_fn, taken, after):
    self._step_fn, self._taken, self._after = step_fn, taken, after

  def __call__(self, chunks, step):
    result = self._step_fn(chunks, step=step)
    self._taken.append(step)
    self._after(len(self._taken))
    return result

  def __getattr__(self, name):
    return getattr(self._step_fn, name)


class _Taken(list):
  """Every noisy step any run of a test takes (its ledger index), in order; `after` is called
  with the count after each one."""

  def after(self, count):
    del count


@pytest.fixture
def taken(monkeypatch):
  steps = _Taken()
  make_step = training._make_step
  monkeypatch.setattr(training, "_make_step", lambda *args, **kwargs: _CountedStep(
      make_step(*args, **kwargs), steps, lambda count: steps.after(count)))
  return steps


def _versions(export_dir):
  return sorted(name for name in os.listdir(export_dir) if name.isdigit())


def _temporaries(*directories):
  """What atomic.sweep would clear, anywhere below `directories`."""
  found = []
  for directory in directories:
    for parent, names, files in os.walk(directory):
      found += [os.path.join(parent, name) for name in names + files
                if name.startswith(atomic.TEMPORARY_PREFIXES)
                or name.endswith(atomic.TEMPORARY_SUFFIXES + (".old",))]
  return found


def test_sigterm_mid_epoch_saves_every_step_and_the_rerun_takes_none_twice(tmp_path, taken):
  taken.after = lambda count: count == 8 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(stopping.Stopped, match="stopped by SIGTERM after step 2 of epoch 2") \
      as stopped:
    training.train_and_evaluate(_config(tmp_path))
  assert stopped.value.exit_code == 128 + signal.SIGTERM
  state = json.loads((tmp_path / "state.json").read_text())
  assert (state["epoch"], state["epoch_steps"], state["ledger"]["steps"]) == (1, 2, 8)
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Put back after the run.

  metrics = training.train_and_evaluate(_config(tmp_path))
  assert taken == list(range(3 * STEPS_PER_EPOCH))  # Each step once, in order: none lost or redone.
  assert metrics["steps"] == 3 * STEPS_PER_EPOCH
  assert [record["steps"] for record in metrics["history"]] == [6, 12, 18]


def test_a_stop_after_a_resume_that_counted_lost_steps_resumes_again(tmp_path, taken):
  """Killed before epoch 2's state.json (its 6 steps stay counted), resumed, stopped mid-epoch:
  the ledger then exceeds the history plus the partial epoch, and that is no tampering."""
  with pytest.MonkeyPatch.context() as patch:
    _fail_write_at_epoch(patch, _Killed(), "state.json", 12)
    with pytest.raises(_Killed):
      training.train_and_evaluate(_config(tmp_path))
  taken.after = lambda count: count == 14 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(stopping.Stopped, match="after step 2 of epoch 2"):
    training.train_and_evaluate(_config(tmp_path))
  metrics = training.train_and_evaluate(_config(tmp_path))
  assert len(taken) == 4 * STEPS_PER_EPOCH and metrics["steps"] == len(taken)


def test_sigterm_at_an_epoch_end_saves_that_epoch(tmp_path, taken):
  taken.after = lambda count: count == 6 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(stopping.Stopped, match="after epoch 1,"):
    training.train_and_evaluate(_config(tmp_path))
  state = json.loads((tmp_path / "state.json").read_text())
  assert (state["epoch"], state["epoch_steps"]) == (1, 0)


def test_a_second_ctrl_c_stops_at_once():
  request = stopping.StopRequest()
  request.handle(signal.SIGINT, None)
  assert request.requested and request.name == "SIGINT"
  with pytest.raises(KeyboardInterrupt):
    request.handle(signal.SIGINT, None)


def test_the_command_exits_143_in_one_line_on_sigterm_having_saved(tmp_path):
  run = str(tmp_path / "run")
  flags = ["--flagfile=flags/quickstart.flags", f"--output_dir={run}", "--epochs=6", "--noexport"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  process = subprocess.Popen([sys.executable, "-m", "tfdp.train", *flags], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in process.stdout:
    if line.startswith("Epoch 3/6"):
      process.send_signal(signal.SIGTERM)
      break
  _, errors = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, errors
  assert errors.strip().splitlines()[-1].startswith("tfdp.train: stopped by SIGTERM after ")
  assert "Traceback" not in errors
  # What the resume then does is test_sigterm_mid_epoch_saves_every_step_...'s (in process).
  state = json.loads(open(os.path.join(run, "state.json")).read())
  assert state["ledger"]["steps"] == state["epoch"] * 12 + state["epoch_steps"] >= 24


DISK_FULL_AT_SECOND_STATE = textwrap.dedent("""
    import errno, os, sys
    from absl import app
    from tfdp import atomic, train

    class FullDisk:  # The second state.json finds the disk full.
      writes = 0
      def replace(self, source, destination):
        if destination.endswith("state.json"):
          FullDisk.writes += 1
          if FullDisk.writes == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), destination)
        os.replace(source, destination)
      def __getattr__(self, name):
        return getattr(os, name)

    atomic.os = FullDisk()
    sys.argv[0] = "tfdp.train"
    app.run(train.main)
""")


def test_the_command_ends_in_one_line_on_a_full_disk_with_its_steps_counted(tmp_path):
  run = str(tmp_path / "run")
  flags = ["--flagfile=flags/quickstart.flags", f"--output_dir={run}", "--epochs=3", "--noexport"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  full = subprocess.run([sys.executable, "-c", DISK_FULL_AT_SECOND_STATE, *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert full.returncode == 1, full.stderr
  assert "Traceback" not in full.stderr
  assert full.stderr.strip().splitlines()[-1].startswith(
      "tfdp.train: error: [Errno 28] No space left on device")
  assert "spent.json" in full.stderr and not _temporaries(run)
  # Epoch 2's checkpoint was written before the full disk: its 24 steps are counted for the
  # resume (test_a_failed_write_never_shrinks_the_reported_steps runs it, in process).
  assert json.loads(open(os.path.join(run, "spent.json")).read())["steps"] == 24


class _FailingOs:
  """The os module as tfdp.atomic sees it, except that renaming onto a path ending in `target`
  fails with `error`: the temporary file is written and then the disk is full (or the process is
  killed)."""

  def __init__(self, target, error):
    self._target, self._error = target, error

  def replace(self, source, destination):
    if destination.endswith(os.sep + self._target):
      raise self._error
    os.replace(source, destination)

  def __getattr__(self, name):
    return getattr(os, name)


class _Killed(BaseException):
  """What a SIGKILL would leave: nothing after the raise runs (not an Exception: no handler)."""


def _disk_full():
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_checkpoint(monkeypatch, error, at_save):
  """The `at_save`-th checkpoint fails half-written, leaving TensorFlow's temporary."""
  save, saves = tf.train.CheckpointManager.save, []

  def failing_save(manager, *args, **kwargs):
    saves.append(1)
    if len(saves) == at_save:
      os.makedirs(os.path.join(manager.directory, f"ckpt-{at_save}_temp"))
      raise (tf.errors.ResourceExhaustedError(None, None, "No space left on device")
             if isinstance(error, OSError) else error)
    return save(manager, *args, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", failing_save)


def _fail_export(monkeypatch, error):
  def failing_save(obj, export_dir, **kwargs):
    os.makedirs(os.path.join(export_dir, "variables"))  # Part of it written.
    raise error

  monkeypatch.setattr(tf.saved_model, "save", failing_save)


def _fail_write(target):
  def inject(monkeypatch, error):
    monkeypatch.setattr(atomic, "os", _FailingOs(target, error))
  return inject


# Where a write fails on the first run of 2 epochs (its second epoch, or its end), and how many
# noisy steps never leave memory: only a failed spent.json, which is written before anything else.
WRITE_FAULTS = {
    "spent.json": (lambda patch, error: _fail_write_at_epoch(patch, error, "spent.json", 12),
                   STEPS_PER_EPOCH),
    "checkpoint": (lambda patch, error: _fail_checkpoint(patch, error, at_save=2), 0),
    "state.json": (lambda patch, error: _fail_write_at_epoch(patch, error, "state.json", 12), 0),
    "metrics.json": (_fail_write("metrics.json"), 0),
    "export": (_fail_export, 0),
}


def _fail_write_at_epoch(monkeypatch, error, target, steps):
  """Fails the write of `target` that records `steps` steps."""
  write_text = atomic.write_text

  def failing(path, text):
    if os.path.basename(path) == target and '"steps": %d' % steps in text:
      monkeypatch.setattr(atomic, "os", _FailingOs(target, error))
    try:
      write_text(path, text)
    finally:
      monkeypatch.setattr(atomic, "os", os)

  monkeypatch.setattr(atomic, "write_text", failing)


@pytest.mark.parametrize("point, fault", [(point, "disk_full") for point in WRITE_FAULTS]
                         + [(point, "kill") for point in ("spent.json", "checkpoint", "export")])
def test_a_failed_write_never_shrinks_the_reported_steps(tmp_path, taken, point, fault):
  inject, never_written = WRITE_FAULTS[point]
  error = _disk_full() if fault == "disk_full" else _Killed()
  with pytest.MonkeyPatch.context() as patch:
    inject(patch, error)
    with pytest.raises(type(error)):
      training.train_and_evaluate(_config(tmp_path / "run", epochs=2, export=True))
  export_dir = str(tmp_path / "run") + "-export"
  if fault == "disk_full":  # Cleaned on the way out; a kill's leftovers go at the next start.
    assert not _temporaries(tmp_path), _temporaries(tmp_path)
  first = len(taken)

  metrics = training.train_and_evaluate(_config(tmp_path / "run", epochs=2, export=True))
  assert not _temporaries(tmp_path), _temporaries(tmp_path)
  assert metrics["steps"] >= len(taken) - never_written  # The invariant.
  assert metrics["steps"] == len(taken) - never_written  # And no step counted twice.
  assert first >= 2 * STEPS_PER_EPOCH - (STEPS_PER_EPOCH if never_written else 0)
  # A run that exported but could not record its metrics is not finished: it exports again.
  assert _versions(export_dir) == (["1", "2"] if point == "metrics.json" else ["1"])


def test_a_read_only_checkpoint_directory_is_refused_before_any_step(tmp_path, taken,
                                                                     monkeypatch):
  training.train_and_evaluate(_config(tmp_path, epochs=1))
  spent = (tmp_path / "spent.json").read_text()
  os.chmod(tmp_path / "checkpoints", 0o500)
  if os.geteuid() == 0:  # Root writes there anyway: the write fails as it would for a user.
    monkeypatch.setattr(atomic, "os", _FailingOs("checkpoints/.tmp-probe", PermissionError(
        errno.EACCES, os.strerror(errno.EACCES))))
  try:
    with pytest.raises(checkpointing.RunStateError, match="checkpoints cannot be written"):
      training.train_and_evaluate(_config(tmp_path, epochs=2))
  finally:
    os.chmod(tmp_path / "checkpoints", 0o700)
  assert len(taken) == STEPS_PER_EPOCH and (tmp_path / "spent.json").read_text() == spent


def test_temporaries_a_kill_left_are_swept_and_a_half_replaced_export_put_back(tmp_path):
  training.train_and_evaluate(_config(tmp_path, epochs=1, export=True))
  saved_model = tmp_path / "saved_model"
  os.replace(saved_model, str(saved_model) + ".old")  # Killed inside atomic.replace_dir.
  left = [tmp_path / ".tmp-state.jsonx1", tmp_path / ".tmp-saved_modelx2" / "variables",
          tmp_path / "checkpoints" / "ckpt-2_temp" / "part", tmp_path / "checkpoints" /
          "checkpoint.tmpab12", tmp_path.parent / (tmp_path.name + "-export") / ".tmp-2x3"]
  for path in left:
    os.makedirs(path.parent, exist_ok=True)
    path.write_text("")

  training.train_and_evaluate(_config(tmp_path, epochs=2, export=True))
  assert not _temporaries(tmp_path, str(tmp_path) + "-export")
  assert (saved_model / "saved_model.pb").exists()


def test_a_rerun_of_a_finished_run_says_so_and_exports_nothing_again(tmp_path, taken, capsys):
  first = training.train_and_evaluate(_config(tmp_path, epochs=1, export=True))
  again = training.train_and_evaluate(_config(tmp_path, epochs=1, export=True))
  assert "is a finished run" in capsys.readouterr().out
  assert again == first and len(taken) == STEPS_PER_EPOCH
  assert _versions(str(tmp_path) + "-export") == ["1"]
  with open(os.path.join(str(tmp_path) + "-export", "model_card.json")) as f:
    assert "timing" in json.load(f)["not_covered"]  # Wall time follows the private batch sizes.


# Issue 29: what a newcomer meets on the quickstart.


def test_a_second_ctrl_c_says_where_the_run_was_and_what_its_checkpoint_holds(tmp_path, taken):
  def twice(count):
    if count == 8:  # Step 2 of epoch 2: the first sets the stop, the second stops at once.
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)
  taken.after = twice
  # Python's own handler, or SIG_IGN when the tests were started as a background job (`cmd &`).
  before = signal.getsignal(signal.SIGINT)
  with pytest.raises(stopping.Interrupted) as interrupted:
    training.train_and_evaluate(_config(tmp_path))
  assert str(interrupted.value) == (
      "stopped at once by a second Ctrl-C in epoch 2/3; the last checkpoint holds epoch 1/3; run "
      "the same command to resume")
  assert interrupted.value.exit_code == 130 and isinstance(interrupted.value, KeyboardInterrupt)
  assert signal.getsignal(signal.SIGINT) is before  # Put back.


def test_a_stop_after_the_last_epoch_leaves_metrics_and_export_to_the_rerun(tmp_path, taken):
  taken.after = lambda count: count == 18 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(stopping.Stopped, match="after its last epoch, before writing metrics.json "
                     "and the export, saved in .*: the last checkpoint holds epoch 3/3"):
    training.train_and_evaluate(_config(tmp_path, export=True))
  assert not (tmp_path / "metrics.json").exists()
  assert not os.path.exists(str(tmp_path) + "-export")
  metrics = training.train_and_evaluate(_config(tmp_path, export=True))
  assert len(taken) == metrics["steps"] == 3 * STEPS_PER_EPOCH  # No step taken again.
  assert _versions(str(tmp_path) + "-export") == ["1"]


def test_ctrl_c_while_the_command_starts_ends_in_one_line_with_130(tmp_path):
  # The flagfile is a FIFO: the command waits on it while parsing its flags, after TensorFlow's
  # import, so the signal arrives at a known point of the start with no sleep to tune.
  fifo = str(tmp_path / "flags.fifo")
  os.mkfifo(fifo)
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  process = subprocess.Popen([sys.executable, "-m", "tfdp.train", f"--flagfile={fifo}"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  writer = os.open(fifo, os.O_WRONLY)  # Returns once the command opened the flagfile.
  process.send_signal(signal.SIGINT)
  _, errors = process.communicate(timeout=300)
  os.close(writer)
  assert process.returncode == 130, errors
  assert errors.strip() == ("tfdp.train: stopped by SIGINT before training started; run the "
                            "same command to start again")


def test_tensorboard_of_a_killed_and_resumed_run_holds_each_epoch_once(tmp_path, taken):
  with pytest.MonkeyPatch.context() as patch:  # Killed after epoch 2's events, before its state.
    _fail_write_at_epoch(patch, _Killed(), "state.json", 12)
    with pytest.raises(_Killed):
      training.train_and_evaluate(_config(tmp_path))
  assert _tensorboard_steps(tmp_path)["epsilon"] == [1, 2]  # Epoch 2: logged, not checkpointed.
  training.train_and_evaluate(_config(tmp_path))
  steps = _tensorboard_steps(tmp_path)
  assert steps["epsilon"] == steps["test_accuracy"] == [1, 2, 3]


def _tensorboard_steps(run_dir):
  """{tag: the steps it has, in the order TensorBoard reads the event files}."""
  steps = {}
  for path in sorted((run_dir / "tensorboard").iterdir()):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        steps.setdefault(value.tag, []).append(event.step)
  return steps


def test_a_rerun_of_a_finished_run_names_its_epochs_epsilon_metrics_and_export(tmp_path, taken,
                                                                                capsys):
  training.train_and_evaluate(_config(tmp_path, epochs=1, export=True))
  capsys.readouterr()
  training.train_and_evaluate(_config(tmp_path, epochs=1, export=True))
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith(f"{tmp_path} is a finished run: 1/1 epochs, ε = ")
  assert lines[0].endswith("nothing to train or export.")
  assert lines[1:3] == [f"Metrics: {tmp_path}/metrics.json", f"Export: {tmp_path}-export/1"]
  assert lines[3].startswith("To export it again: python -m tfdp.export") and len(lines) == 4
  assert len(taken) == STEPS_PER_EPOCH
