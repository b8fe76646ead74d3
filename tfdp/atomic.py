"""Writes that are never left half-done: write to a temporary path beside the target, then rename.

What a killed writer leaves is recognizable by name, and `sweep` clears it at the next start of a
command that holds the directory (tfdp.run_lock): `.tmp-*` (a file or directory being written),
`<dir>.old` (a directory being replaced), and TensorFlow's checkpoint temporaries (`*_temp/`,
`checkpoint.tmp*`).
"""

import os
import shutil
import tempfile
from typing import List


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (readers see the old file or the new one, never a part)."""
  write_bytes(path, text.encode())


def write_bytes(path: str, content: bytes) -> None:
  """Writes `content` to `path` atomically, like write_text."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp_path, path)
  except BaseException:
    if os.path.exists(temp_path):
      os.remove(temp_path)
    raise


def replace_dir(temp_dir: str, final_dir: str) -> None:
  """Moves a completely written `temp_dir` to `final_dir`, replacing any previous one."""
  if os.path.exists(final_dir):
    old = final_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final_dir, old)
    os.replace(temp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.makedirs(os.path.dirname(os.path.abspath(final_dir)), exist_ok=True)
    os.replace(temp_dir, final_dir)


def remove(path: str) -> None:
  """Removes a file or a directory tree; nothing if it is not there."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


def temp_dir_beside(final_dir: str) -> str:
  """A fresh empty directory on the same file system as `final_dir` (so the rename is atomic)."""
  parent = os.path.dirname(os.path.abspath(final_dir))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(final_dir))


TEMPORARY_PREFIXES = (".tmp-", "checkpoint.tmp")  # Ours, and tf.train.CheckpointManager's state.
TEMPORARY_SUFFIXES = ("_temp",)  # TensorFlow's sharded checkpoint writes: <prefix>_temp/.


def sweep(directory: str) -> List[str]:
  """Clears what killed writers left in `directory` (not below it); returns the paths removed.

  Only for a directory this process holds (tfdp.run_lock): another writer's temporaries would go
  too. A `<name>.old` whose `<name>` is missing is the previous complete version of a directory
  whose replacement was cut short (replace_dir): it is put back, not removed.
  """
  if not os.path.isdir(directory):
    return []
  removed = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    replaced = name.endswith(".old") and os.path.isdir(path)
    if replaced and not os.path.exists(path[:-len(".old")]):
      os.replace(path, path[:-len(".old")])
    elif name.startswith(TEMPORARY_PREFIXES) or name.endswith(TEMPORARY_SUFFIXES) or replaced:
      remove(path)
      removed.append(path)
  return removed
