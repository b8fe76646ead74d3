"""Configs reject bad values with messages that name them."""

import re

import pytest

from tfdp import config
from tfdp import data
from tfdp.data import feature_augment
from tfdp import models
from tfdp import optimizers


def test_model_options_are_checked_against_the_builder():
  assert config.ModelConfig(name="resnet20", options=(("groupnorm_groups", 4),)).kwargs == {
      "groupnorm_groups": 4}
  with pytest.raises(ValueError, match="unexpected option"):
    config.ModelConfig(name="linear", options=(("depth", 40),))


@pytest.mark.parametrize("kwargs,message", [
    (dict(privacy=config.PrivacyConfig(epsilon=3.0), optimizer=config.OptimizerConfig(name="sgd")),
     "not private"),
    (dict(optimizer=config.OptimizerConfig(name="dp_sgd")), "needs --epsilon"),
])
def test_privacy_and_optimizer_must_agree(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config.Config(**kwargs)


def test_default_chunk_follows_the_engine():
  fast = config.Config(privacy=config.PrivacyConfig(epsilon=1.0),
                       run=config.RunConfig(batch_size=256))
  vectorized = config.Config(privacy=config.PrivacyConfig(epsilon=1.0, clipping="vectorized"),
                             run=config.RunConfig(batch_size=256))
  assert fast.chunk_size == config.DEFAULT_CHUNK["fast"]
  assert vectorized.chunk_size == config.DEFAULT_CHUNK["vectorized"]


@pytest.mark.parametrize("bad", [0, -2, "layers", 1.5])
def test_clip_groups_validation(bad):
  with pytest.raises(ValueError, match="clip_groups"):
    config.PrivacyConfig(clip_groups=bad)


@pytest.mark.parametrize("argv,message", [
    ("--noise=laplace", "--clipping=vectorized"),
    ("--layer_noise=depth_decay", "needs --clip_groups"),
    ("--adaptive_clip_quantile=0.5 --noise_schedule=cosine", "cannot be combined"),
    ("--adaptive_clip_quantile=1.5", "adaptive_clip_quantile must be in (0, 1)"),
    ("--dice_error_clip=2", "needs --optimizer=dice_sgd"),
    ("--optimizer=dice_sgd --dice_error_clip=0.5", "must be >= l2_norm_clip"),
    ("--epsilon_adam=0.001", "does not take epsilon"),
    ("--optimizer=dp_adam --rho=0.9", "does not take rho"),
    ("--noise_schedule=step --noise_schedule_step_epochs=0", "noise_schedule_step_epochs"),
    ("--noise_schedule=cosine --noise_schedule_end_factor=0", "end_factor"),
    ("--augmult=0", "augmult must be >= 1"),
    ("--ema_decay=1", "ema_decay must be in (0, 1)"),
    ("--lr_schedule=warmup_cosine --warmup_epochs=5", "must be shorter than the run"),
    ("--weight_decay=-1", "weight_decay must be >= 0"),
])
def test_flag_combinations_are_refused_naming_the_problem(argv, message):
  """In-process: the command-line path (one line, exit non-zero) is tested in test_train_cli.py."""
  from absl import flags
  from tfdp import train
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["tfdp.train", "--epsilon=3", *argv.split()])
    with pytest.raises(ValueError, match=re.escape(message)):
      train.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()


def _valid(names):
  return ", ".join(names)


@pytest.mark.parametrize("make,message", [
    (lambda: config.DataConfig(dataset="cifar"),
     lambda: f"unknown dataset 'cifar'; valid: {_valid(sorted(data.DATASETS))}"),
    (lambda: config.DataConfig(sampling="uniform"),
     lambda: "unknown sampling 'uniform'; valid: poisson, shuffle"),
    (lambda: config.DataConfig(augment="mixup"),
     lambda: f"unknown augment 'mixup'; valid: "
             f"{_valid(sorted(data.AUGMENTATIONS) + sorted(feature_augment.POLICIES))}"),
    (lambda: config.RunConfig(recipe="tuned"),
     lambda: "unknown recipe 'tuned'; valid: none, auto"),
    (lambda: config.DataConfig(local_dp="gauss", local_dp_scale=1.0),
     lambda: "unknown local_dp 'gauss'; valid: none, laplace"),
    (lambda: config.DataConfig(audit_canary_type="blank"),
     lambda: "unknown audit_canary_type 'blank'; valid: mislabeled, noise"),
    (lambda: config.ModelConfig(name="resnet"),
     lambda: f"unknown model 'resnet'; valid: {_valid(sorted(models.MODELS))}"),
    (lambda: config.ModelConfig(loss="mse"),
     lambda: "unknown loss 'mse'; valid: cross_entropy, hinge"),
    (lambda: config.OptimizerConfig(name="lamb"),
     lambda: f"unknown optimizer 'lamb'; valid: {_valid(sorted(optimizers.OPTIMIZERS))}"),
    (lambda: config.OptimizerConfig(lr_schedule="step"),
     lambda: "unknown lr_schedule 'step'; valid: constant, cosine, warmup_cosine"),
    (lambda: config.RunConfig(distribution="ring"),
     lambda: "unknown distribution 'ring'; valid: mirrored, multi_worker, none"),
])
def test_an_unknown_name_is_refused_by_its_registry_listing_the_valid_ones(make, message):
  with pytest.raises(ValueError) as error:
    make()
  assert str(error.value) == message()


def test_skip_bad_images_goes_with_the_folder_dataset():
  with pytest.raises(ValueError, match="--skip_bad_images applies to --dataset=folder"):
    config.DataConfig(dataset="digits", skip_bad_images=True)
  assert config.DataConfig(dataset="folder", skip_bad_images=True).skip_bad_images
