"""Phase I of DP-RandP: train an encoder on images from random processes, save it as a prior.

No private data enters: the images come from `tfdp.data.random_processes` (no file read) and the
loss is Wang & Isola's alignment + uniformity (`tfdp.priors.contrastive`). The prior therefore costs
no privacy, whatever later trains on it; its card says so and records how it was made.

The run is a pure function of its config: batch s is images [s B, (s + 1) B) of the seeded stream
and its views come from the stateless seed (seed, s), so a run interrupted and resumed from its
last checkpoint continues exactly where it was.

Output under output_dir:
    checkpoints/     encoder, projection, optimizer and step (tf.train.CheckpointManager)
    tensorboard/     loss, align, uniform and learning rate per logged step
    prior/           encoder.weights.h5 + card.json (tfdp.priors.prior_files), at the end
"""

import dataclasses
import math
import os
import sys
import time

import tensorflow as tf

from tfdp.data import random_processes
from tfdp import models
from tfdp.priors import contrastive
from tfdp.priors import prior_files

PLACEHOLDER_CLASSES = 2  # The classifier's head is dropped; any valid class count builds it.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25  # Public constants standardizing [0, 1] pixels for the encoder.


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainConfig:
  """Phase I hyperparameters; defaults are Wang & Isola's (as DP-RandP uses them)."""

  model: str = "resnet20"
  model_options: dict = dataclasses.field(default_factory=dict)
  source: str = "mix"  # A tfdp.data.random_processes source.
  image_size: int = 32
  channels: int = 3  # 1 for priors of grayscale datasets (luminance of the generated images).
  steps: int = 1000
  batch_size: int = 256  # Wang & Isola's batch.
  learning_rate: float = 0.12  # per 256 examples, scaled linearly with the batch; cosine to 0.
  momentum: float = 0.9
  weight_decay: float = 1e-4  # L2 on every trainable weight, as SGD's weight_decay in PyTorch.
  feature_dim: int = 128  # Width of the L2-normalized projection the loss sees.
  seed: int = 0  # Public: images, views and initialization.
  output_dir: str = "runs/pretrain"
  checkpoint_every: int = 200  # steps
  log_every: int = 20  # steps

  def __post_init__(self):
    if self.model not in models.MODELS:
      raise ValueError(f"Unknown model {self.model!r}; valid: {sorted(models.MODELS)}.")
    models.registry.check_options(self.model, self.model_options)
    if self.source not in random_processes.sources():
      raise ValueError(f"Unknown source {self.source!r}; valid sources: "
                       f"{random_processes.sources()}.")
    for name in ("steps", "batch_size", "feature_dim", "checkpoint_every", "log_every"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if self.batch_size < 2:
      raise ValueError(f"batch_size must be >= 2 (the uniformity loss needs pairs), got "
                       f"{self.batch_size}.")
    for name in ("learning_rate", "weight_decay"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {self.channels!r}.")
    if not 0 <= self.momentum < 1:
      raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}.")

  @property
  def peak_learning_rate(self) -> float:
    return self.learning_rate * self.batch_size / 256


class _Pretrainer:
  """Encoder + projection + optimizer + step, checkpointed together."""

  def __init__(self, config: PretrainConfig):
    self.config = config
    tf.keras.utils.set_random_seed(config.seed)
    shape = (config.image_size, config.image_size, config.channels)
    self.classifier = models.build_model(config.model, PLACEHOLDER_CLASSES, shape,
                                         **config.model_options)
    self.encoder = prior_files.split_head(self.classifier)
    self.projection = tf.keras.layers.Dense(config.feature_dim, name="projection")
    self.projection.build(self.encoder.output_shape)
    self.schedule = tf.keras.optimizers.schedules.CosineDecay(config.peak_learning_rate,
                                                              config.steps)
    self.optimizer = tf.keras.optimizers.SGD(self.schedule, momentum=config.momentum)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(encoder=self.encoder, projection=self.projection,
                                     optimizer=self.optimizer, step=self.step)
    self.manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(config.output_dir, "checkpoints"), max_to_keep=2)
    if self.manager.latest_checkpoint:
      checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()

  @property
  def variables(self):
    return self.encoder.trainable_variables + self.projection.trainable_variables

  def embed(self, images):
    features = self.encoder((images - PIXEL_MEAN) / PIXEL_STD, training=True)
    return tf.math.l2_normalize(self.projection(features), axis=1)

  @tf.function
  def train_step(self, images):
    key = tf.stack([tf.constant(self.config.seed + 1, tf.int32), tf.cast(self.step, tf.int32)])
    first, second = contrastive.augment_views(images, key)
    with tf.GradientTape() as tape:
      loss, align, uniform = contrastive.contrastive_loss(self.embed(first),
                                                          self.embed(second))
    gradients = tape.gradient(loss, self.variables)
    decay = self.config.weight_decay
    gradients = [g + decay * v for g, v in zip(gradients, self.variables)]
    self.optimizer.apply_gradients(zip(gradients, self.variables))
    self.step.assign_add(1)
    return loss, align, uniform

  def batches(self):
    """The stream's batches from the current step on."""
    config, first = self.config, int(self.step.numpy()) * self.config.batch_size
    block = random_processes.BLOCK_SIZE
    stream = random_processes.dataset(config.source, config.image_size, config.seed,
                                      channels=config.channels, start_block=first // block)
    return iter(stream.skip(first % block).batch(config.batch_size, drop_remainder=True)
                .prefetch(2))


def pretrain(config: PretrainConfig, command: str = "") -> dict:
  """Runs (or resumes) phase I to `config.steps` and writes the prior; returns its card.

  Args:
      config: The run.
      command: The command line that started it, recorded in the card.
  """
  trainer = _Pretrainer(config)
  start = int(trainer.step.numpy())
  if start:
    print(f"Resumed at step {start}/{config.steps} from {trainer.manager.latest_checkpoint}")
  print(f"Pretraining {config.model} on {config.source!r} random-process images: "
        f"{config.steps} steps of {config.batch_size}, lr {config.peak_learning_rate:g} "
        f"(cosine), no real image.", flush=True)
  writer = tf.summary.create_file_writer(os.path.join(config.output_dir, "tensorboard"))
  clock, batches = _Clock(start, config.steps), trainer.batches()
  while int(trainer.step.numpy()) < config.steps:
    loss, align, uniform = trainer.train_step(next(batches))
    step = int(trainer.step.numpy())
    if step % config.log_every == 0 or step == config.steps:
      _log(writer, trainer, step, loss, align, uniform, clock)
    if step % config.checkpoint_every == 0 or step == config.steps:
      trainer.manager.save(checkpoint_number=step)
      print(f"  checkpoint saved at step {step}", flush=True)
  card = _card(config, command)
  path = prior_files.save(os.path.join(config.output_dir, "prior"), trainer.encoder, card)
  print(f"Prior written to {path}")
  return prior_files.read_card(path)


class _Clock:
  """Steps per second since this invocation started, and the time left at that pace."""

  def __init__(self, start_step: int, total_steps: int):
    self._start_step, self._total = start_step, total_steps
    self._start = time.monotonic()

  def describe(self, step: int) -> str:
    elapsed = time.monotonic() - self._start
    rate = (step - self._start_step) / max(elapsed, 1e-9)
    left = (self._total - step) / rate if rate > 0 else math.inf
    return f"{rate:.2f} steps/s, {elapsed:.0f}s elapsed, about {left:.0f}s left"


def _log(writer, trainer, step, loss, align, uniform, clock):
  learning_rate = float(trainer.schedule(step - 1))
  with writer.as_default(step=step):
    tf.summary.scalar("loss", loss)
    tf.summary.scalar("align", align)
    tf.summary.scalar("uniform", uniform)
    tf.summary.scalar("learning_rate", learning_rate)
  print(f"  step {step}/{trainer.config.steps} - loss {float(loss):.4f} (align "
        f"{float(align):.4f}, uniform {float(uniform):.4f}) - lr {learning_rate:.4f} - "
        f"{clock.describe(step)}", flush=True)


def _card(config: PretrainConfig, command: str) -> dict:
  hyperparameters = {key: value for key, value in dataclasses.asdict(config).items()
                     if key not in ("model", "model_options", "output_dir", "source", "seed")}
  return {
      "model": config.model,
      "model_options": dict(config.model_options),
      "input_shape": [config.image_size, config.image_size, config.channels],
      "pixel_standardization": {"mean": PIXEL_MEAN, "std": PIXEL_STD},
      "method": "alignment + uniformity contrastive learning (Wang & Isola 2020), DP-RandP "
                "phase I (Tang et al. 2023)",
      "generator": config.source,
      "seed": config.seed,
      "steps": config.steps,
      "images_seen": config.steps * config.batch_size,
      "hyperparameters": hyperparameters,
      "real_images_used": False,
      "statement": "No real image was used: every training image was generated by "
                   f"tfdp.data.random_processes ({config.source!r}, seed {config.seed}) from "
                   "random numbers alone, so this prior holds no information about any dataset "
                   "and costs no privacy when a DP run starts from it.",
      "command": command or " ".join(sys.argv),
      "tensorflow_version": tf.__version__,
  }
