"""Every dependency imports, at the pinned version (pip can resolve sets that fail at import)."""

import importlib
import importlib.metadata

import pytest

MODULES = ["tensorflow", "tensorflow_privacy", "dp_accounting", "keras_cv", "tensorflow_datasets",
           "tensorflow_metadata.proto.v0.schema_pb2", "absl.flags", "sklearn.datasets",
           "matplotlib", "numpy", "scipy", "kymatio", "kymatio.keras", "tfdp.train",
           "tfdp.priors.pretraining", "diffprivlib", "diffprivlib.models"]  # Not tfdp.pretrain too: two entry points' absl flags clash.

PINNED = {"tensorflow": "2.15.1", "tensorflow-privacy": "0.9.0", "dp-accounting": "0.4.3",
          "kymatio": "0.3.0", "diffprivlib": "0.6.5"}  # 0.6.6 needs NumPy 2, which TF 2.15 cannot use.


@pytest.mark.parametrize("module", MODULES)
def test_imports(module):
  importlib.import_module(module)


@pytest.mark.parametrize("distribution,version", sorted(PINNED.items()))
def test_pinned_versions(distribution, version):
  assert importlib.metadata.version(distribution) == version


def test_keras_is_keras_2():
  assert importlib.metadata.version("keras").startswith("2."), "TF Privacy 0.9.0 needs Keras 2"


def test_protobuf_is_the_compiled_implementation():
  # Pure-Python protobuf makes every tf.function trace 1.4x slower (measured on the zoo tests).
  from google.protobuf.internal import api_implementation
  assert api_implementation.Type() in ("upb", "cpp"), api_implementation.Type()
