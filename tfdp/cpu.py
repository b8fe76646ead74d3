"""The CPU this process runs on, and TensorFlow's oneDNN kernels.

TensorFlow 2.15 turns its oneDNN CPU kernels on by default only on CPUs with AVX-512-class
features (AVX512_VNNI, AVX512_BF16, AMX); on AVX2-only CPUs they stay off, and turning them on makes
every model here about 1.5x faster (docs/speed.md). TensorFlow reads TF_ENABLE_ONEDNN_OPTS once,
when it is first imported, so `import tfdp` sets it to 1 unless the user set it, before anything of
tfdp imports TensorFlow. A program that imported TensorFlow before tfdp keeps TensorFlow's default;
`onednn_status` says which happened.

TensorFlow's C++ log lines are read from TF_CPP_MIN_LOG_LEVEL at the same moment. On a machine
without a GPU, TensorFlow 2.15 prints a dozen of them at import (CUDA stubs, a "cuDNN factory"
registered twice, TensorRT not found) at ERROR level, about nothing the user can act on; so
`import tfdp` sets the level to 3 (fatal only) unless the user set it, like oneDNN. TensorFlow
2.21 (seen here; the versions between were not tried) prints a few more through absl before its
log is set up, which no variable silences; so a tfdp command (`python -m tfdp.<command>`) imports TensorFlow with its import-time
C++ lines dropped (`import_tensorflow_quietly`), where tfdp chose the level, keeping any other
line it printed.

This module imports no TensorFlow at load time.
"""

import os
import re
import sys
import tempfile
from typing import Dict, List, MutableMapping, Sequence

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"  # Fatal only: TensorFlow's C++ ERROR lines at import are noise (see above).
# Features that decide speed here: AVX2 (every supported CPU), AVX-512 and its neural-network
# extensions (TensorFlow's oneDNN default), AMX (Intel Sapphire Rapids and newer).
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")

# How the variable came to hold its value: recorded once, at `import tfdp`.
_ORIGIN: Dict[str, str] = {}
# TensorFlow's C++ log lines ('I0000 00:00:1796269321.943339   26299 port.cc:153] ...') and absl's
# notice before its log is set up: what a quiet import drops.
_CPP_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                           r"[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] )")
# Commands that import no TensorFlow (the accountant's command line).
_COMMANDS_WITHOUT_TENSORFLOW = ("tfdp.privacy",)


def default_onednn_on(environ: MutableMapping[str, str] = os.environ,
                      modules=sys.modules) -> str:
  """Sets TF_ENABLE_ONEDNN_OPTS=1 unless the user set it; returns who decided.

  Returns:
    'user' (the variable was set, left alone), 'tfdp' (set here, before TensorFlow was imported) or
    'tensorflow' (TensorFlow was already imported, so its own default holds; nothing is changed).
  """
  if ONEDNN_VARIABLE in environ:
    origin = "user"
  elif "tensorflow" in modules:
    origin = "tensorflow"
  else:
    environ[ONEDNN_VARIABLE] = "1"
    origin = "tfdp"
  _ORIGIN.setdefault("origin", origin)
  return origin


def default_quiet_logs(environ: MutableMapping[str, str] = os.environ,
                       modules=sys.modules) -> str:
  """Sets TF_CPP_MIN_LOG_LEVEL=3 unless the user set it; returns who decided, as
  default_onednn_on does ('user', 'tfdp' or 'tensorflow')."""
  if LOG_LEVEL_VARIABLE in environ:
    origin = "user"
  elif "tensorflow" in modules:
    origin = "tensorflow"
  else:
    environ[LOG_LEVEL_VARIABLE] = QUIET_LOG_LEVEL
    origin = "tfdp"
  _ORIGIN.setdefault("log_level", origin)
  return origin


def tfdp_command(argv: Sequence[str] = getattr(sys, "orig_argv", ())) -> bool:
  """Whether this process is `python -m tfdp.<command>` of a command that imports TensorFlow."""
  argv = list(argv)
  if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
    return False
  module = argv[argv.index("-m") + 1]
  return module.startswith("tfdp.") and not module.startswith(_COMMANDS_WITHOUT_TENSORFLOW)


def import_tensorflow_quietly(modules=sys.modules) -> None:
  """Imports TensorFlow, dropping the C++ log lines it prints on stderr while it loads, where
  tfdp chose the quiet level; every other line it printed is written back to stderr."""
  if "tensorflow" in modules or _ORIGIN.get("log_level") != "tfdp":
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return
  with tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401,F811  pylint: disable=import-outside-toplevel,unused-import
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    printed = captured.read().decode("utf-8", errors="replace")
  kept = [line for line in printed.splitlines() if not _CPP_LOG_LINE.match(line)]
  if kept:
    sys.stderr.write("\n".join(kept) + "\n")


def onednn_enabled() -> bool:
  """Whether this process's TensorFlow runs its oneDNN kernels (imports TensorFlow)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
  return bool(_pywrap_util_port.IsMklEnabled())


def onednn_status() -> str:
  """One phrase, e.g. 'oneDNN on (TF_ENABLE_ONEDNN_OPTS=1, set by tfdp)'."""
  value = os.environ.get(ONEDNN_VARIABLE)
  origin = _ORIGIN.get("origin", "user" if value is not None else "tensorflow")
  why = {"user": f"{ONEDNN_VARIABLE}={value}, set by the user",
         "tfdp": f"{ONEDNN_VARIABLE}={value}, set by tfdp",
         "tensorflow": "TensorFlow's default for this CPU: TensorFlow was imported before tfdp"}
  return f"oneDNN {'on' if onednn_enabled() else 'off'} ({why[origin]})"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name with its family and model numbers, or 'unknown CPU'.

  A virtual machine may show only a brand ("AMD EPYC"); the family and model numbers still tell
  its generations apart (AMD family 25 holds both AVX2-only and AVX-512 parts).
  """
  try:
    with open(cpuinfo) as f:
      fields = _first_processor(f)
  except OSError:
    return "unknown CPU"
  name = fields.get("model name", "unknown CPU")
  numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
  return f"{name} ({', '.join(numbers)})" if numbers and "model name" in fields else name


def _first_processor(lines) -> dict:
  """{key: value} of the first processor's block of /proc/cpuinfo (blocks end at a blank line)."""
  fields = {}
  for line in lines:
    if not line.strip() and fields:
      break
    if ":" in line:
      key, value = line.split(":", 1)
      fields[key.strip()] = value.strip()
  return fields


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> List[str]:
  """Which of FEATURES this CPU has, in FEATURES order ([] where /proc/cpuinfo is missing)."""
  try:
    with open(cpuinfo) as f:
      flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
  except OSError:
    return []
  return [feature for feature in FEATURES if feature in flags]


def describe() -> str:
  """One line for logs and benchmark headers: CPU model, cores, features, oneDNN state."""
  features = cpu_features()
  return (f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} core(s), features "
          f"{' '.join(f.upper() for f in features) or 'unknown'}"
          f"{'' if 'avx512f' in features else ' (no AVX-512)'}; {onednn_status()}")
