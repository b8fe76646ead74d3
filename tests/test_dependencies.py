"""Every dependency imports, at the version its constraints file pins (pip can resolve sets that
fail at import), on both stacks tfdp is tested on: TF 2.15.1 (constraints.txt) and TF 2.21
(constraints-tf2.21.txt)."""

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from tfdp import stack
from tfdp.compat import tf_privacy

pytestmark = pytest.mark.newest_stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tf_keras is Keras 2 as tf.keras only where Keras 3 is installed (TF >= 2.16); on TF 2.15 it is
# installed but unused, and importing it beside TF 2.15's own Keras 2 re-registers Keras's public
# names (`tf.keras.activations.tanh` then resolves to another function object), so it is not
# imported there.
MODULES = ["tensorflow", *(["tf_keras"] if stack.keras_3_installed() else []),
           "tfdp.compat.tf_privacy", "dp_accounting", "keras_cv",
           "tensorflow_datasets", "tensorflow_metadata.proto.v0.schema_pb2", "absl.flags",
           "sklearn.datasets", "matplotlib", "numpy", "scipy", "kymatio", "kymatio.keras",
           "tfdp.train", "tfdp.priors.pretraining", "diffprivlib",
           "diffprivlib.models"]  # Not tfdp.pretrain too: two entry points' absl flags clash.
# Distributions whose version decides whether the set imports (the rest follow them).
KEY_DISTRIBUTIONS = ("tensorflow", "tf_keras", "tensorflow_privacy", "dp-accounting", "keras-cv",
                     "tensorflow-datasets", "kymatio", "diffprivlib", "numpy", "scipy",
                     "scikit-learn", "protobuf")


def _constraints_file() -> str:
  """The constraints file of the installed TensorFlow."""
  newest = stack.release(stack.version_of("tensorflow")) >= (2, 16)
  return os.path.join(ROOT, "constraints-tf2.21.txt" if newest else "constraints.txt")


def _pins(path: str) -> dict:
  pins = {}
  with open(path) as f:
    for line in f:
      match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
      if match:
        pins[_canonical(match.group(1))] = match.group(2)
  return pins


def _canonical(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("module", MODULES)
def test_imports(module):
  importlib.import_module(module)


@pytest.mark.parametrize("distribution", KEY_DISTRIBUTIONS)
def test_installed_versions_are_the_constraints_files(distribution):
  pins = _pins(_constraints_file())
  assert importlib.metadata.version(distribution) == pins[_canonical(distribution)], (
      f"{distribution} differs from {os.path.basename(_constraints_file())}")


def test_tf_keras_is_keras_2():
  """TF Privacy's optimizers and tfdp need Keras 2: TF 2.15's own keras, or tf_keras."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  package = tf.keras.layers.Dense.__module__.split(".")[0]
  assert package in ("keras", "tf_keras"), package
  assert importlib.metadata.version(package.replace("_", "-")).startswith("2.")


def test_tf_privacy_top_level_import_fails_only_where_the_compat_module_says():
  """Why tfdp.compat.tf_privacy exists: on TF >= 2.16 TF Privacy's own package does not import."""
  result = subprocess.run([sys.executable, "-c", "import tensorflow_privacy"],
                          capture_output=True, text=True, timeout=300, check=False)
  assert (result.returncode != 0) == tf_privacy.needs_bodiless_package(), result.stderr[-500:]
  if result.returncode:
    assert "estimator" in result.stderr


def test_only_the_compat_module_imports_tf_privacy():
  pattern = re.compile(r"^\s*(from|import)\s+tensorflow_privacy\b", re.MULTILINE)
  offenders = []
  for folder in ("tfdp", "tests", "benchmarks", "examples"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        path = os.path.join(dirpath, name)
        if name.endswith(".py") and not path.endswith(os.path.join("compat", "tf_privacy.py")):
          with open(path) as f:
            if pattern.search(f.read()):
              offenders.append(os.path.relpath(path, ROOT))
  assert offenders == []


def test_protobuf_is_the_compiled_implementation():
  # Pure-Python protobuf makes every tf.function trace 1.4x slower (measured on the zoo tests).
  from google.protobuf.internal import api_implementation
  assert api_implementation.Type() in ("upb", "cpp"), api_implementation.Type()
