"""Imported by pytest before any test module: tfdp first, so that TensorFlow starts with the oneDNN
setting a user of tfdp gets (tfdp.cpu), whichever module imports TensorFlow first."""

import os

import pytest

# Each pytest-xdist worker is one of -n N processes sharing N cores: one TensorFlow and oneDNN
# thread apiece (and in the commands the tests start) instead of N each contending for them. On
# 2 cores with -n 2 this ran a 121-test sample in 121 s against 159 s (AMD EPYC, 2026-12-03).
if os.environ.get("PYTEST_XDIST_WORKER"):
  for _variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import tfdp  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_a_temporary_directory(tmp_path_factory):
  """ScatterNet features cached by tests go to a fresh directory, not the user's cache."""
  yield from _environ_in_a_temporary_directory("TFDP_CACHE_DIR", tmp_path_factory)


@pytest.fixture(autouse=True, scope="session")
def _ledger_register_in_a_temporary_directory(tmp_path_factory):
  """The ledgers private Keras models record (tfdp.keras.weights_ledger): not in the user's."""
  yield from _environ_in_a_temporary_directory("TFDP_LEDGER_DIR", tmp_path_factory)


def _environ_in_a_temporary_directory(name, tmp_path_factory):
  previous = os.environ.get(name)
  os.environ[name] = str(tmp_path_factory.mktemp(name.lower()))
  yield
  if previous is None:
    os.environ.pop(name, None)
  else:
    os.environ[name] = previous
