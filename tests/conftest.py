"""Imported by pytest before any test module: tfdp first, so that TensorFlow starts with the oneDNN
setting a user of tfdp gets (tfdp.cpu), whichever module imports TensorFlow first."""

import os

import pytest

import tfdp  # noqa: F401  pylint: disable=unused-import


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_a_temporary_directory(tmp_path_factory):
  """ScatterNet features cached by tests go to a fresh directory, not the user's cache."""
  previous = os.environ.get("TFDP_CACHE_DIR")
  os.environ["TFDP_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature_cache"))
  yield
  if previous is None:
    os.environ.pop("TFDP_CACHE_DIR", None)
  else:
    os.environ["TFDP_CACHE_DIR"] = previous
