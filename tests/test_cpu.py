"""tfdp.cpu: `import tfdp` turns oneDNN on unless the user decided, and says what it found."""

import os
import subprocess
import sys

import pytest

from tfdp import cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os, tfdp; from tfdp import cpu; "
         "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), cpu.onednn_enabled())")


def _probe(value=None, code=PROBE):
  env = {k: v for k, v in os.environ.items() if k != cpu.ONEDNN_VARIABLE}
  if value is not None:
    env[cpu.ONEDNN_VARIABLE] = value
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=True)
  return done.stdout.strip().splitlines()[-1]


def test_import_tfdp_turns_onednn_on_when_unset():
  assert _probe() == "1 True"


@pytest.mark.parametrize("value, enabled", [("0", "False"), ("false", "False"), ("1", "True")])
def test_import_tfdp_leaves_the_users_value_alone(value, enabled):
  assert _probe(value) == f"{value} {enabled}"


def test_tensorflow_imported_first_keeps_its_default_and_says_so():
  line = _probe(code="import tensorflow, tfdp; from tfdp import cpu; print(cpu.onednn_status())")
  assert "TensorFlow was imported before tfdp" in line, line


def test_default_onednn_on_records_who_decided():
  environ = {}
  assert cpu.default_onednn_on(environ, modules={}) == "tfdp"
  assert environ == {cpu.ONEDNN_VARIABLE: "1"}
  environ = {cpu.ONEDNN_VARIABLE: "0"}
  assert cpu.default_onednn_on(environ, modules={}) == "user"
  assert environ == {cpu.ONEDNN_VARIABLE: "0"}
  environ = {}
  assert cpu.default_onednn_on(environ, modules={"tensorflow": object()}) == "tensorflow"
  assert environ == {}


def test_default_quiet_logs_leaves_a_users_level_alone():
  environ = {}
  assert cpu.default_quiet_logs(environ, modules={}) == "tfdp"
  assert environ == {cpu.LOG_LEVEL_VARIABLE: "3"}  # Fatal only: TensorFlow's import noise goes.
  environ = {cpu.LOG_LEVEL_VARIABLE: "0"}
  assert cpu.default_quiet_logs(environ, modules={}) == "user"
  assert environ == {cpu.LOG_LEVEL_VARIABLE: "0"}
  environ = {}
  assert cpu.default_quiet_logs(environ, modules={"tensorflow": object()}) == "tensorflow"
  assert environ == {}


def test_this_suite_runs_with_onednn_as_a_user_gets_it():
  """conftest imports tfdp first, so the brute-force tests here run with oneDNN on."""
  assert cpu.onednn_enabled() == (os.environ.get(cpu.ONEDNN_VARIABLE, "1") in ("1", "true"))


def test_cpu_features_read_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\n"
                     "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile\n")
  assert cpu.cpu_model(str(cpuinfo)) == "Example CPU 9000"
  assert cpu.cpu_features(str(cpuinfo)) == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
  assert cpu.cpu_features(str(tmp_path / "missing")) == []
  # A virtual machine's brand alone; the numbers are the first processor's.
  cpuinfo.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
                     "\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: Other\n")
  assert cpu.cpu_model(str(cpuinfo)) == "AMD EPYC (cpu family 25, model 17)"
  assert cpu.cpu_model(str(tmp_path / "missing")) == "unknown CPU"
  assert "oneDNN o" in cpu.describe()


@pytest.mark.parametrize("argv,is_command", [
    (["python", "-m", "tfdp.train", "--flagfile=f"], True),
    (["python", "-m", "tfdp.privacy", "--epsilon=3"], False),  # Imports no TensorFlow.
    (["python", "script.py"], False), (["python", "-m"], False)])
def test_only_tfdp_commands_import_tensorflow_at_import_tfdp(argv, is_command):
  assert cpu.tfdp_command(argv) is is_command


@pytest.mark.parametrize("line,dropped", [
    ("I0000 00:00:1796269321.943339   26299 port.cc:153] oneDNN custom operations are on.", True),
    ("E0000 00:00:1796269321.944180   26299 cuda_dnn.cc:8310] Unable to register cuDNN", True),
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
     True),
    ("Traceback (most recent call last):", False), ("I0000 is not a log line", False)])
def test_a_quiet_import_drops_only_tensorflows_cpp_log_lines(line, dropped):
  assert bool(cpu._CPP_LOG_LINE.match(line)) is dropped  # pylint: disable=protected-access
