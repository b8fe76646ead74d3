"""SIGTERM and SIGINT end a run after its current step, with its steps saved and counted.

Why it matters for the guarantee, not only for convenience. A scheduler stops a job with SIGTERM
and kills it a grace period later; a run that died at once would take its unfinished epoch again
from the last checkpoint, spending those steps' privacy twice (tfdp.training.checkpointing counts
both). Stopping after the step in flight loses nothing: the loop saves the weights and the ledger
of every step taken, mid-epoch included, and the next command resumes at the next step.

The handler only sets a flag: the step in flight (a TensorFlow call, which Python's signal handling
does not interrupt) finishes, the loop sees the flag, saves, and raises `Stopped`, whose message the
command prints before it exits with 128 + the signal's number. A second Ctrl-C stops at once
(`Interrupted`, a KeyboardInterrupt that says where the run was and what its last save holds), as a
user who presses it twice expects; the steps then count as after a kill.

Before the run installs its handlers (while the command imports TensorFlow, parses its flags and
loads the data) nothing is being trained or saved, so a command may `exit_at_once_on_signals`: a
signal then ends it at once in one line, with no traceback, until it `hand_over`s to the run.
"""

import contextlib
import signal
import sys
import threading
from typing import Callable, Dict, Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """The run stopped on a signal after saving; `exit_code` is 128 + the signal's number."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.exit_code = 128 + signum


class Interrupted(KeyboardInterrupt):
  """A second Ctrl-C stopped the run at once; the message says where, and what its last save
  holds."""

  exit_code = 128 + signal.SIGINT


class StopRequest:
  """Whether a stop was asked for: `signum` is None until a handled signal arrives.

  `where` (what the run is doing, e.g. 'in epoch 3/15') and `saved` (what its last complete save
  holds, e.g. 'the last checkpoint holds epoch 2/15') are the run's to keep current: a second
  Ctrl-C reports them.
  """

  def __init__(self):
    self.signum: Optional[int] = None
    self.where = "while setting up"
    self.saved = "no checkpoint yet"

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.requested else ""

  def handle(self, signum, frame) -> None:
    del frame
    if self.requested and signum == signal.SIGINT:  # The second Ctrl-C.
      raise Interrupted(f"stopped at once by a second Ctrl-C {self.where}; {self.saved}; run the "
                        "same command to resume")
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


# The handlers exit_at_once_on_signals replaced, by signal: hand_over puts them back.
_BEFORE_EXIT_AT_ONCE: Dict[int, object] = {}


def _exit_at_once(program: str) -> Callable:
  def handle(signum, frame):
    del frame
    print(f"\n{program}: stopped by {signal.Signals(signum).name} before training started; run "
          "the same command to start again", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)  # Not KeyboardInterrupt: nothing is left to report.
  return handle


def exit_at_once_on_signals(program: str) -> None:
  """Until `hand_over`, SIGTERM and SIGINT end the process at once: one line on stderr naming
  `program` and the signal, exit status 128 + its number, no traceback.

  For a command's start only (imports, flags, data), where no step is taken and nothing is half
  saved; call it in the main thread, before the slow imports.
  """
  for signum in SIGNALS:
    _BEFORE_EXIT_AT_ONCE.setdefault(signum, signal.signal(signum, _exit_at_once(program)))


def hand_over() -> None:
  """Puts back the handlers exit_at_once_on_signals replaced: from here the run handles signals
  (on_signals), or leaves them alone (multi-worker runs)."""
  while _BEFORE_EXIT_AT_ONCE:
    signum, handler = _BEFORE_EXIT_AT_ONCE.popitem()
    signal.signal(signum, handler)
