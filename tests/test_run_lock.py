"""tfdp.run_lock: one command at a time writes a run directory or an export base directory."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tfdp import run_lock

HOLD_SCRIPT = textwrap.dedent("""
    import sys, time
    from tfdp import run_lock
    with run_lock.hold(sys.argv[1]):
      print("held", flush=True)
      time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
  """Another process holding tmp_path/run's lock; yields (its directory, the process)."""
  directory = str(tmp_path / "run")
  process = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, directory],
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "held"
  yield directory, process
  process.kill()
  process.wait()


def test_a_second_process_is_refused_naming_the_holder_and_gets_it_once_the_holder_dies(holder):
  directory, process = holder
  with pytest.raises(run_lock.DirectoryInUse, match=f"pid {process.pid} on .*{directory}") \
      as error:
    with run_lock.hold(directory):
      pytest.fail("held a lock another process holds")
  assert directory in str(error.value) and "another directory" in str(error.value)
  process.send_signal(signal.SIGKILL)  # No clean-up runs: the kernel drops the lock.
  process.wait()
  with run_lock.hold(directory):
    assert os.path.exists(os.path.join(directory, run_lock.LOCK_NAME))


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
  directory = str(tmp_path / "run")
  with run_lock.hold(directory):
    with run_lock.hold(directory):  # A run exporting into a directory it holds.
      pass
    child = subprocess.run([sys.executable, "-c", HOLD_SCRIPT.replace("600", "0"), directory],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode != 0 and "is in use by another tfdp command" in child.stderr
  child = subprocess.run([sys.executable, "-c", HOLD_SCRIPT.replace("600", "0"), directory],
                         capture_output=True, text=True, timeout=120)
  assert child.returncode == 0, child.stderr


def test_a_second_train_command_on_a_held_run_directory_exits_in_one_line_writing_nothing(holder):
  directory, process = holder
  before = sorted(os.listdir(directory))
  started = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "tfdp.train", "--dataset=digits", "--model=linear", "--epochs=1",
       "--epsilon=3", f"--output_dir={directory}"],
      capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("tfdp.train: error: ") and f"pid {process.pid}" in last
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(directory)) == before  # No checkpoint, state or metrics written.
  assert time.monotonic() - started < 300


def test_a_versioned_export_refuses_a_held_base_directory(holder):
  from tfdp.serving import saved_model  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  directory, _ = holder
  inputs = tf.keras.Input((2, 2, 1))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(inputs)))
  with pytest.raises(run_lock.DirectoryInUse):
    saved_model.export_versioned(model, directory)
  assert saved_model.next_version(directory) == 1  # Nothing was exported.
