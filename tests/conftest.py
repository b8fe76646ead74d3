"""Imported by pytest before any test module: tfdp first, so that TensorFlow starts with the oneDNN
setting a user of tfdp gets (tfdp.cpu), whichever module imports TensorFlow first."""

import os

import pytest

import tfdp  # noqa: F401  pylint: disable=unused-import


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
