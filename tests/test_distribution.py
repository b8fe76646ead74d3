"""The private step over tf.distribute replicas (2 logical CPU devices, each check in a fresh
process: tests/distributed_checks.py): the single-device sum, noise added once, same ε."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests import distributed_checks
from tfdp import config as config_lib
from tfdp.privacy import accounting
from tfdp.training import distribution

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


def test_stateful_mechanisms_step_as_on_one_device():
  """EMA, DiceSGD's error, adaptive clipping's clip and a noise schedule (with Adam's slots):
  the same chunks and noise keys give the same state on 2 replicas as on one device."""
  compared = {"ema": 12, "dice": 12, "adaptive": 7, "schedule": 19}
  results = _check("same_as_one_device", *compared)
  assert sorted(results) == sorted(compared)
  for option, result in results.items():
    assert result["compared"] == compared[option], option
    assert result["moved"] > 1e-3, option  # The steps did something.
    for error, scale in zip(result["errors"], result["scales"]):
      assert error <= 1e-5 * scale + 1e-7, option


def test_keras_fit_in_a_mirrored_scope_is_the_single_device_step():
  result = _check("keras_fit", "0.000001")  # σ ≈ 0: the update is the clipped mean.
  assert result["drawn"] > 2 and result["steps"] == 1  # Several chunks of 2, dealt out.
  for error, scale in zip(result["errors"], result["scales"]):
    assert error <= 2e-3 * scale + 1e-6  # Each chunk counted once, not once per replica.
  assert result["replicas_identical"]


def test_keras_fit_in_a_mirrored_scope_adds_the_noise_once():
  result = _check("keras_fit", "2.0")  # 400 steps of a zero-gradient model: 64,000 draws.
  assert result["std_over_sigma_c"] == pytest.approx(1.0, abs=0.01)
  assert result["replicas_identical"]


_TRAIN_FLAGS = ("--dataset=digits", "--model=linear", "--optimizer=dp_sgd", "--learning_rate=0.5",
                "--batch_size=128", "--physical_batch_size=32", "--noexport")
_CALIBRATED = ("--epsilon=4",)
_GIVEN_SIGMA = ("--noise_multiplier=1.0",)  # The same σ whatever the epochs: runs can resume.


def _train(tmp_path, name, *extra, privacy=_CALIBRATED):
  output = tmp_path / name
  _run("-m", "tfdp.train", *_TRAIN_FLAGS, *privacy, "--epochs=2", f"--output_dir={output}",
       *extra)
  with open(output / "metrics.json") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """metrics.json of the reference run on one device (the module shares it)."""
  return _train(tmp_path_factory.mktemp("one_device"), "one")


def test_mirrored_digits_run_ends_with_the_single_device_steps_and_epsilon(tmp_path, one_device):
  one = one_device
  two = _train(tmp_path, "two", "--distribution=mirrored", "--cpu_replicas=2")
  assert two["distribution"] == "mirrored" and two["cpu_replicas"] == 2
  for key in ("steps", "epsilon", "epsilon_pld", "noise_multiplier", "privacy_statement"):
    assert two[key] == one[key], key
  assert min(one["test_accuracy"], two["test_accuracy"]) > 0.3  # Chance is 0.1.
  assert abs(one["test_accuracy"] - two["test_accuracy"]) < 0.25  # DP noise: runs differ.


def _start_workers(outputs, *extra, epochs=2, privacy=_CALIBRATED):
  """Two tfdp.train processes of one TF_CONFIG cluster on localhost; output_dir per worker."""
  cluster = {"worker": [f"localhost:{port}" for port in distributed_checks.free_ports(2)]}
  workers = []
  for index, output in enumerate(outputs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(subprocess.Popen(
        [sys.executable, "-m", "tfdp.train", *_TRAIN_FLAGS, *privacy, f"--epochs={epochs}",
         "--distribution=multi_worker", f"--output_dir={output}", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return workers


def _finish(workers, timeout=300):
  outputs = [worker.communicate(timeout=timeout)[0] for worker in workers]
  return [worker.returncode for worker in workers], outputs


def test_two_workers_train_digits_with_the_single_process_steps_and_epsilon(tmp_path, one_device):
  one = one_device
  codes, logs = _finish(_start_workers([tmp_path / "chief", tmp_path / "worker"]))
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  assert not (tmp_path / "worker").exists()  # Only the chief writes.
  with open(tmp_path / "chief" / "metrics.json") as f:
    chief = json.load(f)
  assert chief["distribution"] == "multi_worker"
  for key in ("steps", "epsilon", "epsilon_pld", "noise_multiplier", "privacy_statement"):
    assert chief[key] == one[key], key
  # Both workers applied the same updates: they report the same test accuracy.
  # The summary line, wherever gRPC's shutdown messages put it in the log.
  accuracies = [[line.split(",")[0] for line in log.splitlines()
                 if line.startswith("Test accuracy")] for log in logs]
  assert len(accuracies[0]) == 1 and accuracies[0] == accuracies[1]


def test_a_restarted_worker_set_resumes_from_the_chiefs_checkpoint(tmp_path, one_device):
  shared = tmp_path / "shared"
  codes, logs = _finish(_start_workers([shared, shared], epochs=1, privacy=_GIVEN_SIGMA))
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  codes, logs = _finish(_start_workers([shared, shared], epochs=2, privacy=_GIVEN_SIGMA))
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  assert all("Resumed after epoch 1" in log for log in logs)
  with open(shared / "metrics.json") as f:
    resumed = json.load(f)
  steps = one_device["steps"]  # 2 epochs of ceil(N / B) steps, as on one device.
  assert resumed["steps"] == steps
  assert resumed["epsilon"] == accounting.epsilon(1.0, 128 / one_device["train_examples"], steps,
                                                  1e-5)  # The single-process ε at σ = 1.
  assert [e["event"] for e in resumed["ledger_history"]] == ["start", "resume"]


def _lines_until(process, marker):
  """`process`'s output lines up to and including the first that contains `marker`."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if marker in line:
      return lines
  pytest.fail(f"the output ended before {marker!r}: {''.join(lines)[-3000:]}")


def test_a_worker_that_dies_stops_the_other_with_the_reason(tmp_path):
  # Far more epochs than any machine finishes before the kill, which waits for the second epoch
  # to start rather than for a time (a fast CPU once finished 50 epochs in the 25 s waited).
  chief, other = _start_workers([tmp_path / "chief", tmp_path / "worker"], epochs=5000)
  started = _lines_until(chief, "Epoch 2/")
  other.kill()
  start = time.monotonic()
  code, log = _finish([chief], timeout=240)
  log = "".join(started) + log[0]
  assert code[0] != 0, log[-3000:]
  assert time.monotonic() - start < 200
  assert "tfdp.train: error: a worker stopped responding" in log, log[-3000:]
  assert "task:1" in log


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not a cluster spec"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "host:port"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "task must be"),
])
def test_a_malformed_tf_config_is_refused_before_any_work(tf_config, message, monkeypatch):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(ValueError, match=message):
    distribution.cluster_spec()


@pytest.mark.parametrize("run, message", [
    ({"cpu_replicas": 2}, "needs --distribution=mirrored"),
    ({"distribution": "mirrored", "cpu_replicas": 0}, "needs --distribution=mirrored"),
    ({"distribution": "ring"}, "unknown distribution"),
    ({"distribution": "mirrored", "jit_compile": True}, "jit_compile"),
])
def test_bad_run_settings_are_refused_by_name(run, message):
  with pytest.raises(ValueError, match=message):
    config_lib.RunConfig(**run)


def test_a_batch_with_fewer_chunks_than_replicas_is_refused():
  run = config_lib.RunConfig(distribution="mirrored", cpu_replicas=4, batch_size=64,
                             physical_batch_size=32)
  with pytest.raises(ValueError, match="fewer chunks than the 4 replicas"):
    config_lib.Config(privacy=config_lib.PrivacyConfig(epsilon=1.0), run=run)


def test_the_configs_know_every_strategy_by_name():
  """config.STRATEGY_NAMES checks --distribution below tfdp.training, which builds them."""
  assert config_lib.STRATEGY_NAMES == tuple(sorted(distribution.STRATEGIES))
