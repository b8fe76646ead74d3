"""tfdp.bench on a tiny model: the JSON record, skipped and failed modes, memory children, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfdp.experiments import bench
from tfdp.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED_MODES = ("nonprivate", "fast", "fast_layer", "vectorized")
TINY = ["--model=linear", "--input_shape=8,8,1", "--batch_size=16", "--steps=1"]


def _tiny_config(modes, **kwargs):
  return bench.BenchConfig(model="linear", input_shape=(8, 8, 1), batch_size=16, steps=1,
                           modes=tuple(modes), **kwargs)


def _assert_record_shape(record):
  assert set(record) == {"model", "model_options", "batch_size", "cpu", "cpu_features", "onednn",
                         "stack", "examples_per_second", "peak_memory_mb"}
  assert record["stack"].startswith("TensorFlow ") and "Keras 2 as tf.keras" in record["stack"]
  for key in ("examples_per_second", "peak_memory_mb"):
    assert set(FIXED_MODES) <= set(record[key]), record[key]


@pytest.fixture(name="bogus_modes")
def fixture_bogus_modes(monkeypatch):
  """Two modes TrainStep refuses, whatever engines exist: an unknown engine, an unknown keyword."""
  monkeypatch.setitem(bench.MODES, "bogus_engine", dict(private=True, engine="no_such_engine"))
  monkeypatch.setitem(bench.MODES, "bogus_option",
                      dict(private=True, engine="vectorized", no_such_option=1))
  return ("bogus_engine", "bogus_option")


def test_run_modes_measured_and_refused_modes_skipped(bogus_modes):
  config = _tiny_config(("nonprivate", "vectorized", *bogus_modes))
  results = bench.run_bench(config)
  record = json.loads(json.dumps(bench.summary(config, results)))  # Survives a JSON round trip.
  _assert_record_shape(record)
  assert record["model"] == "linear" and record["batch_size"] == 16
  for mode in ("nonprivate", "vectorized"):
    assert record["examples_per_second"][mode] > 0, results[mode]
    assert record["peak_memory_mb"][mode] > 0, results[mode]
    assert len(results[mode].round_examples_per_second) == config.rounds
    assert results[mode].peak_rss_mb >= results[mode].build_rss_mb > 0
  for mode in bogus_modes:
    assert record["examples_per_second"][mode] is None
    assert record["peak_memory_mb"][mode] is None
  table = bench.format_table(config, results, "python -m tfdp.bench (test)")
  rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
  assert "skipped: ValueError" in rows["bogus_engine"] and "no_such_engine" in rows["bogus_engine"]
  assert "skipped: TypeError" in rows["bogus_option"] and "no_such_option" in rows["bogus_option"]
  assert "not requested" in rows["fast"] and "2 chunk(s) of 8" in rows["vectorized"]
  assert "CPU:" in table and "oneDNN o" in table and "TensorFlow" in table


def test_chunks_pad_the_last_chunk_with_masked_rows():
  chunks = bench.make_chunks(bench.BenchConfig(model="linear", input_shape=(4, 4, 1),
                                               batch_size=10), chunk_size=4)
  assert [tuple(c[0].shape) for c in chunks] == [(4, 4, 4, 1)] * 3
  np.testing.assert_array_equal(np.concatenate([c[2].numpy() for c in chunks]),
                                [1.0] * 10 + [0.0] * 2)


def test_vectorized_mode_gets_its_own_chunk_size():
  config = _tiny_config(("nonprivate", "vectorized"), vectorized_physical_batch_size=4)
  assert config.chunk_size("vectorized") == 4
  assert config.chunk_size("nonprivate") == 16  # Default: the whole batch in one chunk.


def test_config_names_an_unknown_mode():
  with pytest.raises(ValueError, match="no_such_mode"):
    _tiny_config(("nonprivate", "no_such_mode"))


def test_model_options_reach_the_model_and_the_memory_child():
  config = bench.BenchConfig(model="resnet20", input_shape=(8, 8, 3), batch_size=4, steps=1,
                             modes=("nonprivate",),
                             model_options=(("weight_standardization", False),))
  model = bench.build_step(config, "nonprivate")._model  # pylint: disable=protected-access
  convolutions = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
  assert convolutions and not any(isinstance(l, layers.WSConv2D) for l in convolutions)
  assert "--model_kwargs=weight_standardization=False" in bench.child_command(config, "nonprivate")
  assert "weight_standardization=False" in bench.method(config)


def test_config_names_an_unknown_model_option():
  with pytest.raises(ValueError, match="no_such_option"):
    bench.BenchConfig(model="resnet20", model_options=(("no_such_option", 1),))


@pytest.mark.parametrize("code, timeout_s, reason", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 60, "killed by SIGKILL"),
    ("import sys; sys.exit('out of cheese')", 60, "exited 1: out of cheese"),
    ("import time; time.sleep(60)", 0.5, "timeout"),
    ("print('no json here')", 60, "no JSON"),
])
def test_memory_child_failure_gives_none_and_reason(code, timeout_s, reason):
  record, why = bench.run_child([sys.executable, "-c", code], timeout_s)
  assert record is None and reason in why


def test_dead_memory_child_gives_null_peak_with_reason(monkeypatch):
  config = _tiny_config(("nonprivate",))
  results = {mode: bench.ModeResult() for mode in bench.MODES}
  results["nonprivate"].round_examples_per_second.append(1.0)  # As if the speed phase ran it.
  kill = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
  monkeypatch.setattr(bench, "child_command", lambda config, mode: kill)
  bench.measure_memory(config, results)
  assert results["nonprivate"].peak_rss_mb is None
  assert any("SIGKILL" in note for note in results["nonprivate"].notes)
  assert bench.summary(config, results)["peak_memory_mb"]["nonprivate"] is None


def test_child_peak_is_its_own_not_the_parents():
  # ru_maxrss would fail this: Linux keeps the exec'ing parent's peak in the child's.
  ballast = np.ones(768 * 2**20, np.uint8)  # 768 MiB, touched, held while the child runs.
  code = "from tfdp.experiments import bench; print(bench._status_mb('VmHWM'))"
  child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
  child_peak = float(child.stdout.strip().splitlines()[-1])
  parent_rss = bench._status_mb("VmRSS")  # pylint: disable=protected-access
  assert 0 < child_peak < parent_rss - 512, (child_peak, parent_rss)
  del ballast


def test_cli_last_line_is_the_json_record(tmp_path):
  output = tmp_path / "bench.json"
  command = [sys.executable, "-m", "tfdp.bench", *TINY, "--modes=nonprivate", f"--output={output}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  record = json.loads(lines[-1])
  _assert_record_shape(record)
  assert record["examples_per_second"]["nonprivate"] > 0
  assert record["peak_memory_mb"]["nonprivate"] > 0
  assert record["examples_per_second"]["vectorized"] is None  # Not requested.
  assert json.loads(output.read_text()) == record
  assert any(line.startswith("| nonprivate |") for line in lines)


def test_cli_refuses_an_unknown_mode():
  command = [sys.executable, "-m", "tfdp.bench", *TINY, "--modes=no_such_mode"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode != 0 and "no_such_mode" in done.stderr


@pytest.mark.parametrize("batch_size,chunk", [(256, 256), (256, 64), (40, 8)])
def test_poisson_chunks_per_step_matches_simulation(batch_size, chunk):
  draws = np.random.default_rng(0).poisson(batch_size, size=200_000)
  simulated = np.mean(np.maximum(1, np.ceil(draws / chunk)))
  assert bench.poisson_chunks_per_step(batch_size, chunk) == pytest.approx(simulated, rel=5e-3)


@pytest.mark.parametrize("features, runs", [(["avx2", "fma", "avx512_bf16"], True),
                                            (["avx2", "fma"], False)])
def test_bfloat16_modes_run_where_the_cpu_has_bfloat16_and_are_skipped_with_why_elsewhere(
    monkeypatch, features, runs):
  if tf.config.list_physical_devices("GPU"):
    pytest.skip("on a GPU machine the CPU's features do not decide")
  monkeypatch.setattr(bench.precision.cpu, "cpu_features", lambda: features)
  config = _tiny_config(("nonprivate_bf16", "fast_bf16"), memory=False)
  results = bench.run_bench(config)
  for mode in config.modes:
    if runs:
      assert results[mode].examples_per_second > 0, results[mode]
    else:
      assert results[mode].examples_per_second is None
      assert any("no bfloat16 arithmetic" in note for note in results[mode].notes)
