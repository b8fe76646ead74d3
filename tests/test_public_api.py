"""The names a Keras user imports from tfdp, and what importing them costs."""

import subprocess
import sys

import pytest

import tfdp

PUBLIC = {
    "optimizers": ["GroupedDPKerasSGDOptimizer", "GroupedDPKerasAdamOptimizer",
                   "GroupedDPKerasAdagradOptimizer", "GroupedDPKerasRMSpropOptimizer"],
    "privacy": ["epsilon", "calibrate_noise"],
    "models": ["build", "MODELS"],
    "data": ["load_dataset", "DATASETS", "poisson_dataset"],
    "keras": ["make_private", "PrivateModel", "PrivacyBudget"],
    "export": ["export_saved_model", "read_model_card"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_import_tfdp_exposes_the_public_names(package):
  for name in PUBLIC[package]:
    assert hasattr(getattr(tfdp, package), name), f"tfdp.{package}.{name}"


def test_unknown_attribute_is_an_attribute_error():
  with pytest.raises(AttributeError, match="keras_magic"):
    tfdp.keras_magic  # pylint: disable=pointless-statement


def test_planning_imports_no_tensorflow():
  code = "import sys, tfdp.privacy; print('tensorflow' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "False"
