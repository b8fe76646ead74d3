"""What a training run tells: its opening summary, progress lines, epoch records and metrics.json.

What it reports, and how private each part is:
- ε (or, for a mechanism without a proof, `epsilon_if_dp_sgd`, which is no guarantee), the
  privacy statement and what the guarantee rests on (`release_metrics`): computed from the public
  plan and the ledger, never from the data.
- Accuracy and loss on the test data: held out, not private, released as they are.
- The training batches' loss and accuracy: computed from the private data without noise. A
  private run releases them only with --monitor_private_metrics, and then only under the
  NOT_PRIVATE prefix with NOT_PRIVATE_NOTE; `monitor_prefix` decides.
- Wall-clock speed and the time left: released without noise and not covered (TIMING_NOTE).

How much it prints follows --progress (Console): quiet, the result; normal, a short opening, one
line per epoch and the privacy statement at the start and the end; verbose, also per-step progress
and the full statement every epoch.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Optional

import tensorflow as tf

from tfdp import atomic
from tfdp import config as config_lib
from tfdp import cpu
from tfdp import models
from tfdp import stack
from tfdp.data import local_dp
from tfdp.dp import groups as dp_groups
from tfdp.dp import noise
from tfdp.priors import prior_files
from tfdp.privacy import ledger as ledger_lib
from tfdp import recipes
from tfdp.serving import release
from tfdp.training import distribution

TIMING_NOTE = ("wall-clock figures (examples_per_second, the progress lines' seconds and time "
               "left) grow with the number of chunks each step's Poisson batch needed, so they "
               "depend on the private batch sizes; they are released without noise and not "
               "covered")
NOT_PRIVATE = "not_private/"  # Prefix of the training-batch figures of --monitor_private_metrics.
NOT_PRIVATE_NOTE = ("computed from the private training batches without noise "
                    "(--monitor_private_metrics): NOT covered by the privacy guarantee")


class Console:
  """Prints a run's lines at its --progress level (config.PROGRESS_LEVELS, least first)."""

  def __init__(self, level: str = "normal"):
    self.level = level
    self._rank = config_lib.PROGRESS_LEVELS.index(level)

  def shows(self, least: str) -> bool:
    """Whether lines of level `least` are shown (every level shows the levels below it)."""
    return self._rank >= config_lib.PROGRESS_LEVELS.index(least)

  def say(self, text: str, least: str = "normal") -> None:
    """Prints `text` when the level is `least` or more."""
    if self.shows(least):
      print(text, flush=True)


def monitor_prefix(config: config_lib.Config) -> Optional[str]:
  """How the training batches' loss and accuracy are released: under their own names for
  non-private runs, prefixed NOT_PRIVATE for private runs with --monitor_private_metrics, else not
  at all (None): they are computed from the private data without noise."""
  if not config.optimizer.private:
    return ""
  return NOT_PRIVATE if config.run.monitor_private_metrics else None


def epsilon_key(ledger: ledger_lib.PrivacyLedger) -> str:
  """Where the accountant's ε goes: 'epsilon', or for a mechanism without a proof (DiceSGD)
  'epsilon_if_dp_sgd', DP-SGD's ε at the same σ, which is no guarantee."""
  return "epsilon" if ledger.proven else "epsilon_if_dp_sgd"


class EpochStats:
  """An epoch's steps and seconds, and its training batches' loss, accuracy and drawn size.

  The last three come from the private batches without noise: only `monitoring` exposes them, and
  only under the prefix monitor_prefix allows. Speed is reported from the steps and the expected
  batch size, never from the drawn sizes.
  """

  def __init__(self):
    self.loss, self.correct, self.examples, self.seconds, self.steps = 0.0, 0.0, 0.0, 0.0, 0

  def add(self, loss: float, correct: float, examples: float, seconds: float):
    self.loss += loss
    self.correct += correct
    self.examples += examples
    self.seconds += seconds
    self.steps += 1

  def monitoring(self, prefix: Optional[str]) -> dict:
    """Running train_loss and train_accuracy, keys prefixed by `prefix`; {} when it is None."""
    if prefix is None:
      return {}
    n = max(self.examples, 1.0)
    return {f"{prefix}train_loss": self.loss / n, f"{prefix}train_accuracy": self.correct / n}


class _LogLines:
  """Progress for logs (no terminal): one line every `interval` seconds and at the end."""

  def __init__(self, target: int, interval: float = 10.0):
    self._target, self._interval = target, interval
    self._start = self._last = time.monotonic()

  def update(self, current: int, values) -> None:
    now = time.monotonic()
    if now - self._last < self._interval and current < self._target:
      return
    self._last = now
    shown = " - ".join(f"{name}: {value:.4f}" for name, value in values)
    print(f"  {current}/{self._target} - {now - self._start:.0f}s - {shown}", flush=True)


class _StepCounter:
  """Progress within an epoch on a terminal, on one line that the next line overwrites."""

  def __init__(self, target: int, label: str):
    self._target, self._label = target, label

  def update(self, current: int, values) -> None:
    del values  # The epoch's line says what it ended at.
    text = f"{self._label}: step {current}/{self._target}"
    end = "\r" + " " * len(text) + "\r" if current >= self._target else ""
    sys.stdout.write(f"\r{text}{end}")
    sys.stdout.flush()


class _NoProgress:
  def update(self, current: int, values) -> None:
    del current, values


def progress(target: int, console: Optional[Console] = None, label: str = ""):
  """A progress display of `target` steps. Verbose: a Keras Progbar on a terminal, else _LogLines;
  normal: a step counter on a terminal, nothing in a log; quiet: nothing."""
  console = console or Console("verbose")
  terminal = sys.stdout.isatty()
  if console.shows("verbose") and terminal:
    shown = [p + k for p in ("", NOT_PRIVATE) for k in ("train_loss", "train_accuracy")]
    return tf.keras.utils.Progbar(target, stateful_metrics=shown + ["epsilon", "epsilon_if_dp_sgd"])
  if console.shows("verbose"):
    return _LogLines(target)
  if console.shows("normal") and terminal:
    return _StepCounter(target, label)
  return _NoProgress()


def epoch_record(epoch, ledger, stats, evaluation, monitor: Optional[str] = None) -> dict:
  """The epoch's history entry: ε, the test metrics and test_examples (the test examples they
  used) when the epoch was `evaluation`'s ({} when it was not evaluated), and the monitoring
  `monitor` allows."""
  record = {"epoch": epoch, "steps": ledger.steps,
            **{k: v for k, v in evaluation.items() if v is not None}, **stats.monitoring(monitor)}
  if ledger.private:
    record.update({k: v for k, v in ledger.epsilon_fields().items() if v is not None})
  return record


# The short lines' ε, by what stands behind it (ledger.guarantee()); the full statement says why.
# Each names the accountant ({accountant}) and the sampling behind the ε.
_EPSILON_FORMS = {
    "proven": "ε = {epsilon:.3f} ({accountant}, Poisson sampling)",
    "shuffle": "ε = {epsilon:.3f} ({accountant}; shuffled batches: an approximation, not a proof)",
    "reproducible": "ε = {epsilon:.3f} ({accountant}; reproducible noise: NO guarantee)",
    "unproven": "ε = {epsilon:.3f} if this were DP-SGD ({accountant}; no proven guarantee)"}


def epsilon_text(ledger, epsilon: Optional[float] = None) -> str:
  """ε so far (or `epsilon`) in a few words, qualified when no proof stands behind it."""
  if not ledger.private:
    return "non-private (ε = ∞)"
  return _EPSILON_FORMS[ledger.guarantee()].format(
      epsilon=ledger.epsilon() if epsilon is None else epsilon,
      accountant=ledger.accountant.upper())


def print_epoch(console: Console, record: dict, ledger, epochs: int,
                seconds_left: Optional[float]) -> None:
  """The epoch's line. Normal: epoch i/n, test accuracy, ε so far and the time left for the run
  (labelled not private: wall clock); verbose: the full statement (as before --progress)."""
  evaluated = ("test accuracy {:.4f} on {} test examples".format(
      record["test_accuracy"], record["test_examples"]) if "test_accuracy" in record
               else "not evaluated (--eval_every)")
  if console.shows("verbose"):
    console.say(f"  epoch {record['epoch']}: {evaluated}; "
                f"{ledger.describe() if ledger.private else 'non-private'}", "verbose")
    return
  epsilon = record.get("epsilon", record.get("epsilon_if_dp_sgd"))
  monitored = "".join(f"; {_MONITOR_LABELS[key]} {record[key]:.4f}" for key in _MONITOR_LABELS
                      if key in record)
  left = (f"; {_duration(seconds_left)} left (wall clock: not private)"
          if seconds_left is not None and record["epoch"] < epochs else "")
  console.say(f"Epoch {record['epoch']}/{epochs}: {evaluated}, {epsilon_text(ledger, epsilon)}"
              f"{monitored}{left}")


# The training-batch figures a record may hold (monitor_prefix), as the epoch's line names them.
_MONITOR_LABELS = {"train_accuracy": "train accuracy",
                   f"{NOT_PRIVATE}train_accuracy": "NOT PRIVATE train accuracy (no noise)"}


def _duration(seconds: float) -> str:
  """'about 12 s', 'about 5 min', 'about 2 h 10 min', or 'under a second'."""
  if seconds < 0.5:
    return "under a second"
  if seconds < 90:
    return f"about {seconds:.0f} s"
  if seconds < 90 * 60:
    return f"about {seconds / 60:.0f} min"
  return f"about {seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


_NOT_LOGGED = ("epoch", "test_examples")  # The step itself, and a count (metrics.json has it).


def log_epoch(writer, record: dict) -> None:
  """Writes the epoch's `record` to TensorBoard at its epoch."""
  with writer.as_default(step=record["epoch"]):
    for key, value in record.items():
      if key not in _NOT_LOGGED and value is not None:
        tf.summary.scalar(key, value)
  writer.flush()


def print_summary(config, dataset, model, ledger, sampler, engine, strategy=None,
                  console: Optional[Console] = None) -> None:
  """The run's opening lines: machine (verbose), model, data, optimizer, local DP, the privacy plan
  (σ, clip, planned ε and budget; nothing from the data) with the statement it would make after
  every planned step, and the replicas, when distributed. Quiet: none."""
  console = console or Console()
  console.say(cpu.describe(), "verbose")
  console.say(stack.describe(), "verbose")
  console.say(f"Model {config.model.name}: {models.count_params(model):,} trainable parameters")
  if hasattr(engine, "fast_layers"):
    fallback = [layer.name for layer in engine.fallback_layers]
    console.say(f"Fast clipping covers {len(engine.fast_layers)} layers; vectorized fallback for: "
                f"{', '.join(fallback) or 'none'}", "normal" if fallback else "verbose")
  console.say(f"Data {config.data.dataset}: {dataset.num_train} training / "
              f"{len(dataset.test_labels)} test examples, {dataset.num_classes} classes, input "
              f"{dataset.input_shape}")
  console.say(f"Optimizer {config.optimizer.name}, lr {config.optimizer.step_size}; "
              f"{sampler.steps_per_epoch} steps per epoch of expected batch "
              f"{config.run.batch_size} ({config.data.sampling} sampling, chunks of "
              f"{config.chunk_size})")
  if config.data.local_dp != "none":
    report = local_dp.report(config.data.local_dp, config.data.local_dp_scale,
                             dataset.input_shape)
    console.say(f"Local DP: training images perturbed once by {report['mechanism']} noise of "
                f"scale {report['scale']:g}: ε = {report['epsilon_per_image']:.6g} per image "
                f"(replace-one, δ = {report['delta_per_image']:.3g}); "
                f"{report['epsilon_per_pixel']:.4g} per pixel value alone")
  if ledger.private and console.shows("normal"):
    _print_privacy_plan(config, model, ledger)
  elif not ledger.private:
    console.say(f"Privacy: {ledger.describe()}")
  if strategy:
    console.say(distribution.describe(config.run.distribution, strategy))


def planned_statement(ledger) -> str:
  """The privacy statement the run makes once it has taken every planned step."""
  return dataclasses.replace(
      ledger, steps=ledger.history[0]["planned_steps"], probe_steps=ledger.probe.get("steps", 0),
      normalization_released=bool(ledger.normalization)).statement()


def _print_privacy_plan(config, model, ledger) -> None:
  planned = ledger.history[0]["planned_steps"]
  print(f"Privacy: {config.privacy.noise} noise, σ = {ledger.noise_multiplier:.4f}"
        f"{_schedule_text(ledger)}, {config.privacy.norm.upper()} clip "
        f"{config.privacy.clip_norm}, planned ε = {ledger.planned_epsilon(planned):.3f} over "
        f"{planned} steps{_probe_text(ledger)}{_statistics_text(ledger)} at δ = "
        f"{ledger.delta:g} "
        f"({ledger.accountant.upper()}); budget {ledger.target_epsilon}")
  for note in ledger.notes:
    print(f"  {note}")
  if config.privacy.layer_noise != "uniform":
    stds = noise.group_stddevs(config.privacy.l2_norm_clip, ledger.noise_multiplier,
                               dp_groups.variable_groups(model, config.privacy.clip_groups),
                               config.privacy.layer_noise)
    print(f"  group noise stds: {', '.join(f'{s:.4g}' for s in stds)}")
  print(f"  after every planned step: {planned_statement(ledger)}")


def _statistics_text(ledger) -> str:
  if not ledger.normalization:
    return ""
  sigma = ledger.normalization["noise_multiplier"]
  alone = ledger.epsilon(steps=0, probe_steps=0, normalized=True)
  return f" and DP feature statistics first (σ = {sigma:g}, q = 1, ε alone {alone:.3f})"


def _probe_text(ledger) -> str:
  if not ledger.probe:
    return ""
  probe = ledger.probe
  return (f" after a linear probe of {probe['steps']} steps (σ = {probe['noise_multiplier']:.4f}, "
          f"q = {probe['sampling_probability']:.4f}, ε alone "
          f"{ledger.epsilon(steps=0, probe_steps=probe['steps'], normalized=False):.3f})")


def _schedule_text(ledger) -> str:
  if not ledger.epoch_factors:
    return ""
  return (f" in epoch 1, then {ledger.schedule} to "
          f"{ledger.noise_multiplier * ledger.epoch_factors[-1]:.4f}")


def final_metrics(config, dataset, model, ledger, optimizer, evaluation,
                  examples_per_second: Optional[float], budget_exhausted: bool,
                  history: list, augment: str) -> dict:
  """The run's metrics.json: the test `evaluation`, ε and the privacy statement, the plan and
  the options that made the run, its `history` and what the guarantee rests on.

  Args:
    augment: the training augmentation the run used (it depends on the model, not only the flag).
  """
  private = ledger.private
  optimizer_clip = optimizer.clip_norm() if private else None  # Adaptive: where the clip ended.
  return {
      **evaluation,
      **ledger.mechanism_report(),
      "final_clip_norm": float(optimizer_clip) if private else None,
      "optimizer_hyperparameters": dict(config.optimizer.hyperparameters),
      "epochs": config.run.epochs,
      "epochs_completed": len(history) and history[-1]["epoch"],
      "budget_exhausted": budget_exhausted,
      "batch_size": config.run.batch_size,
      "physical_batch_size": config.chunk_size,
      "train_examples": dataset.num_train,
      "test_examples": evaluation["test_examples"],  # Those the final evaluation used.
      "test_split_examples": int(len(dataset.test_labels)),
      "eval_every": config.run.eval_every,
      "skipped_images": (dataset.skipped_images.report()  # Not covered: see its not_private.
                         if dataset.skipped_images is not None else None),
      "examples_per_second": examples_per_second,
      "timing": {"examples_per_second": examples_per_second, "not_private": TIMING_NOTE}
                if private else None,
      "model": config.model.name,
      "model_options": config.model.kwargs,
      "loss": config.model.loss,
      "parameters": models.count_params(model),
      "optimizer": config.optimizer.name,
      "learning_rate": config.optimizer.step_size,
      "lr_schedule": config.optimizer.lr_schedule,
      "weight_decay": config.optimizer.weight_decay,
      "momentum": config.optimizer.momentum,
      "augmult": config.data.augmult,
      "augment": augment,
      "ema_decay": config.run.ema_decay,
      "recipe": (recipes.record_for_metrics(config.run.recipe_record)
                 if config.run.recipe_record else None),
      "clipping": config.privacy.clipping if private else None,
      "dataset": config.data.dataset,
      "seed": config.run.seed,
      "jit_compile": config.run.jit_compile,
      "precision": config.model.precision,
      "loss_scale": config.model.loss_scale,
      "distribution": config.run.distribution,
      "cpu_replicas": config.run.cpu_replicas,
      "history": history,
      "ledger_history": ledger.history,
      **release_metrics(config, ledger, history, dataset.input_shape),
  }


def release_metrics(config, ledger, history, dataset_shape) -> dict:
  """What the guarantee is and rests on: its kind, the randomness, DiceSGD's C2, the
  pretrained weights' or prior's provenance, local DP on the images, the public subset, and any
  not-private monitoring."""
  subset = config.data.train_examples
  return {
      "weights_file": release.weights_provenance(config.model.kwargs.get("weights")),
      "prior": prior_files.provenance(config.model.init_from),
      "linear_probe": _probe_metrics(config, ledger),
      "feature_statistics": _statistics_metrics(ledger),
      "local_dp": (local_dp.report(config.data.local_dp, config.data.local_dp_scale,
                                   dataset_shape, ledger.randomness)
                   if config.data.local_dp != "none" else None),
      "train_subset": ({"examples": subset, "seed": config.run.seed, "chosen_by": "public seed"}
                       if subset else None),
      "not_private_monitoring": _not_private_monitoring(config, history),
  }


def _probe_metrics(config, ledger) -> Optional[dict]:
  """What the run releases about its linear probe: the plan, its ε alone and its test accuracy."""
  if not ledger.probe:
    return None
  done = [event for event in ledger.history if event["event"] == "linear_probe"]
  return {**ledger.probe, "learning_rate": config.probe.learning_rate,
          "batch_size": round(ledger.probe["sampling_probability"] * config.run.batch_size
                              / ledger.sampling_probability),  # q_p N.
          "steps_taken": ledger.probe_steps,
          "epsilon_alone": ledger.epsilon(steps=0, normalized=False),
          "test_accuracy": done[-1]["test_accuracy"] if done else None}


def _statistics_metrics(ledger) -> Optional[dict]:
  """What the run releases about its DP feature statistics: the plan, clips and ε alone."""
  if not ledger.normalization:
    return None
  done = [event for event in ledger.history if event["event"] == "feature_statistics"]
  clips = {k: done[-1][k] for k in ("mean_clip", "square_clip")} if done else {}
  return {**ledger.normalization, **clips, "released": ledger.normalization_released,
          "epsilon_alone": ledger.epsilon(steps=0, probe_steps=0, normalized=True)}


def _not_private_monitoring(config, history) -> Optional[dict]:
  """The last epoch's training-batch figures with their label, when the run asked for them."""
  if monitor_prefix(config) != NOT_PRIVATE or not history:
    return None
  figures = {k[len(NOT_PRIVATE):]: v for k, v in history[-1].items() if k.startswith(NOT_PRIVATE)}
  return {"note": NOT_PRIVATE_NOTE, **figures}


def write_metrics(output_dir: str, metrics: dict) -> None:
  """metrics.json in `output_dir`, written whole or not at all (tfdp.atomic)."""
  atomic.write_text(os.path.join(output_dir, "metrics.json"),
                    json.dumps(metrics, indent=2, sort_keys=True))


def print_result(metrics: dict, ledger, files: Optional[dict] = None,
                 console: Optional[Console] = None) -> None:
  """The run's last lines, at every --progress level: test accuracy on how many test examples,
  balanced accuracy and loss; the privacy statement; then where `files` ({what: path}) are."""
  console = console or Console()
  console.say(f"Test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_examples']} test "
              f"examples (balanced {metrics['test_balanced_accuracy']:.4f}, loss "
              f"{metrics['test_loss']:.4f})", "quiet")
  console.say(f"Privacy: {ledger.statement()}", "quiet")
  for what, path in (files or {}).items():
    console.say(f"{what}: {path}", "quiet")
