"""A resumed run's TensorBoard curves continue from its checkpoint, with each step once.

A run logs each epoch to TensorBoard before it saves that epoch's checkpoint (tfdp.training.loop).
A run killed in between (kill -9, a lost machine) leaves points in its event file that no checkpoint
holds; the resume takes those epochs again and logs them again, into a new event file, and
TensorBoard would draw both histories. So before a resume logs anything, every event file of the
run is cut back to the checkpoint's step: the points after it are dropped (rewritten atomically,
tfdp.atomic), the points up to it are kept as they were. A record cut short by the kill is dropped
with them.

An event file is a TFRecord file of serialized `Event` protos; TensorFlow reads and writes it.
"""

import os
from typing import List, Tuple

import tensorflow as tf

from tfdp import atomic

_EVENT_FILE = "events.out.tfevents"  # How tf.summary names them: events.out.tfevents.<time>...


def event_paths(directory: str) -> List[str]:
  """The event files in `directory` (not below it), oldest name first; [] if there is none."""
  if not os.path.isdir(directory):
    return []
  return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                if name.startswith(_EVENT_FILE))


def _records(path: str) -> Tuple[List[bytes], bool]:
  """(the file's records, whether its end was cut short by a kill)."""
  records = []
  try:
    for record in tf.data.TFRecordDataset(path):
      records.append(record.numpy())
  except tf.errors.DataLossError:  # A truncated last record: the write a kill cut short.
    return records, True
  return records, False


def _after(record: bytes, last_step: int) -> bool:
  """Whether the event holds summaries of a step after `last_step` (file headers never are)."""
  event = tf.compat.v1.Event.FromString(record)
  return event.HasField("summary") and event.step > last_step


def truncate(directory: str, last_step: int) -> int:
  """Drops every summary of a step after `last_step` from the event files in `directory`.

  Call it while holding the run directory (tfdp.run_lock), before the resumed run logs.

  Args:
    directory: The run's TensorBoard directory.
    last_step: The last step (here, epoch) the checkpoint holds.

  Returns:
    How many events were dropped.
  """
  atomic.sweep(directory)  # A rewrite a kill cut short.
  dropped = 0
  for path in event_paths(directory):
    records, cut = _records(path)
    kept = [record for record in records if not _after(record, last_step)]
    if len(kept) == len(records) and not cut:
      continue
    dropped += len(records) - len(kept)
    _rewrite(path, kept)
  return dropped


def _rewrite(path: str, records: List[bytes]) -> None:
  """Replaces `path` by a TFRecord file of `records`, whole or not at all (as tfdp.atomic does:
  a temporary beside it, renamed; atomic.sweep clears one a kill left)."""
  temp = os.path.join(os.path.dirname(path), atomic.TEMPORARY_PREFIXES[0] + os.path.basename(path))
  with tf.io.TFRecordWriter(temp) as writer:
    for record in records:
      writer.write(record)
  os.replace(temp, path)
