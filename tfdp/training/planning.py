"""The privacy plan of a command-line run: its config as the one planner's RunPlan
(tfdp.privacy.run_plan), the mechanism's DPQuery (tfdp.privacy.mechanisms) and the optimizer."""

from typing import Any, Dict

import tensorflow as tf

from tfdp import config as config_lib
from tfdp.dp import groups as dp_groups
from tfdp.dp import noise
from tfdp import models
from tfdp.models import scatter
from tfdp import optimizers
from tfdp.optimizers import lr_schedules
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms
from tfdp.privacy import run_plan as run_plan_lib


def mechanism_settings(config: config_lib.Config) -> mechanisms.Settings:
  """The steps' mechanism settings of a command-line run (tfdp.privacy.mechanisms.Settings)."""
  return config.mechanism_settings


def run_plan(config: config_lib.Config, num_train: int) -> run_plan_lib.RunPlan:
  """The command-line run as the one planner's RunPlan (tfdp.privacy.run_plan)."""
  privacy, probe = config.privacy, config.probe
  uses_statistics = scatter.uses_statistics(config.model.name, config.model.kwargs)
  return run_plan_lib.RunPlan(
      train_size=num_train, batch_size=config.run.batch_size, epochs=config.run.epochs,
      delta=privacy.delta, settings=mechanism_settings(config),
      target_epsilon=privacy.epsilon, noise_multiplier=privacy.noise_multiplier,
      private=config.optimizer.private, sampling=config.data.sampling,
      randomness="reproducible" if config.run.reproducible_noise else "secret",
      noise_schedule=privacy.noise_schedule,
      schedule_params=tuple(sorted(privacy.schedule_params.items())),
      probe=run_plan_lib.ProbeSpec(
          steps=probe.steps, batch_size=probe.batch_size,
          epsilon_fraction=probe.epsilon_fraction, noise_multiplier=probe.noise_multiplier,
          learning_rate=probe.learning_rate) if probe.steps else None,
      statistics_noise_multiplier=(privacy.normalization_noise_multiplier if uses_statistics
                                   else None),
      augmult=config.data.augmult)


def plan_privacy(config: config_lib.Config, num_train: int) -> ledger_lib.PrivacyLedger:
  """A fresh ledger (tfdp.privacy.run_plan): σ calibrated to the target ε over the planned steps
  (with a noise schedule, its base σ; with Laplace noise, the scale over the L1 clip, by PLD), or
  σ as given."""
  ledger = run_plan(config, num_train).ledger()
  if ledger.max_steps() == 0 and ledger.private:
    raise ValueError(f"noise_multiplier {ledger.noise_multiplier} spends more than epsilon "
                     f"{config.privacy.epsilon} in a single step; raise --noise_multiplier or "
                     "drop it to calibrate")
  return ledger


def plan_probe(config: config_lib.Config, num_train: int) -> Dict[str, Any]:
  """The linear probe's σ, q and steps ({} without one), by the rule of RunPlan.probe_plan."""
  return run_plan(config, num_train).probe_plan()


def mechanism_fields(config: config_lib.Config) -> Dict[str, Any]:
  """Every setting, beyond σ, q, δ, the noise and its schedule, that changes what the noisy steps
  release: a resumed run must match them all (tfdp.privacy.mechanisms.resume_fields)."""
  return run_plan(config, 1).resume_fields()


def noise_query(config: config_lib.Config, ledger: ledger_lib.PrivacyLedger,
                model: tf.keras.Model):
  """The DPQuery that noises the clipped sums (the mechanism's own), or None when not private."""
  if not config.optimizer.private:
    return None
  return make_query(mechanism_settings(config), ledger.noise_multiplier, model)


def make_query(settings: mechanisms.Settings, sigma: float, model: tf.keras.Model):
  """The selected mechanism's DPQuery at σ for `model`'s trainable variables."""
  return mechanisms.select(settings).make_query(
      settings, sigma, groups=dp_groups.variable_groups(model, settings.clip_groups),
      coordinates=models.count_params(model), queries=noise)


def build_optimizer(config: config_lib.Config, ledger: ledger_lib.PrivacyLedger,
                    model: tf.keras.Model, steps_per_epoch: int):
  """The optimizer with its learning-rate schedule over the planned steps and its noise query."""
  options = config.optimizer
  learning_rate = lr_schedules.make_schedule(
      options.lr_schedule, options.step_size, total_steps=ledger.history[0]["planned_steps"],
      end_learning_rate=options.end_learning_rate,
      warmup_steps=round(options.warmup_epochs * steps_per_epoch))
  return optimizers.build_optimizer(
      options.name, learning_rate, momentum=options.momentum,
      hyperparameters=dict(options.hyperparameters), dp_query=noise_query(config, ledger, model),
      error_clip=config.privacy.dice_error_clip)
