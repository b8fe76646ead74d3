"""SIGTERM and SIGINT end a run after its current step, with its steps saved and counted.

Why it matters for the guarantee, not only for convenience. A scheduler stops a job with SIGTERM
and kills it a grace period later; a run that died at once would take its unfinished epoch again
from the last checkpoint, spending those steps' privacy twice (tfdp.training.checkpointing counts
both). Stopping after the step in flight loses nothing: the loop saves the weights and the ledger
of every step taken, mid-epoch included, and the next command resumes at the next step.

The handler only sets a flag: the step in flight (a TensorFlow call, which Python's signal handling
does not interrupt) finishes, the loop sees the flag, saves, and raises `Stopped`, whose message the
command prints before it exits with 128 + the signal's number. A second Ctrl-C stops at once
(KeyboardInterrupt), as a user who presses it twice expects; the steps then count as after a kill.
"""

import contextlib
import signal
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """The run stopped on a signal after saving; `exit_code` is 128 + the signal's number."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.exit_code = 128 + signum


class StopRequest:
  """Whether a stop was asked for: `signum` is None until a handled signal arrives."""

  def __init__(self):
    self.signum: Optional[int] = None

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.requested else ""

  def handle(self, signum, frame) -> None:
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # The second Ctrl-C.
    self.signum = signum
    print(f"\n{self.name}: stopping after the step in flight, then saving "
          "(Ctrl-C again stops at once)", flush=True)


@contextlib.contextmanager
def on_signals(install: bool = True) -> Iterator[StopRequest]:
  """Yields a StopRequest that SIGTERM and SIGINT set during the block; the previous handlers
  are put back after it. Nothing is installed outside the main thread (Python allows handlers
  only there) or when `install` is False."""
  request = StopRequest()
  if not install or threading.current_thread() is not threading.main_thread():
    yield request
    return
  previous = {signum: signal.signal(signum, request.handle) for signum in SIGNALS}
  try:
    yield request
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
