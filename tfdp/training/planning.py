"""The privacy plan of a run, decided before any training: σ (calibrated or given), the noise
schedule, what σ means for the configured mechanism, the noise DPQuery and the optimizer."""

import math
from typing import Any, Dict, List

import tensorflow as tf

from tfdp import config as config_lib
from tfdp.dp import feature_statistics
from tfdp.dp import groups as dp_groups
from tfdp.dp import noise
from tfdp import models
from tfdp.models import scatter
from tfdp import optimizers
from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib
from tfdp.privacy import mechanisms
from tfdp.privacy import schedules
from tfdp.training import lr_schedules


def plan_privacy(config: config_lib.Config, num_train: int) -> ledger_lib.PrivacyLedger:
  """A fresh ledger: σ calibrated to the target ε over the planned steps, or σ as given.

  With a noise schedule, the schedule's base σ is calibrated so the whole schedule spends at most
  the target. With Laplace noise, "σ" is the Laplace scale over the L1 clip, accounted by PLD.
  """
  q = config.run.batch_size / num_train
  steps_per_epoch = math.ceil(num_train / config.run.batch_size)
  planned_steps = config.run.epochs * steps_per_epoch
  privacy = config.privacy
  factors = (() if privacy.noise_schedule == "constant" else schedules.epoch_factors(
      privacy.noise_schedule, config.run.epochs, privacy.schedule_params))
  shape = [(f, steps_per_epoch) for f in factors] or [(1.0, planned_steps)]
  accountant = "pld" if privacy.noise == "laplace" else "rdp"
  probe = plan_probe(config, num_train)
  statistics = plan_normalization(config)
  before = ([(statistics["noise_multiplier"], statistics["releases"], 1.0)] if statistics else [])
  before += ([(probe["noise_multiplier"], probe["steps"], probe["sampling_probability"])]
             if probe else [])
  if not config.optimizer.private:
    sigma = 0.0
  elif privacy.noise_multiplier is not None:
    sigma = privacy.noise_multiplier
  else:
    sigma = accounting.calibrate_schedule(privacy.epsilon, privacy.delta, q, shape, accountant,
                                          noise=privacy.noise, before=before)
  ledger = ledger_lib.PrivacyLedger(
      noise_multiplier=sigma, sampling_probability=q, delta=privacy.delta,
      sampling=config.data.sampling, target_epsilon=privacy.epsilon, noise=privacy.noise,
      schedule=privacy.noise_schedule, epoch_factors=list(factors),
      steps_per_epoch=steps_per_epoch if factors else 0,
      notes=mechanism_notes(config, sigma) if config.optimizer.private else [],
      randomness="reproducible" if config.run.reproducible_noise else "secret",
      proven=config.optimizer.proven, mechanism=mechanism_fields(config), probe=probe,
      normalization=statistics)
  ledger.record("start", planned_steps=planned_steps,
                calibrated=privacy.noise_multiplier is None and config.optimizer.private)
  if ledger.max_steps() == 0 and ledger.private:
    raise ValueError(f"noise_multiplier {sigma} spends more than epsilon {privacy.epsilon} in a "
                     "single step; raise --noise_multiplier or drop it to calibrate")
  return ledger


def plan_normalization(config: config_lib.Config) -> Dict[str, Any]:
  """The DP feature statistics' σ_n and release count ({} when the model does not use them or
  the run is not private: a non-private run uses the exact statistics)."""
  if not (config.optimizer.private
          and scatter.uses_statistics(config.model.name, config.model.kwargs)):
    return {}
  sigma = config.privacy.normalization_noise_multiplier
  planned = {"noise_multiplier": sigma, "releases": feature_statistics.RELEASES}
  if config.privacy.epsilon is not None:
    alone = accounting.composed_epsilon([(sigma, feature_statistics.RELEASES, 1.0)], 1.0,
                                        config.privacy.delta)
    if alone >= config.privacy.epsilon:
      raise ValueError(f"the DP feature statistics alone spend ε = {alone:.3f} of the target "
                       f"{config.privacy.epsilon}: raise --normalization_noise_multiplier "
                       f"({sigma:g})")
  return planned


def plan_probe(config: config_lib.Config, num_train: int) -> Dict[str, Any]:
  """The linear probe's σ, q and steps ({} without one), by the stated rule: σ given
  (--probe_noise_multiplier), else the smallest σ whose probe alone spends epsilon_fraction of the
  target ε (RDP). The main steps' σ is then calibrated with the probe composed ahead of them."""
  probe = config.probe
  if not probe.steps:
    return {}
  batch_size = probe.batch_size or num_train
  if batch_size > num_train:
    raise ValueError(f"probe_batch_size {batch_size} is larger than the training set ({num_train})")
  q = batch_size / num_train
  sigma = probe.noise_multiplier or accounting.calibrate_noise_multiplier(
      probe.epsilon_fraction * config.privacy.epsilon, config.privacy.delta, q, probe.steps)
  planned = {"noise_multiplier": sigma, "sampling_probability": q, "steps": probe.steps}
  if config.privacy.epsilon is not None:
    alone = accounting.epsilon(sigma, q, probe.steps, config.privacy.delta)
    if alone >= config.privacy.epsilon:
      raise ValueError(f"the linear probe alone spends ε = {alone:.3f} of the target "
                       f"{config.privacy.epsilon}: raise --probe_noise_multiplier ({sigma:g}) or "
                       "lower --linear_probe_steps")
  return planned


def mechanism_fields(config: config_lib.Config) -> Dict[str, Any]:
  """Every setting, beyond σ, q, δ, the noise and its schedule (ledger fields of their own), that
  changes what the noisy steps release: a resumed run must match them all (JSON values).

  A setting that the configured mechanism does not use is None, so changing it changes nothing.
  """
  privacy, dice = config.privacy, config.optimizer.name == "dice_sgd"
  adaptive, l1 = privacy.adaptive_clip_quantile is not None, privacy.norm == "l1"
  return {
      "optimizer": config.optimizer.name,
      "l2_norm_clip": None if l1 else privacy.l2_norm_clip,
      "l1_norm_clip": privacy.l1_norm_clip if l1 else None,
      "dice_error_clip": (privacy.dice_error_clip or privacy.l2_norm_clip) if dice else None,
      "clip_groups": privacy.clip_groups,
      "clipping_mode": privacy.clipping_mode,
      "normalize_gamma": privacy.normalize_gamma if privacy.clipping_mode == "normalize" else None,
      "layer_noise": privacy.layer_noise,
      "adaptive_clip_quantile": privacy.adaptive_clip_quantile,
      "adaptive_clip_learning_rate": privacy.adaptive_clip_learning_rate if adaptive else None,
      "adaptive_clip_count_stddev": config.adaptive_clip_count_stddev if adaptive else None,
      "discrete_rounding_inflation": (privacy.discrete_rounding_inflation
                                      if privacy.noise == "discrete_gaussian" else None),
      "augmult": config.data.augmult,
      "probe_learning_rate": config.probe.learning_rate if config.probe.steps else None,
  }


def mechanism_notes(config: config_lib.Config, sigma: float) -> List[str]:
  """What σ means for the configured mechanism, one sentence each; raises ValueError when the
  mechanism cannot be built at this σ (adaptive clipping's count noise alone exceeding it)."""
  privacy, notes = config.privacy, []
  if privacy.noise == "discrete_gaussian":
    notes.append(f"discrete Gaussian: the clipped sum is rounded to an integer grid fine enough "
                 f"that the sensitivity grows by {privacy.discrete_rounding_inflation:.0%}, and σ "
                 "above is relative to that inflated sensitivity")
  if privacy.layer_noise != "uniform":
    notes.append(f"per-group noise ({privacy.layer_noise}): group stds s_k chosen so that the "
                 f"effective σ = 1/sqrt(Σ C_k²/s_k²) is the σ above")
  if privacy.adaptive_clip_quantile is not None:
    count_std = config.adaptive_clip_count_stddev
    split = mechanisms.adaptive_gradient_noise_multiplier(sigma, count_std)
    notes.append(f"adaptive clipping (Andrew et al. 2021) to quantile "
                 f"{privacy.adaptive_clip_quantile}: gradient σ_Δ = {split:.4f} and unclipped-count "
                 f"noise std {count_std:g} combine into the σ above")
  if config.optimizer.name == "dice_sgd":
    c2 = privacy.dice_error_clip or privacy.l2_norm_clip
    factor = mechanisms.dice_noise_factor(privacy.l2_norm_clip, c2)
    notes.append(f"DiceSGD (Zhang et al. 2024), C1 = {privacy.l2_norm_clip:g}, C2 = {c2:g} "
                 f"(summed-gradient units): noise std σ·C1·sqrt(1 + 2·C2/C1) = "
                 f"{sigma * privacy.l2_norm_clip * factor:.4f}, the paper's sizing. NO PROVEN DP "
                 "GUARANTEE: the hidden error feeds the unclipped part of a sampled example's "
                 "gradient into later releases where it is not sampled, about (R - C1)/C2 of them "
                 "for gradient norm R, unamplified by sampling and unbounded for unbounded "
                 "gradients; the ε shown is DP-SGD's at σ, for comparison only")
  return notes


def noise_query(config: config_lib.Config, ledger: ledger_lib.PrivacyLedger,
                model: tf.keras.Model):
  """The DPQuery that noises the clipped sums (tfdp.dp.noise), or None for non-private runs."""
  privacy, sigma = config.privacy, ledger.noise_multiplier
  if not config.optimizer.private:
    return None
  if privacy.noise == "laplace":
    return noise.LaplaceSumQuery(privacy.l1_norm_clip, sigma * privacy.l1_norm_clip)
  if privacy.noise == "discrete_gaussian":
    return noise.DiscreteGaussianSumQuery(privacy.l2_norm_clip, sigma,
                                          models.count_params(model),
                                          privacy.discrete_rounding_inflation)
  if privacy.adaptive_clip_quantile is not None:
    return noise.adaptive(privacy.l2_norm_clip, sigma, privacy.adaptive_clip_quantile,
                          privacy.adaptive_clip_learning_rate, config.adaptive_clip_count_stddev,
                          config.run.batch_size)
  if config.optimizer.name == "dice_sgd":  # The paper's noise sizing; no proof (see DiceSGD).
    sigma *= mechanisms.dice_noise_factor(privacy.l2_norm_clip,
                                          privacy.dice_error_clip or privacy.l2_norm_clip)
  groups = dp_groups.variable_groups(model, privacy.clip_groups)
  return noise.gaussian(privacy.l2_norm_clip, sigma, groups, privacy.layer_noise)


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
