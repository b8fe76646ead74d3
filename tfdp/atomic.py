"""Writes that are never left half-done: write to a temporary path beside the target, then rename."""

import os
import shutil
import tempfile


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


def temp_dir_beside(final_dir: str) -> str:
  """A fresh empty directory on the same file system as `final_dir` (so the rename is atomic)."""
  parent = os.path.dirname(os.path.abspath(final_dir))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(final_dir))
