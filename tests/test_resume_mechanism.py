"""A resume continues the same mechanism or is refused: the ledger records every setting that
changes what the noisy steps release, and the planned run must match it."""

import json

import pytest

from tfdp import config as config_lib
from tfdp.privacy import ledger as ledger_lib
from tfdp.training import checkpointing
from tfdp.training import loop as training
from tfdp.training import planning

NUM_TRAIN = 100


def _config(optimizer="dp_sgd", augmult=1, **privacy):
  privacy = {"noise_multiplier": 1.0, **privacy}
  return config_lib.Config(data=config_lib.DataConfig(augmult=augmult),
                           privacy=config_lib.PrivacyConfig(**privacy),
                           optimizer=config_lib.OptimizerConfig(name=optimizer),
                           run=config_lib.RunConfig(batch_size=10, epochs=2))


class _SavedRun:
  """A RunState stand-in whose state.json holds `ledger` after epoch 1, as RunState writes it."""

  not_checkpointed = ()

  def __init__(self, ledger, drop=()):
    self._state = json.loads(ledger.to_json())
    for key in drop:  # Fields a state.json written by an older tfdp lacks.
      del self._state[key]

  def restore(self):
    return checkpointing.Restored(1, ledger_lib.PrivacyLedger(**self._state), [], 0)


def _resume(saved_config, new_config, drop=()):
  saved = planning.plan_privacy(saved_config, NUM_TRAIN)
  saved.steps = 10
  return training._restore_or_start(  # pylint: disable=protected-access
      _SavedRun(saved, drop), planning.plan_privacy(new_config, NUM_TRAIN))


def test_same_config_resumes_where_it_stopped():
  epoch, ledger, _, _ = _resume(_config(clip_groups=2, layer_noise="depth_decay"),
                             _config(clip_groups=2, layer_noise="depth_decay"))
  assert epoch == 1 and ledger.steps == 10 and ledger.history[-1]["event"] == "resume"
  assert ledger.mechanism["layer_noise"] == "depth_decay" and ledger.mechanism["clip_groups"] == 2


@pytest.mark.parametrize("saved,new,message", [
    ({}, {"optimizer": "dice_sgd"}, "optimizer: 'dp_sgd' -> 'dice_sgd'"),
    ({}, {"l2_norm_clip": 0.5}, "l2_norm_clip: 1.0 -> 0.5"),
    ({"optimizer": "dice_sgd"}, {"optimizer": "dice_sgd", "dice_error_clip": 3.0},
     "dice_error_clip: 1.0 -> 3.0"),
    ({}, {"clip_groups": "layer"}, "clip_groups: None -> 'layer'"),
    ({"clip_groups": 2}, {"clip_groups": 2, "layer_noise": "depth_decay"},
     "layer_noise: 'uniform' -> 'depth_decay'"),
    ({}, {"clipping_mode": "normalize"}, "clipping_mode: 'clip' -> 'normalize'"),
    ({}, {"adaptive_clip_quantile": 0.5, "adaptive_clip_count_stddev": 5.0},
     "adaptive_clip_quantile: None -> 0.5"),
    ({}, {"augmult": 4}, "augmult: 1 -> 4"),
])
def test_a_different_mechanism_is_refused_naming_what_changed(saved, new, message):
  with pytest.raises(ValueError, match="different privacy mechanism") as error:
    _resume(_config(**saved), _config(**new))
  assert message in str(error.value)


def test_settings_the_mechanism_does_not_use_do_not_block_a_resume():
  # normalize_gamma only matters with --clipping_mode=normalize.
  _resume(_config(normalize_gamma=0.01), _config(normalize_gamma=0.1))


def test_a_ledger_from_before_the_mechanism_was_recorded_loads_but_is_not_resumed():
  old = json.loads(planning.plan_privacy(_config(), NUM_TRAIN).to_json())
  del old["mechanism"]
  assert ledger_lib.PrivacyLedger(**old).mechanism == {}
  with pytest.raises(ValueError, match="mechanism settings: not recorded"):
    _resume(_config(), _config(), drop=("mechanism",))
