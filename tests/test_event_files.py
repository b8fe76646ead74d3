"""tfdp.training.event_files: a resumed run's TensorBoard files cut back to its checkpoint."""

import os

import tensorflow as tf

from tfdp.training import event_files


def _log(directory, steps):
  writer = tf.summary.create_file_writer(str(directory))
  with writer.as_default():
    for step in steps:
      tf.summary.scalar("epsilon", float(step), step=step)
  writer.close()


def _steps(directory):
  return [event.step for path in event_files.event_paths(str(directory))
          for event in tf.compat.v1.train.summary_iterator(path) if event.summary.value]


def test_points_after_the_checkpoint_are_dropped_and_the_rest_kept(tmp_path):
  _log(tmp_path, [1, 2, 3])
  assert event_files.truncate(str(tmp_path), last_step=1) == 2
  assert _steps(tmp_path) == [1]
  assert event_files.truncate(str(tmp_path), last_step=1) == 0  # Nothing left to drop.
  assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_a_record_a_kill_cut_short_is_dropped(tmp_path):
  _log(tmp_path, [1, 2])
  (path,) = event_files.event_paths(str(tmp_path))
  with open(path, "rb+") as f:
    f.truncate(os.path.getsize(path) - 5)  # The last record's end never reached the disk.
  event_files.truncate(str(tmp_path), last_step=2)
  assert _steps(tmp_path) == [1]


def test_no_tensorboard_directory_is_nothing_to_cut(tmp_path):
  assert event_files.truncate(str(tmp_path / "tensorboard"), last_step=0) == 0
