"""The private step over tf.distribute replicas (2 logical CPU devices, each check in a fresh
process: tests/distributed_checks.py): the single-device sum, noise added once, same ε."""

import json
import os
import subprocess
import sys

import pytest

from tfdp import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _check(*args):
  return json.loads(_run("-m", "tests.distributed_checks", *args).stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("clip_groups", ["None", "2"])
def test_all_reduced_clipped_sum_is_the_single_device_brute_force_sum(clip_groups):
  result = _check("clipped_sum", clip_groups)
  assert result["replicas"] == 2 and result["clip_bites"]
  for error, scale in zip(result["errors"], result["scales"]):
    assert error <= 2e-3 * scale + 1e-6
  assert result["replicas_identical"]


def test_noise_is_sigma_c_once_per_step_not_once_per_replica():
  result = _check("noise_std", "400")  # 64,000 draws: the std is known to 0.3%.
  assert result["std_over_sigma_c"] == pytest.approx(1.0, abs=0.01)  # Per replica: √2.
  assert abs(result["mean_over_sigma_c"]) < 0.02
  assert result["replicas_identical"]


def test_keras_api_refuses_a_multi_replica_scope_with_the_reason():
  assert "multi-replica" in _check("keras_refusal")["error"]


def _train(tmp_path, name, *extra):
  output = tmp_path / name
  _run("-m", "tfdp.train", "--dataset=digits", "--model=linear", "--optimizer=dp_sgd",
       "--learning_rate=0.5", "--epsilon=4", "--batch_size=128", "--physical_batch_size=32",
       "--epochs=2", "--noexport", f"--output_dir={output}", *extra)
  with open(output / "metrics.json") as f:
    return json.load(f)


def test_mirrored_digits_run_ends_with_the_single_device_steps_and_epsilon(tmp_path):
  one = _train(tmp_path, "one")
  two = _train(tmp_path, "two", "--distribution=mirrored", "--cpu_replicas=2")
  assert two["distribution"] == "mirrored" and two["cpu_replicas"] == 2
  for key in ("steps", "epsilon", "epsilon_pld", "noise_multiplier", "privacy_statement"):
    assert two[key] == one[key], key
  assert min(one["test_accuracy"], two["test_accuracy"]) > 0.3  # Chance is 0.1.
  assert abs(one["test_accuracy"] - two["test_accuracy"]) < 0.25  # DP noise: runs differ.


@pytest.mark.parametrize("run, message", [
    ({"cpu_replicas": 2}, "needs --distribution=mirrored"),
    ({"distribution": "mirrored", "cpu_replicas": 0}, "needs --distribution=mirrored"),
    ({"distribution": "ring"}, "unknown distribution"),
    ({"distribution": "mirrored", "jit_compile": True}, "jit_compile"),
    ({"distribution": "mirrored", "ema_decay": 0.9}, "ema_decay"),
])
def test_bad_run_settings_are_refused_by_name(run, message):
  with pytest.raises(ValueError, match=message):
    config_lib.RunConfig(**run)


def test_a_batch_with_fewer_chunks_than_replicas_is_refused():
  run = config_lib.RunConfig(distribution="mirrored", cpu_replicas=4, batch_size=64,
                             physical_batch_size=32)
  with pytest.raises(ValueError, match="fewer chunks than the 4 replicas"):
    config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=1.0), run=run)
