"""Benchmark one training step per clipping mode: examples per second and peak memory.

  python -m tfdp.bench                      # ResNet-20, batch 256, every mode (minutes on a CPU)
  python -m tfdp.bench --model=resnet20 --batch_size=32 --steps=2 --modes=nonprivate,vectorized
  python -m tfdp.bench --model=linear --input_shape=8,8,1 --batch_size=16 --steps=1 \
      --output=/tmp/bench.json
  python -m tfdp.bench --modes=nonprivate,fast --noweight_standardization   # plain convolutions

The model options are tfdp.train's (--model_kwargs, --groupnorm_groups, --activation,
--weight_standardization). The header names the CPU, its features and whether oneDNN is on.

Speed is measured in this process. Every mode gets its own model, optimizer and TrainStep and one
warm-up step (tracing), then a second once all are built; then the modes take turns for `--rounds`
rounds, each round timing `--steps` logical steps of `--batch_size` examples. The best round is
reported and every round is shown. Peak memory is measured afterwards in one child process per mode
(`--_child_mode`), because a process's peak RSS only ever grows, so modes sharing one process would
hide each other. A mode whose engine or options TrainStep does not know (yet) is skipped with
the reason. The last stdout line is one line of JSON.

The data are random (images N(0, 1), uniform labels): a step's cost does not depend on the values.
"""

import dataclasses
import datetime
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
import scipy.stats
import tensorflow as tf

from tfdp import atomic
from tfdp import config as config_lib
from tfdp import cpu
from tfdp import models
from tfdp import optimizers
from tfdp import precision
from tfdp import stack
from tfdp.training import steps

# Each mode is the keyword arguments it passes to tfdp.training.steps.TrainStep, unchanged, and
# the precision (tfdp.precision) its model is built in, float32 where it names none.
MODES: Dict[str, dict] = {
    "nonprivate": dict(private=False),
    "fast": dict(private=True, engine="fast"),  # Ghost / book-keeping clipping, one global norm.
    "fast_layer": dict(private=True, engine="fast", clip_groups="layer"),  # One norm per layer.
    "vectorized": dict(private=True, engine="vectorized"),  # Each example alone, vectorized_map.
    "nonprivate_bf16": dict(private=False, precision=precision.MIXED_BFLOAT16),
    "fast_bf16": dict(private=True, engine="fast", precision=precision.MIXED_BFLOAT16),
}
DEFAULT_MODES = ("nonprivate", "fast", "fast_layer", "vectorized")
CHILD_STEPS = 2  # The first step traces, the second runs traced: the peak covers both.
L2_NORM_CLIP = 1.0  # Clipping costs the same at any C.
NOISE_MULTIPLIER = 1.0  # Noise is drawn every private step, so it is timed; σ changes no cost.
LEARNING_RATE = 0.01  # Small, so that random labels never push the weights to inf (slower math).


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
  """What to benchmark. Checks itself; `modes` must be keys of MODES."""
  model: str = "resnet20"
  model_options: Tuple[Tuple[str, object], ...] = ()  # Builder options, as tfdp.train's.
  batch_size: int = 256  # Logical batch: examples per step.
  steps: int = 3  # Timed steps per mode per round.
  rounds: int = 2  # Round robin over the modes, so slow drift of the machine hits every mode.
  modes: Tuple[str, ...] = DEFAULT_MODES
  input_shape: Tuple[int, int, int] = (32, 32, 3)
  num_classes: int = 10
  physical_batch_size: Optional[int] = None  # Rows per chunk; None: the whole batch in one chunk.
  vectorized_physical_batch_size: int = 8  # Superlinear cost in rows; 256 runs out of memory.
  memory: bool = True  # Measure peak RSS in child processes.
  child_timeout_s: float = 1800.0  # Per memory child; ResNet-20 vectorized at 256 takes minutes.
  seed: int = 0

  def __post_init__(self):
    unknown = [m for m in self.modes if m not in MODES]
    _require(not unknown, f"unknown mode(s) {unknown}; valid: {', '.join(MODES)}")
    _require(self.model in models.MODELS,
             f"unknown model {self.model!r}; valid: {', '.join(sorted(models.MODELS))}")
    models.registry.check_options(self.model, dict(self.model_options))
    for name in ("batch_size", "steps", "rounds", "vectorized_physical_batch_size"):
      _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
    _require(self.physical_batch_size is None or self.physical_batch_size >= 1,
             f"physical_batch_size must be >= 1, got {self.physical_batch_size}")
    _require(self.child_timeout_s > 0, f"child_timeout_s must be > 0, got {self.child_timeout_s}")

  def chunk_size(self, mode: str) -> int:
    """Rows per chunk for `mode`, at most the batch size."""
    if MODES[mode].get("engine") == "vectorized":
      return min(self.vectorized_physical_batch_size, self.batch_size)
    return min(self.physical_batch_size or self.batch_size, self.batch_size)


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


@dataclasses.dataclass
class ModeResult:
  """What was measured for one mode; None where it was not (see `notes`)."""
  round_examples_per_second: List[float] = dataclasses.field(default_factory=list)
  build_rss_mb: Optional[float] = None  # RSS after building, before the first step.
  peak_rss_mb: Optional[float] = None
  notes: List[str] = dataclasses.field(default_factory=list)

  @property
  def examples_per_second(self) -> Optional[float]:
    return max(self.round_examples_per_second, default=None)


# Build the steps.

def make_chunks(config: BenchConfig, chunk_size: int) -> List[Tuple[tf.Tensor, ...]]:
  """The logical batch as (images float32 [P,H,W,C], labels int32 [P], mask float32 [P]) chunks.

  The last chunk is padded with mask-0 rows, so every chunk has one shape (one trace).
  """
  rng = np.random.default_rng(config.seed)
  count = -(-config.batch_size // chunk_size) * chunk_size
  images = rng.standard_normal((count, *config.input_shape), dtype=np.float32)
  labels = rng.integers(0, config.num_classes, count, dtype=np.int32)
  mask = (np.arange(count) < config.batch_size).astype(np.float32)
  return [tuple(tf.constant(a[i:i + chunk_size]) for a in (images, labels, mask))
          for i in range(0, count, chunk_size)]


def build_step(config: BenchConfig, mode: str) -> steps.TrainStep:
  """A fresh model, optimizer and TrainStep for `mode`.

  Raises:
    ValueError, TypeError: TrainStep refuses the mode (unknown engine, unknown keyword).
  """
  options = dict(MODES[mode])
  built_in = options.pop("precision", precision.FLOAT32)
  precision.check(built_in)  # A CPU without bfloat16 arithmetic: the mode is skipped, with why.
  tf.keras.utils.set_random_seed(config.seed)
  with precision.policy(built_in):
    model = models.build_model(config.model, config.num_classes, config.input_shape,
                               **dict(config.model_options))
  optimizer = (optimizers.build_optimizer("dp_sgd", LEARNING_RATE, l2_norm_clip=L2_NORM_CLIP,
                                          noise_multiplier=NOISE_MULTIPLIER)
               if options.get("private") else optimizers.build_optimizer("sgd", LEARNING_RATE))
  return steps.TrainStep(model, optimizer, tf.identity,
                         expected_batch_size=config.batch_size, **options)


def _error_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


def prepare(config: BenchConfig, mode: str, result: ModeResult):
  """(TrainStep, chunks) after one warm-up step, or None with the reason noted in `result`."""
  try:
    step = build_step(config, mode)
  except (ValueError, TypeError) as error:
    result.notes.append(f"skipped: {_error_line(error)}")
    return None
  chunks = make_chunks(config, config.chunk_size(mode))
  try:
    step(chunks)  # Traces. Any failure ends this mode only: the table reports it and goes on.
  except Exception as error:  # pylint: disable=broad-except
    result.notes.append(f"failed in warm-up: {_error_line(error)}")
    return None
  return step, chunks


# Speed, in this process.

def time_steps(step: steps.TrainStep, chunks, count: int) -> float:
  """Seconds for `count` logical steps (each returns Python floats, so the work is done)."""
  start = time.perf_counter()
  for _ in range(count):
    step(chunks)
  return time.perf_counter() - start


def measure_speed(config: BenchConfig, results: Dict[str, ModeResult]) -> None:
  """Fills `round_examples_per_second` of every mode that builds and warms up."""
  prepared = {mode: prepare(config, mode, results[mode]) for mode in config.modes}
  prepared = {mode: pair for mode, pair in prepared.items() if pair is not None}
  for step, chunks in prepared.values():
    step(chunks)  # Untimed: a mode's first step after other modes were built runs up to 20x slow.
  for _ in range(config.rounds):
    for mode, (step, chunks) in prepared.items():
      seconds = time_steps(step, chunks, config.steps)
      results[mode].round_examples_per_second.append(config.batch_size * config.steps / seconds)
  tf.keras.backend.clear_session()


# Peak memory, one child process per mode.

def _status_mb(field: str) -> float:
  """VmHWM (peak RSS) or VmRSS (current RSS) of this process, in MB, from /proc/self/status.

  Not ru_maxrss: Linux carries the high-water mark of the process that exec'd into the new one, so
  a child started from the benchmark (which holds every mode's model by then) reports the parent's
  peak instead of its own. VmHWM belongs to the new address space and starts from zero at exec.
  """
  if not os.path.exists("/proc/self/status"):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Kilobytes (Linux).
  with open("/proc/self/status") as f:
    kilobytes = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
  return kilobytes / 1024


def child_main(config: BenchConfig, mode: str) -> dict:
  """In the child: build `mode`, run CHILD_STEPS steps, return the RSS record (or why skipped)."""
  try:
    step = build_step(config, mode)
  except (ValueError, TypeError) as error:
    return {"mode": mode, "skipped": _error_line(error)}
  chunks = make_chunks(config, config.chunk_size(mode))
  build_rss_mb = _status_mb("VmRSS")
  for _ in range(CHILD_STEPS):
    step(chunks)
  return {"mode": mode, "build_rss_mb": build_rss_mb, "peak_rss_mb": _status_mb("VmHWM")}


def child_command(config: BenchConfig, mode: str) -> List[str]:
  """The command line of the memory child for `mode`: the same benchmark, that mode only."""
  return [sys.executable, "-m", "tfdp.bench", f"--_child_mode={mode}", f"--modes={mode}",
          f"--model={config.model}",
          f"--model_kwargs={','.join(f'{k}={v}' for k, v in config.model_options)}",
          f"--batch_size={config.batch_size}",
          f"--input_shape={','.join(map(str, config.input_shape))}",
          f"--num_classes={config.num_classes}",
          f"--physical_batch_size={config.physical_batch_size or config.batch_size}",
          f"--vectorized_physical_batch_size={config.vectorized_physical_batch_size}",
          f"--seed={config.seed}"]


def _death_reason(returncode: int, stderr: str) -> str:
  if returncode < 0:
    name = signal.Signals(-returncode).name
    hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
    return f"memory child killed by {name}{hint}"
  lines = stderr.strip().splitlines()
  return f"memory child exited {returncode}: {lines[-1] if lines else 'no stderr'}"


def run_child(command: Sequence[str], timeout_s: float) -> Tuple[Optional[dict], str]:
  """(the child's last-line JSON, '') or (None, why not)."""
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The checkout.
  try:
    done = subprocess.run(list(command), cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return None, f"memory child killed after the {timeout_s:g} s timeout"
  if done.returncode != 0:
    return None, _death_reason(done.returncode, done.stderr)
  try:
    return json.loads(done.stdout.strip().splitlines()[-1]), ""
  except (IndexError, json.JSONDecodeError):
    return None, "memory child printed no JSON last line"


def measure_memory(config: BenchConfig, results: Dict[str, ModeResult]) -> None:
  """Fills the RSS fields of every mode that ran in the speed phase (the others are skipped)."""
  for mode in config.modes:
    result = results[mode]
    if not result.round_examples_per_second:
      continue
    record, reason = run_child(child_command(config, mode), config.child_timeout_s)
    if record is None or "skipped" in record:
      result.notes.append(reason or f"memory skipped: {record['skipped']}")
      continue
    result.build_rss_mb, result.peak_rss_mb = record["build_rss_mb"], record["peak_rss_mb"]


def run_bench(config: BenchConfig) -> Dict[str, ModeResult]:
  """Speed then memory; a result for every key of MODES (unrequested ones noted as such)."""
  results = {mode: ModeResult() for mode in MODES}
  for mode in MODES:
    if mode not in config.modes:
      results[mode].notes.append("not requested (--modes)")
  measure_speed(config, results)
  if config.memory:
    measure_memory(config, results)
  else:
    for mode in config.modes:
      results[mode].notes.append("memory not measured (--nomemory)")
  return results


# Report.

def summary(config: BenchConfig, results: Dict[str, ModeResult]) -> dict:
  """The JSON record: fixed keys, one entry per key of MODES, None where not measured."""
  return {"model": config.model, "model_options": dict(config.model_options),
          "batch_size": config.batch_size, "cpu": cpu.cpu_model(),
          "cpu_features": cpu.cpu_features(), "onednn": cpu.onednn_enabled(),
          "stack": stack.describe(),
          "examples_per_second": {m: r.examples_per_second for m, r in results.items()},
          "peak_memory_mb": {m: r.peak_rss_mb for m, r in results.items()}}


def provenance(command: str) -> str:
  """One line: CPU (model, cores, features, oneDNN), GPUs, TensorFlow, Keras and TF Privacy
  versions (tfdp.stack), UTC date, command."""
  gpus = len(tf.config.list_physical_devices("GPU"))
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  return (f"Machine: {cpu.describe()}, GPUs={gpus}, "
          f"{stack.describe()}; {date}; command: `{command}`")


def _number(value: Optional[float], spec: str) -> str:
  return "-" if value is None else format(value, spec)


def table_row(config: BenchConfig, mode: str, results: Dict[str, ModeResult]) -> str:
  result, baseline = results[mode], results["nonprivate"].examples_per_second
  speed = result.examples_per_second
  ratio = baseline / speed if speed and baseline else None
  rounds = ", ".join(f"{v:.1f}" for v in result.round_examples_per_second) or "-"
  growth = (result.peak_rss_mb - result.build_rss_mb if result.peak_rss_mb is not None else None)
  notes = list(result.notes)
  if mode in config.modes:
    chunk = config.chunk_size(mode)
    notes.insert(0, f"{-(-config.batch_size // chunk)} chunk(s) of {chunk}")
  note = "; ".join(notes).replace("|", "/")  # A '|' in an error message would split the cell.
  return (f"| {mode} | {_number(speed, '.1f')} | {rounds} | {_number(ratio, '.2f')} | "
          f"{_number(result.peak_rss_mb, '.0f')} | {_number(growth, '.0f')} | {note} |")


def method(config: BenchConfig) -> str:
  """One line on how the numbers were taken."""
  options = ", ".join(f"{k}={v}" for k, v in config.model_options)
  return (f"{config.model}{f' ({options})' if options else ''}, batch {config.batch_size}, "
          f"input {config.input_shape}: "
          f"{config.steps} timed step(s) per round after 2 warm-up steps, {config.rounds} "
          f"round(s) round robin, examples/s = best round; peak RSS (VmHWM) of a child running "
          f"{CHILD_STEPS} steps; growth = peak minus RSS after building.")


def poisson_chunks_per_step(batch_size: int, chunk_size: int) -> float:
  """E[ceil(n / P)] for n ~ Poisson(batch_size): chunks a Poisson-sampled training step runs.

  The bench times exactly batch_size rows; training draws a random number of rows and pads the
  last chunk, so an epoch runs this many chunks per step instead of batch_size / P.
  """
  counts = np.arange(0, int(batch_size + 12 * np.sqrt(batch_size) + 12))
  probabilities = scipy.stats.poisson.pmf(counts, batch_size)
  return float(np.sum(probabilities * np.maximum(1, np.ceil(counts / chunk_size))))


def training_prediction(config: BenchConfig, results: Dict[str, ModeResult]) -> str:
  """One line: the examples/s a Poisson-sampled training epoch should reach, per mode."""
  parts = []
  for mode, result in results.items():
    if result.examples_per_second:
      chunk = config.chunk_size(mode)
      timed = -(-config.batch_size // chunk)
      factor = poisson_chunks_per_step(config.batch_size, chunk) / timed
      parts.append(f"{mode} {result.examples_per_second / factor:.1f}")
  return ("Predicted training examples/s with Poisson sampling (padding to whole chunks): "
          + ", ".join(parts))


def format_table(config: BenchConfig, results: Dict[str, ModeResult], command: str) -> str:
  """Markdown: provenance, method, then one row per mode."""
  header = [provenance(command), method(config), "",
            "| mode | examples/s (best) | per round | step time / nonprivate | peak RSS MB | "
            "RSS growth MB | note |",
            "|---|---:|---|---:|---:|---:|---|"]
  return "\n".join(header + [table_row(config, mode, results) for mode in results])


# Entry point: flags are parsed here, once, into a BenchConfig. They are defined only when this
# module runs as a program, so that importing it (tests) never clashes with tfdp.train's flags.

_FLAGS = {}


def _define_flags() -> None:
  define = {
      "model": lambda: flags.DEFINE_enum("model", "resnet20", sorted(models.MODELS), "Model name."),
      "model_kwargs": lambda: flags.DEFINE_list(
          "model_kwargs", [], "Model builder options as key=value, as tfdp.train's."),
      "groupnorm_groups": lambda: flags.DEFINE_integer("groupnorm_groups", None,
                                                       "GroupNorm groups (models with GroupNorm)."),
      "activation": lambda: flags.DEFINE_string("activation", None, "Activation, e.g. relu."),
      "weight_standardization": lambda: flags.DEFINE_bool(
          "weight_standardization", None, "Weight-standardized convolutions (model default: on)."),
      "batch_size": lambda: flags.DEFINE_integer("batch_size", 256,
                                                 "Logical batch: examples per step."),
      "steps": lambda: flags.DEFINE_integer("steps", 3, "Timed steps per mode per round."),
      "rounds": lambda: flags.DEFINE_integer("rounds", 2, "Round-robin rounds over the modes; "
                                             "the best counts."),
      "modes": lambda: flags.DEFINE_list("modes", list(DEFAULT_MODES),
                                         f"Modes to run, of: {', '.join(MODES)}."),
      "input_shape": lambda: flags.DEFINE_list("input_shape", ["32", "32", "3"],
                                               "Height,width,channels."),
      "num_classes": lambda: flags.DEFINE_integer("num_classes", 10, "Number of classes."),
      "physical_batch_size": lambda: flags.DEFINE_integer(
          "physical_batch_size", None, "Rows per chunk; default: batch_size (one chunk)."),
      "vectorized_physical_batch_size": lambda: flags.DEFINE_integer(
          "vectorized_physical_batch_size", 8, "Rows per chunk for the vectorized engine, which "
          "is superlinear in rows and runs out of memory at 256."),
      "memory": lambda: flags.DEFINE_bool("memory", True,
                                          "Measure peak RSS in one child process per mode."),
      "child_timeout_s": lambda: flags.DEFINE_float("child_timeout_s", 1800.0,
                                                    "Seconds per memory child."),
      "seed": lambda: flags.DEFINE_integer("seed", 0,
                                           "Seed for the random data and the initialization."),
      "output": lambda: flags.DEFINE_string("output", None, "Also write the JSON record here."),
      "_child_mode": lambda: flags.DEFINE_string("_child_mode", None,
                                                 "Internal: run as the memory child."),
  }
  _FLAGS.update({name: make() for name, make in define.items()})


def config_from_flags() -> BenchConfig:
  value = {name: holder.value for name, holder in _FLAGS.items()}
  options = config_lib.model_options(
      value["model_kwargs"], groupnorm_groups=value["groupnorm_groups"],
      activation=value["activation"], weight_standardization=value["weight_standardization"])
  return BenchConfig(model=value["model"], model_options=options, batch_size=value["batch_size"],
                     steps=value["steps"],
                     rounds=value["rounds"], modes=tuple(value["modes"]),
                     input_shape=tuple(int(d) for d in value["input_shape"]),
                     num_classes=value["num_classes"],
                     physical_batch_size=value["physical_batch_size"],
                     vectorized_physical_batch_size=value["vectorized_physical_batch_size"],
                     memory=value["memory"], child_timeout_s=value["child_timeout_s"],
                     seed=value["seed"])


def main(argv):
  del argv
  try:
    config = config_from_flags()
  except ValueError as error:
    sys.exit(f"tfdp.bench: error: {error}")
  if _FLAGS["_child_mode"].value:
    print(json.dumps(child_main(config, _FLAGS["_child_mode"].value)))
    return
  results = run_bench(config)
  print(format_table(config, results, shlex.join(["python", "-m", "tfdp.bench", *sys.argv[1:]])))
  print(training_prediction(config, results))
  record = json.dumps(summary(config, results))
  if _FLAGS["output"].value:
    atomic.write_text(_FLAGS["output"].value, record + "\n")
  print(record)


def run() -> None:
  """The command `python -m tfdp.bench`."""
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
