"""tfdp.training.run_paths: every directory a run writes is tried before any work, creating none."""

import os

import pytest

from tfdp import config as config_lib
from tfdp.training import run_paths


def _config(output_dir, export_dir=None, model="linear"):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0),
      model=config_lib.ModelConfig(name=model),
      run=config_lib.RunConfig(output_dir=str(output_dir), export_dir=export_dir))


def test_a_writable_place_passes_and_nothing_is_created(tmp_path):
  run_paths.check(_config(tmp_path / "a" / "run", export_dir=str(tmp_path / "b" / "export")))
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where, why", [
    ("file", "is a file, not a directory"),
    ("file/run", "is under {tmp}/file, which is a file, not a directory"),
    ("/proc/tfdp-run", "cannot be created in /proc"),
])
def test_an_impossible_output_dir_is_named_with_the_reason_and_the_fix(tmp_path, where, why):
  (tmp_path / "file").write_text("")
  output_dir = os.path.join(tmp_path, where)
  with pytest.raises(ValueError) as error:
    run_paths.check(_config(output_dir))
  assert str(error.value).startswith(f"{output_dir}: {why.format(tmp=tmp_path)}")
  assert str(error.value).endswith("; give --output_dir a directory you can write")


def test_the_export_dir_is_checked_unless_there_is_no_export(tmp_path):
  config = _config(tmp_path / "run", export_dir="/proc/tfdp-export")
  with pytest.raises(ValueError, match=r"^/proc/tfdp-export: .*--noexport"):
    run_paths.check(config)
  run_paths.check(config_lib.Config(
      privacy=config.privacy, model=config.model,
      run=config_lib.RunConfig(output_dir=str(tmp_path / "run"), export_dir="/proc/x",
                               export=False)))


def test_the_feature_cache_is_checked_for_models_that_use_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", "/proc/tfdp-cache")
  run_paths.check(_config(tmp_path / "run"))  # A linear model computes no features.
  with pytest.raises(ValueError, match="^/proc/tfdp-cache: .*set TFDP_CACHE_DIR to"):
    run_paths.check(_config(tmp_path / "run", model="scatter_linear"))
  assert run_paths.written(_config(tmp_path / "run"), chief=False) == []  # The chief writes.
