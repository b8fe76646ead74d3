"""The privacy ledger: budget checks, statements, persistence."""

import pytest

from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib


def _ledger(**kwargs):
  args = dict(noise_multiplier=1.2, sampling_probability=0.05, delta=1e-5, target_epsilon=2.0)
  args.update(kwargs)
  return ledger_lib.PrivacyLedger(**args)


def test_epsilon_follows_steps():
  ledger = _ledger()
  ledger.steps = 100
  assert ledger.epsilon() == accounting.epsilon(1.2, 0.05, 100, 1e-5)
  assert ledger.epsilon("pld") == accounting.epsilon(1.2, 0.05, 100, 1e-5, "pld")


def test_max_steps_respects_target():
  ledger = _ledger()
  allowed = ledger.max_steps()
  assert ledger.epsilon(steps=allowed) <= 2.0 < ledger.epsilon(steps=allowed + 1)
  assert _ledger(target_epsilon=None).max_steps() is None


def test_json_round_trip_keeps_history():
  ledger = _ledger(sampling="shuffle")
  ledger.record("start", planned_steps=10)
  ledger.steps = 7
  ledger.record("resume", epoch=1)
  again = ledger_lib.PrivacyLedger.from_json(ledger.to_json())
  assert again == ledger
  assert again.same_mechanism(ledger)
  assert not again.same_mechanism(_ledger(noise_multiplier=1.3))


def test_save_is_atomic_and_loads(tmp_path):
  path = tmp_path / "ledger.json"
  ledger = _ledger()
  ledger.save(str(path))
  assert ledger_lib.PrivacyLedger.load(str(path)) == ledger
  assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]


def test_statement_names_accountant_and_sampling():
  poisson, shuffle = _ledger(), _ledger(sampling="shuffle")
  poisson.steps = shuffle.steps = 10
  assert "RDP" in poisson.describe() and "Poisson sampling" in poisson.describe()
  assert "shuffling" in shuffle.describe() and "not a proof" in shuffle.describe()
  assert "non-private" in _ledger(noise_multiplier=0.0).describe()


def test_rejects_unknown_sampling():
  with pytest.raises(ValueError, match="sampling"):
    _ledger(sampling="random")
