"""Configs reject bad values with messages that name them."""

import pytest

from tfdp import config


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
