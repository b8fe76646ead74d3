"""train_and_evaluate: data -> privacy plan -> model -> epochs of DP steps -> metrics and export.

Privacy is planned before any training: with a target ε the noise multiplier is calibrated so the
planned steps spend at most ε (RDP accountant); with a given σ the ε is only reported. The privacy
ledger is consulted before every step, and a step that would spend past the target is not taken.
What the run prints and writes to metrics.json is tfdp.training.reporting's; the step's
multi-device path is tfdp.training.distribution's.
"""

import contextlib
import dataclasses
import io
import json
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from tfdp import atomic
from tfdp import config as config_lib
from tfdp import data
from tfdp.data import canaries
from tfdp.data import feature_augment
from tfdp.data import feature_cache
from tfdp.data import local_dp
from tfdp.data import random_processes
from tfdp.dp import feature_statistics
from tfdp.dp import losses
from tfdp.dp import randomness
from tfdp import models
from tfdp.models import scatter
from tfdp import precision
from tfdp.priors import prior_files
from tfdp.privacy import ledger as ledger_lib
from tfdp import recipes
from tfdp import run_lock
from tfdp.serving import model_card
from tfdp.serving import release
from tfdp.serving import saved_model
from tfdp.training import canary_audit
from tfdp.training import checkpointing
from tfdp.training import distribution
from tfdp.training import ema
from tfdp.training import event_files
from tfdp.training import linear_probe
from tfdp.training import planning
from tfdp.training import reporting
from tfdp.training import run_paths
from tfdp.training import steps as steps_lib
from tfdp.training import stopping


def with_recipe(config: config_lib.Config):
  """(config, dataset): under --recipe=auto, the config the recipe chooses from the loaded
  dataset's public facts (tfdp.recipes) and that dataset; else `config` and None."""
  if config.run.recipe == "none":
    return config, None
  dataset = load_training_data(config)
  facts = recipes.facts(dataset, config.privacy.epsilon, config.privacy.delta,
                        config.run.time_budget_minutes)
  return recipes.apply(config, facts), dataset


def load_training_data(config: config_lib.Config) -> data.Dataset:
  """The dataset with its seeded training subset; checks what depends on N."""
  dataset = data.load_dataset(config.data.dataset, config.data.data_dir,
                              skip_bad_images=config.data.skip_bad_images,
                              train_examples=config.data.train_examples, seed=config.run.seed)
  if config.data.audit_canaries:
    dataset = _with_canaries(config, dataset)
  n = dataset.num_train
  if config.run.batch_size > n:
    raise ValueError(f"batch_size {config.run.batch_size} is larger than the training set ({n})")
  if config.optimizer.private and config.privacy.delta >= 1 / n:
    raise ValueError(f"delta {config.privacy.delta:g} must be < 1/N = {1 / n:.3g} "
                     f"(N = {n} training examples)")
  if config.data.local_dp != "none":
    dataset = dataclasses.replace(dataset, train_images=_locally_private_images(config, dataset))
  return dataset


def _with_canaries(config: config_lib.Config, dataset: data.Dataset) -> data.Dataset:
  """The training set with the audit's canaries drawn in (tfdp.data.canaries): the run
  directory's when an earlier invocation of this run drew them, else a new draw, saved there."""
  drawn = canaries.load(config.run.output_dir)
  if drawn is None:
    drawn = canaries.draw(dataset.train_images, dataset.train_labels, dataset.num_classes,
                          config.data.audit_canaries, config.data.audit_canary_type,
                          canaries.audit_rng(config.data.audit_seed))
    canaries.save(config.run.output_dir, drawn)
  elif (drawn.count, drawn.kind) != (config.data.audit_canaries, config.data.audit_canary_type):
    raise ValueError(f"{config.run.output_dir} holds {drawn.count} {drawn.kind} canaries, not the "
                     f"{config.data.audit_canaries} {config.data.audit_canary_type} of this run; "
                     "use a new --output_dir")
  images, labels = canaries.training_set(dataset.train_images, dataset.train_labels, drawn)
  return dataclasses.replace(dataset, train_images=images, train_labels=labels)


LOCAL_DP_IMAGES = "local_dp_train_images.npy"  # The one perturbed copy, kept for resumes.


def _locally_private_images(config: config_lib.Config, dataset: data.Dataset):
  """The training images perturbed once (tfdp.data.local_dp): from the run directory when an
  earlier invocation of this run made them (a fresh draw would be a second release), else drawn
  now from a secure source (or the seed, with --reproducible_noise) and saved there."""
  path = os.path.join(config.run.output_dir, LOCAL_DP_IMAGES)
  if os.path.exists(path):
    images = np.load(path)
    if images.shape == dataset.train_images.shape:
      return images
    raise ValueError(f"{path} holds {images.shape} images, not the {dataset.train_images.shape} "
                     "of this run; use a new --output_dir")
  rng = (np.random.default_rng([config.run.seed, 1]) if config.run.reproducible_noise
         else local_dp.secret_rng())
  images = local_dp.MECHANISMS[config.data.local_dp].perturb(
      dataset.train_images, config.data.local_dp_scale, rng)
  os.makedirs(config.run.output_dir, exist_ok=True)
  atomic.write_bytes(path, _npy_bytes(images))
  return images


def _npy_bytes(array) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


def _restore_or_start(state: checkpointing.RunState,
                      planned: ledger_lib.PrivacyLedger) -> checkpointing.Restored:
  restored = state.restore()
  if restored is None:
    return checkpointing.Restored(0, planned, [], 0)
  epoch, ledger, history, epoch_steps = restored
  changes = ledger.mechanism_changes(planned)
  if changes:
    raise checkpointing.RunStateError(
        "the output_dir holds a run with a different privacy mechanism (recorded -> now: "
        f"{'; '.join(changes)}); use a new --output_dir")
  reset = list(state.not_checkpointed)
  ledger.record("resume", epoch=epoch, **({"reset": reset} if reset else {}))
  for note in reset:
    print(f"  {note}")
  return restored


def _run_epoch(step_fn, sampler, trained, ledger, max_steps, monitor: Optional[str] = None,
               first_step: int = 0, stop: Optional[stopping.StopRequest] = None, progbar=None):
  """The steps of one epoch from its `first_step` over `trained`'s training inputs, until the
  budget or a `stop` request ends it; `progbar` (reporting.progress, by default verbose) shows ε
  and the monitoring `monitor` allows.

  Returns:
    (the epoch's stats, whether the budget ended it).
  """
  stats = reporting.EpochStats()
  progbar = progbar or reporting.progress(sampler.steps_per_epoch)
  for i in range(first_step, sampler.steps_per_epoch):
    if max_steps is not None and ledger.steps >= max_steps:
      return stats, True
    if stop is not None and stop.requested:
      break
    chunks = [data.sampling.gather_chunk(trained.train_images, trained.train_labels, c)
              for c in sampler.chunks(ledger.steps)]
    if ledger.private:
      step_fn.set_noise_factor(ledger.noise_multiplier_at(ledger.steps) / ledger.noise_multiplier)
    start = time.perf_counter()
    loss, correct, examples = step_fn(chunks, step=ledger.steps)
    stats.add(loss, correct, examples, time.perf_counter() - start)
    ledger.steps += 1
    values = list(stats.monitoring(monitor).items())
    if ledger.private and ledger.accountant == "rdp":  # PLD is too slow to run every step.
      values.append((reporting.epsilon_key(ledger), ledger.epsilon()))
    progbar.update(i + 1, values=values)
  return stats, False


def prepare(config: config_lib.Config, dataset: Optional[data.Dataset] = None):
  """Loads the data (unless given `dataset`, load_training_data's for this config) and plans
  privacy: every check that can reject the run, before any training.

  Returns:
    (dataset, ledger). Raises ValueError (or data.DataError) naming the problem, including
    a directory the run could not write (run_paths) and --weights from an earlier private run
    (release.weights_provenance).
  """
  chief = True
  if config.run.distribution == "multi_worker":
    chief = distribution.cluster_spec()["task"]["index"] == 0  # Only the chief writes the run.
  run_paths.check(config, chief)
  release.weights_provenance(config.model.kwargs.get("weights"))
  dataset = dataset or load_training_data(config)
  _check_augmentation(config)
  if config.model.init_from:
    prior_files.check_path(config.model.init_from, config.model.name, config.model.kwargs,
                           dataset.input_shape)
  return dataset, planning.plan_privacy(config, dataset.num_train)


def _check_augmentation(config: config_lib.Config) -> None:
  """Cached features take only the feature policies (tfdp.data.feature_augment); images only
  image augmentations."""
  augment = config.data.augment
  if config.model.name not in scatter.FRONT_MODELS:
    if augment in feature_augment.POLICIES:
      raise ValueError(f"--augment={augment} augments cached ScatterNet features; "
                       f"--model={config.model.name} trains on images: use an image "
                       f"augmentation ({', '.join(sorted(data.AUGMENTATIONS))})")
    return
  if augment not in (None, "none") and augment not in feature_augment.POLICIES:
    raise ValueError(
        f"--model={config.model.name} trains on scattering features computed once per dataset, "
        f"so an image augmentation (--augment={augment}) cannot vary per step: use --augment="
        f"none or a cached-feature policy ({', '.join(sorted(feature_augment.POLICIES))})")
  if config.data.augmult > 1 and augment in (None, "none"):
    raise ValueError(
        f"--augmult={config.data.augmult} without augmentation trains on {config.data.augmult} "
        f"identical copies of each example's features: add --augment="
        f"{sorted(feature_augment.POLICIES)[-1]} (or another cached-feature policy) or use "
        "--augmult=1")


def _feature_policy(config: config_lib.Config):
  """The cached-feature augmentation policy of a ScatterNet run, or None."""
  return feature_augment.POLICIES.get(config.data.augment)


def _augment(config: config_lib.Config, dataset: data.Dataset) -> str:
  """The image augmentation: the flag's, else the dataset's; none for cached features."""
  if config.model.name in scatter.FRONT_MODELS:
    return "none"
  return config.data.augment or dataset.augment


@dataclasses.dataclass(frozen=True)
class _Trained:
  """What the steps train and evaluate: the model itself on images, or for a model with a frozen
  front (ScatterNet) its head on the front's features, computed once (tfdp.data.feature_cache)."""
  model: tf.keras.Model
  train_preprocess: object
  test_preprocess: object
  train_images: object
  train_labels: object
  test_images: object
  test_labels: object
  feature_policy: object = None  # A tfdp.data.feature_augment.Policy: train_images is [N, V, ...].

  def identity_train_features(self):
    """The training inputs without augmentation views: [N, ...]."""
    return feature_augment.identity_features(self.train_images, self.feature_policy)


def _trained_part(model, dataset, train_preprocess, test_preprocess, policy=None) -> _Trained:
  """What the steps train: `model` on images, or a ScatterNet's head on cached features; with a
  feature `policy`, the training features hold each image's views, [N, V, ...]."""
  parts = scatter.split(model)
  if parts is None:
    return _Trained(model, train_preprocess, test_preprocess, dataset.train_images,
                    dataset.train_labels, dataset.test_images, dataset.test_labels)
  front, head = parts
  standardization = [list(dataset.mean), list(dataset.std)]
  if policy is None:
    train = feature_cache.features(dataset.train_images, front, test_preprocess, standardization)
    train_features_preprocess = lambda features: tf.cast(features, tf.float32)
  else:
    train = np.stack([feature_cache.features(images, front, test_preprocess, standardization)
                      for images in policy.view_images(dataset.train_images)], axis=1)
    train_features_preprocess = policy.make_train_preprocess()
  test = feature_cache.features(dataset.test_images, front, test_preprocess, standardization,
                                dtype=feature_cache.EVALUATION_DTYPE)
  as_float = lambda features: tf.cast(features, tf.float32)
  return _Trained(head, train_features_preprocess, as_float, train, dataset.train_labels, test,
                  dataset.test_labels, policy)


def train_and_evaluate(config: config_lib.Config, prepared=None) -> dict:
  """Trains, evaluates and exports one run; returns the metrics also written to metrics.json.

  Args:
    config: the run.
    prepared: the result of `prepare(config)`, when the caller already has it.
  """
  # First: --cpu_replicas configures devices, which only works before TensorFlow starts.
  strategy = distribution.make_strategy(config.run.distribution, config.run.cpu_replicas)
  # One command at a time writes a run directory (tfdp.run_lock): only the chief writes it.
  chief = distribution.is_chief(strategy)
  with (run_lock.hold(config.run.output_dir) if chief else contextlib.nullcontext()), \
       distribution.worker_scratch(chief) as scratch, \
       stopping.on_signals(install=not distribution.is_multi_worker(strategy)) as stop:
    return _train_and_evaluate(config, prepared, strategy, scratch, stop)


def _train_and_evaluate(config: config_lib.Config, prepared, strategy, scratch,
                        stop: stopping.StopRequest) -> dict:
  """train_and_evaluate's body, with the run directory locked and signals turned into `stop`."""
  tf.keras.utils.set_random_seed(config.run.seed)  # Public: initialization and augmentation only.
  coins = randomness.make_coins(config.run.reproducible_noise, config.run.seed)
  dataset, ledger = prepared or prepare(config)
  with strategy.scope() if strategy else contextlib.nullcontext():  # Mirrored variables.
    with precision.policy(config.model.precision):  # Layers keep the policy they are built with.
      model = models.build_model(config.model.name, dataset.num_classes, dataset.input_shape,
                                 **config.model.kwargs)
    if config.model.init_from:  # A resumed run's checkpoint overwrites these weights below.
      prior_files.load_into(config.model.init_from, model, config.model.name, config.model.kwargs)
    loss_fn = losses.get(config.model.loss)
    sampler = distribution.shard_sampler(
        data.make_sampler(config.data.sampling, dataset.num_train, config.run.batch_size,
                          config.chunk_size, coins), strategy)
    augment = _augment(config, dataset)
    train_preprocess = data.make_preprocess(dataset.mean, dataset.std, augment, training=True)
    test_preprocess = data.make_preprocess(dataset.mean, dataset.std, augment, training=False)
    trained = _trained_part(model, dataset, train_preprocess, test_preprocess,
                             _feature_policy(config))
    optimizer = planning.build_optimizer(config, ledger, trained.model, sampler.steps_per_epoch)
    weight_average = (ema.WeightAverage(trained.model, config.run.ema_decay)
                      if config.run.ema_decay else None)
    step_fn = _make_step(config, trained.model, optimizer, trained.train_preprocess,
                         weight_average, loss_fn, coins, strategy)
    extra = {"ema": weight_average} if weight_average else {}
    chief = distribution.is_chief(strategy)  # Only the chief writes the run's files.
    state = checkpointing.RunState(config.run.output_dir, model, optimizer, save_dir=scratch,
                                   **extra)
    if chief:
      _prepare_run_dir(state)
    start_epoch, ledger, history, epoch_steps = _restore_or_start(state, ledger)
  ledger.coordinates = models.count_params(model)  # Sizes the float noise's tail in δ.
  console = reporting.Console(config.run.progress)
  finished = _finished(config, ledger, start_epoch, history)
  if finished is not None:
    return finished
  resumed = ledger.history[-1]["event"] == "resume"
  if resumed:
    _say_resumed(console, config, ledger, start_epoch, epoch_steps)
    stop.saved = _saved_text(start_epoch, epoch_steps, config.run.epochs)
  if chief:
    release.write_run_spec(config, dataset)
    _cut_tensorboard_back(config, start_epoch if resumed else 0, console)
  evaluate = _test_evaluation(config, trained, loss_fn, weight_average)
  reporting.print_summary(config, dataset, model, ledger, sampler, step_fn.engine, strategy,
                          console)
  if stop.requested:  # Arrived while setting up: nothing of this command to save.
    raise _stopped(stop, config, ledger, "before its first step", saved=False)
  if scatter.statistics_layer(model) is not None:
    _set_statistics(model, dataset, trained, test_preprocess, ledger, coins, start_epoch, state,
                    history)
  if ledger.probe and ledger.probe_steps < ledger.probe["steps"]:
    _linear_probe(config, model, dataset, test_preprocess, ledger, loss_fn, coins)
    if weight_average:  # It began at the initial head; the probed one is where training starts.
      weight_average.restart()
    state.save(0, ledger, history)  # All of the probe or none of it is on disk.
    stop.saved = "the last checkpoint holds the linear probe, before epoch 1"
  if stop.requested:
    raise _stopped(stop, config, ledger, "before its first epoch", saved=False)

  writer = (tf.summary.create_file_writer(os.path.join(config.run.output_dir, "tensorboard"))
            if chief else tf.summary.create_noop_writer())
  epochs = _Epochs(config, step_fn, sampler, trained, state, writer, stop, console, chief,
                   evaluate)
  trained_epochs = _train_epochs(epochs, ledger, history, start_epoch, epoch_steps)
  budget_exhausted, final_evaluation, examples_per_second = trained_epochs
  if budget_exhausted:
    console.say(f"Stopped after {ledger.steps} steps: the next would spend more than "
                f"ε = {ledger.target_epsilon}.", "quiet")

  stop.where = "while evaluating and exporting"
  unwritten = ("its last epoch, before writing metrics.json"
               + (" and the export" if config.run.export else ""))
  if stop.requested:
    raise _stopped(stop, config, ledger, unwritten)
  if final_evaluation is None:
    final_evaluation = evaluate()
  metrics = reporting.final_metrics(config, dataset, model, ledger, optimizer, final_evaluation,
                                    examples_per_second, budget_exhausted, history,
                                    config.data.augment if trained.feature_policy else augment)
  if config.data.audit_canaries:
    with release.released_weights(weight_average):
      metrics.update(canary_audit.audit_run(config.run.output_dir, model, test_preprocess,
                                             loss_fn, metrics))
  if stop.requested:  # Arrived during the audit: the export is the next write.
    raise _stopped(stop, config, ledger, unwritten)
  if config.run.export and chief:
    metrics.update(_export(config, model, test_preprocess, dataset.class_names, weight_average,
                           model_card.build(metrics)))
  files = _write_results(config, metrics, history, ledger) if chief else {}
  reporting.print_result(metrics, ledger, files, console)
  return metrics


@dataclasses.dataclass(frozen=True)
class _Epochs:
  """What the epochs of a run use, besides its ledger and history."""
  config: config_lib.Config
  step_fn: object
  sampler: object
  trained: _Trained
  state: checkpointing.RunState
  writer: object  # tf.summary writer (a no-op one on workers other than the chief).
  stop: stopping.StopRequest
  console: reporting.Console
  chief: bool
  evaluate: object  # _test_evaluation's.


def _train_epochs(epochs: _Epochs, ledger, history, start_epoch: int, epoch_steps: int):
  """The epochs from `start_epoch` (its first `epoch_steps` steps taken), each saved; raises
  stopping.Stopped, having saved, when a signal asked for a stop.

  Returns:
    (whether the budget ended them, the last epoch's evaluation or None when this command trained
    none, the expected examples per second of its steps or None).
  """
  config, stop = epochs.config, epochs.stop
  max_steps = ledger.max_steps()
  train_seconds, examples_seen, budget_exhausted, evaluation = 0.0, 0.0, False, None
  started = time.monotonic()
  for epoch in range(start_epoch, config.run.epochs):
    if max_steps is not None and ledger.steps >= max_steps:
      return True, evaluation, _speed(examples_seen, train_seconds)
    first_step = epoch_steps if epoch == start_epoch else 0
    stop.where = f"in epoch {epoch + 1}/{config.run.epochs}"
    epochs.console.say(f"Epoch {epoch + 1}/{config.run.epochs}"
                       + (f", from step {first_step + 1}" if first_step else ""), "verbose")
    progbar = reporting.progress(epochs.sampler.steps_per_epoch, epochs.console,
                                 f"Epoch {epoch + 1}/{config.run.epochs}")
    stats, budget_exhausted = _run_epoch(epochs.step_fn, epochs.sampler, epochs.trained, ledger,
                                         max_steps, reporting.monitor_prefix(config), first_step,
                                         stop, progbar)
    if epochs.chief:
      epochs.state.record_spent(ledger)  # Before anything computed from these steps is written.
    taken = first_step + stats.steps
    if stop.requested and not budget_exhausted and taken < epochs.sampler.steps_per_epoch:
      epochs.state.save(epoch, ledger, history, epoch_steps=taken)
      stop.saved = _saved_text(epoch, taken, config.run.epochs)
      raise _stopped(stop, config, ledger, f"step {taken} of epoch {epoch + 1}/{config.run.epochs}")
    train_seconds += stats.seconds
    examples_seen += stats.steps * config.run.batch_size  # Expected: drawn sizes are private.
    at_budget = budget_exhausted or (max_steps is not None and ledger.steps >= max_steps)
    due = (epoch + 1) % config.run.eval_every == 0 or epoch + 1 == config.run.epochs
    evaluation = epochs.evaluate() if due or at_budget else None  # The last epoch: always.
    record = reporting.epoch_record(epoch + 1, ledger, stats, evaluation or {},
                                    reporting.monitor_prefix(config))
    history.append(record)
    reporting.log_epoch(epochs.writer, record)
    epochs.state.save(epoch + 1, ledger, history)
    stop.saved = _saved_text(epoch + 1, 0, config.run.epochs)
    seconds = time.monotonic() - started
    reporting.print_epoch(epochs.console, record, ledger, config.run.epochs,
                          seconds / (epoch + 1 - start_epoch) * (config.run.epochs - epoch - 1))
    if budget_exhausted:
      break
    if stop.requested and epoch + 1 < config.run.epochs:
      raise _stopped(stop, config, ledger, f"epoch {epoch + 1}")
  return budget_exhausted, evaluation, _speed(examples_seen, train_seconds)


def _speed(examples: float, seconds: float) -> Optional[float]:
  return examples / seconds if seconds else None


def _test_evaluation(config: config_lib.Config, trained: _Trained, loss_fn, weight_average):
  """evaluate() -> the test metrics of the released weights (the EMA's when used) on the first
  --eval_examples test examples (all by default), with test_examples: how many it used."""
  count = min(config.run.eval_examples or len(trained.test_labels), len(trained.test_labels))
  images, labels = trained.test_images[:count], trained.test_labels[:count]
  evaluate = release.with_weights(
      steps_lib.make_evaluate(trained.model, trained.test_preprocess, loss_fn=loss_fn),
      weight_average)
  return lambda: {**evaluate(images, labels), "test_examples": int(count)}


def _write_results(config: config_lib.Config, metrics: dict, history, ledger) -> dict:
  """metrics.json, then curves.png; returns {what: path} of the run's results, for its last
  lines."""
  reporting.write_metrics(config.run.output_dir, metrics)
  # matplotlib is slow to import: only a run that ends needs it.
  from tfdp.training import curves  # pylint: disable=import-outside-toplevel
  files = {"Run directory": config.run.output_dir,
           "Metrics": os.path.join(config.run.output_dir, "metrics.json"),
           "Curves": curves.write(config.run.output_dir, history,
                                  reporting.epsilon_key(ledger) if ledger.private else None)}
  files["Export"] = metrics.get("export_dir") or "none (--noexport)"
  return files


def _say_resumed(console, config, ledger, epoch: int, epoch_steps: int) -> None:
  within = f" and {epoch_steps} steps of epoch {epoch + 1}" if epoch_steps else ""
  console.say(f"Resumed after epoch {epoch}{within} from its checkpoint in "
              f"{config.run.output_dir}: {reporting.epsilon_text(ledger)} so far", "normal")
  console.say(f"  {ledger.describe()}", "verbose")


def _saved_text(epoch: int, epoch_steps: int, epochs: int) -> str:
  """What a checkpoint after `epoch` epochs and `epoch_steps` steps holds, for a stop's message."""
  within = f" and {epoch_steps} steps of epoch {epoch + 1}" if epoch_steps else ""
  return f"the last checkpoint holds epoch {epoch}/{epochs}{within}"


def _cut_tensorboard_back(config: config_lib.Config, epoch: int, console) -> None:
  """Drops the TensorBoard points after the checkpoint's `epoch` that a killed command logged
  (tfdp.training.event_files): the epochs taken again log them once more."""
  dropped = event_files.truncate(os.path.join(config.run.output_dir, "tensorboard"), epoch)
  if dropped:
    console.say(f"TensorBoard: dropped {dropped} points after epoch {epoch} that an interrupted "
                "command logged; the epochs taken again log them anew", "verbose")


def _prepare_run_dir(state: checkpointing.RunState) -> None:
  """Before any step: refuses a run directory the saves cannot write, and clears what a killed
  command left in it (the lock is held: no other writer is there)."""
  state.check_writable()
  swept = state.sweep()
  if swept:
    print(f"Removed {len(swept)} temporary files an interrupted command left: "
          f"{', '.join(os.path.basename(path) for path in swept)}")


def _finished(config: config_lib.Config, ledger, start_epoch: int, history) -> Optional[dict]:
  """The recorded metrics of a run that already ended (all epochs, or the budget) and wrote
  them; None when there is training or writing left. A rerun of a finished run trains and
  exports nothing: it says so and where the results are; `python -m tfdp.export` exports again,
  when asked."""
  metrics_path = os.path.join(config.run.output_dir, "metrics.json")
  max_steps = ledger.max_steps()
  ended = start_epoch >= config.run.epochs or (max_steps is not None and ledger.steps >= max_steps)
  if not ended or not os.path.exists(metrics_path):
    return None
  with open(metrics_path) as f:
    metrics = json.load(f)
  done = history[-1]["epoch"] if history else start_epoch
  print(f"{config.run.output_dir} is a finished run: {done}/{config.run.epochs} epochs, "
        f"{reporting.epsilon_text(ledger)} at δ = {ledger.delta:g}; nothing to train or export.\n"
        f"Metrics: {metrics_path}\n"
        f"Export: {metrics.get('export_dir') or 'none (--noexport)'}\n"
        f"To export it again: python -m tfdp.export --checkpoint_dir={config.run.output_dir} "
        f"--export_dir={run_paths.export_dir(config)}. More epochs resume it only at the same σ "
        "(--noise_multiplier; --epsilon calibrates σ to --epochs) and within the budget.",
        flush=True)
  return metrics


def _stopped(stop: stopping.StopRequest, config: config_lib.Config, ledger, where: str,
             saved: bool = True) -> stopping.Stopped:
  """The Stopped of a run that `stop` ended `where` (after its last save, when `saved`)."""
  if saved:
    return stopping.Stopped(stop.signum, (
        f"stopped by {stop.name} after {where}, saved in {config.run.output_dir}: "
        f"{stop.saved}, {reporting.epsilon_text(ledger)} so far; run the same command to "
        "resume"))
  return stopping.Stopped(stop.signum, (
      f"stopped by {stop.name} {where}: {stop.saved}; run the same command to resume"))


def _set_statistics(model, dataset, trained, preprocess, ledger, coins, start_epoch, state,
                    history) -> None:
  """Sets the per-map statistics of normalization="statistics" once, before the first step: a DP
  release (tfdp.dp.feature_statistics) for private runs, recorded in the ledger and saved at
  once; the exact statistics for non-private runs. A resumed run has them in its checkpoint."""
  layer, front = scatter.statistics_layer(model), scatter.split(model)[0]
  if not ledger.private:
    if start_epoch == 0:
      layer.set_moments(feature_statistics.exact_moments(trained.identity_train_features()))
    return
  if ledger.normalization_released:
    return
  public = random_processes.pixels(
      feature_statistics.PUBLIC_SOURCE, feature_statistics.PUBLIC_IMAGES, dataset.input_shape,
      feature_statistics.PUBLIC_SEED)
  clips = feature_statistics.public_clip_norms(front, preprocess, public)
  sigma = ledger.normalization["noise_multiplier"]
  layer.set_moments(feature_statistics.private_moments(
      trained.identity_train_features(), dataset.num_train, clips, sigma, coins))
  ledger.normalization_released = True
  ledger.record("feature_statistics", mean_clip=clips.first, square_clip=clips.second)
  print(f"DP feature statistics: each map's mean and variance from {dataset.num_train} examples, "
        f"clip norms {clips.first:.4g} and {clips.second:.4g} (public: random-process images), "
        f"σ = {sigma:g}; ε alone {ledger.epsilon(steps=0, probe_steps=0):.3f}", flush=True)
  state.save(0, ledger, history)  # Released once: a resumed run reads them from here.


def _linear_probe(config, model, dataset, preprocess, ledger, loss_fn, coins) -> None:
  """Phase II: the planned probe steps on the head (tfdp.training.linear_probe), then its record."""
  result = linear_probe.run(config, model, dataset, preprocess, ledger, loss_fn, coins)
  ledger.record("linear_probe", probe_steps=ledger.probe_steps,
                test_accuracy=result["test_accuracy"])


def _make_step(config, model, optimizer, preprocess, weight_average, loss_fn, coins,
               strategy=None):
  return steps_lib.TrainStep(model, optimizer, preprocess, private=config.optimizer.private,
                             expected_batch_size=config.run.batch_size,
                             engine=config.privacy.clipping, clip_groups=config.privacy.clip_groups,
                             scaling=config.privacy.scaling, norm=config.privacy.norm,
                             augmult=config.data.augmult,
                             weight_decay=config.optimizer.weight_decay,
                             weight_average=weight_average, jit_compile=config.run.jit_compile,
                             loss_fn=loss_fn, coins=coins, strategy=strategy,
                             loss_scale=config.model.loss_scale)


def _export(config, model, preprocess, class_names, weight_average, card) -> dict:
  """The run's own SavedModel and the next version under the export dir, with the released
  weights (EMA when used) and the model card."""
  with release.released_weights(weight_average):
    return {"saved_model": saved_model.export_saved_model(
                model, os.path.join(config.run.output_dir, "saved_model"), preprocess=preprocess,
                class_names=class_names, model_card=card),
            "export_dir": saved_model.export_versioned(
                model, run_paths.export_dir(config), preprocess=preprocess, class_names=class_names,
                model_card=card)}
