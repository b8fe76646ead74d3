"""An exclusive lock on a directory that a command writes: one run (or export) at a time.

Why it is part of the guarantee. A run's ledger counts the noisy steps of one process. Two
commands on the same run directory (a scheduler's retry, the same command launched twice) would
each train from the same state and each report its own steps, while the directory, and whatever
they exported, held the work of both: an ε below what was spent. With the lock, the second
command exits at once with a line naming the holder, before it reads or writes anything.

The lock is `flock` on `<dir>/.lock`: the kernel drops it when its holder exits, however it exits
(`kill -9` included), so a dead run never blocks the next. The file holds the holder's pid, host,
start time and command, for the message; it is never deleted (deleting it would let a process that
opened the old file and one that creates a new file both "hold" the lock). Within one process the
lock is re-entrant: a run that exports into a directory it already holds does not deadlock.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Dict, Iterator, List

LOCK_NAME = ".lock"

_HELD: Dict[str, List[int]] = {}  # Real path of a lock file -> [file descriptor, depth].


class DirectoryInUse(ValueError):
  """Another process holds the directory's lock."""


@contextlib.contextmanager
def hold(directory: str) -> Iterator[None]:
  """Holds `directory`'s lock for the block (creating the directory); re-entrant per process.

  Raises:
    DirectoryInUse: another process holds it; the message names that process and the directory.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.realpath(os.path.join(directory, LOCK_NAME))
  if path in _HELD:
    _HELD[path][1] += 1
    try:
      yield
    finally:
      _HELD[path][1] -= 1
    return
  descriptor = _acquire(path, directory)
  _HELD[path] = [descriptor, 1]
  try:
    yield
  finally:
    del _HELD[path]
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def _acquire(path: str, directory: str) -> int:
  descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    holder = _read_holder(descriptor)
    os.close(descriptor)
    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise
    raise DirectoryInUse(
        f"{directory} is in use by another tfdp command ({holder}); wait for it to finish, or "
        "give this one another directory") from None
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor, json.dumps(_holder()).encode(), 0)
  return descriptor


def _holder() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}


def _read_holder(descriptor: int) -> str:
  try:
    holder = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
  except ValueError:  # Being written right now.
    return "pid unknown"
  if not holder:
    return "pid unknown"
  return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
          f"{holder.get('command')}")
