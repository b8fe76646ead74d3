"""tfdp.privacy's planning API and `python -m tfdp.privacy`: the same ε and σ as a run would get."""

import subprocess
import sys

import pytest

import tfdp.privacy
from tfdp import config
from tfdp.privacy import accounting
from tfdp.privacy import planner
from tfdp.training import planning

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

PLAN = dict(num_examples=50000, batch_size=1024, epochs=4, delta=1e-5)


def test_epsilon_composes_epochs_of_ceil_n_over_b_poisson_steps():
  steps = 4 * 49  # ceil(50000 / 1024) = 49 steps per epoch.
  for accountant in ("rdp", "pld"):
    assert tfdp.privacy.epsilon(noise_multiplier=1.5, accountant=accountant, **PLAN) == (
        pytest.approx(accounting.epsilon(1.5, 1024 / 50000, steps, 1e-5, accountant), rel=1e-12))


def test_calibrated_noise_is_what_a_training_run_plans():
  sigma = tfdp.privacy.calibrate_noise(target_epsilon=1.0, **PLAN)
  run = config.Config(privacy=config.PrivacyConfig(epsilon=1.0, delta=1e-5),
                      run=config.RunConfig(batch_size=1024, epochs=4))
  assert planning.plan_privacy(run, 50000).noise_multiplier == sigma
  assert 0.99 <= tfdp.privacy.epsilon(noise_multiplier=sigma, **PLAN) <= 1.0


def test_report_gives_sigma_both_epsilons_and_the_statement():
  lines = planner.report(50000, 1024, 4, 1e-5, target_epsilon=1.0).splitlines()
  sigma = tfdp.privacy.calibrate_noise(target_epsilon=1.0, **PLAN)
  assert lines[0].startswith(f"196 steps of q = 0.02048 (Poisson), σ = {sigma:.4f}")
  rdp = tfdp.privacy.epsilon(noise_multiplier=sigma, **PLAN)
  pld = tfdp.privacy.epsilon(noise_multiplier=sigma, accountant="pld", **PLAN)
  assert lines[1] == f"ε = {rdp:.4f} (RDP), {pld:.4f} (PLD) at δ = 1e-05"
  assert lines[-1].startswith("statement: ε = ") and "Poisson sampling" in lines[-1]
  assert "δ plus a tail" in lines[-1]


@pytest.mark.parametrize("arguments, message", [
    ((50000, 1024, 4, 1e-5), "exactly one of"),
    ((50000, 1024, 4, 1e-5, 1.0, 1.0), "exactly one of"),
    ((50000, None, 4, 1e-5, 1.0), "--batch_size is required"),
    ((100, 1024, 4, 1e-5, 1.0), "larger than num_examples"),
    ((50000, 1024, 0, 1e-5, 1.0), "epochs must be a positive integer"),
])
def test_bad_plans_are_refused_by_name(arguments, message):
  with pytest.raises(ValueError, match=message):
    planner.report(*arguments)


def test_command_prints_and_fails_cleanly():
  command = [sys.executable, "-m", "tfdp.privacy", "--num_examples=60000", "--batch_size=256",
             "--epochs=60", "--delta=1e-5"]
  good = subprocess.run(command + ["--noise_multiplier=1.1"], capture_output=True, text=True,
                        check=True)
  assert "14100 steps" in good.stdout and "(PLD)" in good.stdout
  bad = subprocess.run(command, capture_output=True, text=True)
  assert bad.returncode != 0 and "exactly one of" in bad.stderr
