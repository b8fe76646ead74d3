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


def _scheduled(**kwargs):
  args = dict(schedule="step", epoch_factors=[1.0, 0.8, 0.5], steps_per_epoch=10)
  args.update(kwargs)
  return _ledger(**args)


def test_schedule_segments_and_per_step_sigma():
  ledger = _scheduled()
  assert ledger.segments(25) == [(1.2, 10), (1.2 * 0.8, 10), (1.2 * 0.5, 5)]
  assert ledger.segments(45)[-1] == (1.2 * 0.5, 25)  # The last factor continues.
  assert [ledger.noise_multiplier_at(s) for s in (0, 9, 10, 29, 99)] == pytest.approx(
      [1.2, 1.2, 0.96, 0.6, 0.6])
  ledger.steps = 25
  assert ledger.epsilon() == accounting.composed_epsilon(ledger.segments(25), 0.05, 1e-5)
  assert "step schedule" in ledger.describe()


def test_schedule_survives_a_round_trip_and_is_part_of_the_mechanism():
  ledger = _scheduled()
  ledger.steps = 13
  again = ledger_lib.PrivacyLedger.from_json(ledger.to_json())
  assert again.noise_multiplier_at(13) == ledger.noise_multiplier_at(13) == pytest.approx(0.96)
  assert again.same_mechanism(ledger)
  assert not again.same_mechanism(_scheduled(epoch_factors=[1.0, 0.7, 0.5]))
  assert not again.same_mechanism(_ledger())


def test_laplace_ledger_uses_pld():
  ledger = _ledger(noise="laplace", noise_multiplier=3.0, target_epsilon=3.0)
  ledger.steps = 20
  assert ledger.accountant == "pld"
  assert ledger.epsilon() == accounting.epsilon(3.0, 0.05, 20, 1e-5, "pld", noise="laplace")
  assert "PLD accountant" in ledger.describe() and "Laplace" in ledger.describe()
  allowed = ledger.max_steps()
  assert ledger.epsilon(steps=allowed) <= 3.0 < ledger.epsilon(steps=allowed + 1)


_PHASES = [{"noise_multiplier": 1.0, "sampling_probability": 0.2, "steps": 20, "delta": 1e-5},
           {"noise_multiplier": 2.0, "sampling_probability": 0.1, "steps": 10, "delta": 1e-5}]


def test_prior_phases_are_composed_ahead_and_counted_everywhere():
  ledger = _ledger(prior_phases=_PHASES, coordinates=1000, target_epsilon=12.0)
  ledger.steps = 30
  assert ledger.epsilon() == accounting.composed_epsilon(
      [(1.0, 20, 0.2), (2.0, 10, 0.1), (1.2, 30, 0.05)], 0.05, 1e-5)
  assert ledger.prior_steps == 30
  assert "after 2 earlier phases (30 steps) and 30 steps" in ledger.describe()
  assert ledger.float_tail_delta() == pytest.approx(  # 60 noised releases, 30 of them earlier.
      ledger_lib.mechanisms.float_tail_delta(ledger.epsilon(), 60, 1000, "gaussian"))
  allowed = ledger.max_steps()
  assert ledger.epsilon(steps=allowed) <= 12.0 < ledger.epsilon(steps=allowed + 1)
  assert allowed < _ledger(target_epsilon=12.0).max_steps()
  assert not ledger.same_mechanism(_ledger())
  assert any(change.startswith("prior_phases") for change in ledger.mechanism_changes(_ledger()))


def test_a_ledger_without_prior_phases_still_loads():
  text = _ledger().to_json().replace('"prior_phases": [],', "").replace('"run_id": "",', "")
  assert "prior_phases" not in text and "run_id" not in text
  assert ledger_lib.PrivacyLedger.from_json(text).prior_phases == []


def test_phases_of_a_finished_ledger_and_what_cannot_be_phases():
  ledger = _ledger(prior_phases=_PHASES[:1], run_id="abc")
  ledger.steps = 7
  phases = ledger.phases()
  assert [p["steps"] for p in phases] == [20, 7]
  assert phases[1]["noise_multiplier"] == 1.2 and phases[1]["run_id"] == "abc"
  assert _ledger().phases() == []  # No step taken: nothing spent.
  for kwargs, reason in [({"probe": {"noise_multiplier": 2.0, "sampling_probability": 0.5,
                                     "steps": 3}}, "linear probe"),
                         ({"normalization": {"noise_multiplier": 5.0, "releases": 2}},
                          "feature statistics"),
                         ({"noise": "laplace"}, "laplace noise"),
                         ({"schedule": "step", "epoch_factors": [1.0, 0.5], "steps_per_epoch": 2},
                          "step noise schedule"),
                         ({"proven": False}, "without a privacy proof")]:
    with pytest.raises(ValueError, match=reason):
      _ledger(**kwargs).phases()


def test_malformed_prior_phases_are_refused():
  with pytest.raises(ValueError, match="lacks"):
    _ledger(prior_phases=[{"noise_multiplier": 1.0, "steps": 3}])
  with pytest.raises(ValueError, match="noise_multiplier > 0"):
    _ledger(prior_phases=[{"noise_multiplier": 0.0, "sampling_probability": 0.1, "steps": 3}])
  with pytest.raises(ValueError, match="Gaussian"):
    _ledger(prior_phases=_PHASES, noise="laplace")
