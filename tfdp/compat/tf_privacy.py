"""TF Privacy's modules, on every TensorFlow tfdp runs on: the one place tfdp imports TF Privacy.

TF Privacy 0.9.0 is its last release. Its top-level package imports its estimator modules, and
`tensorflow_estimator` no longer imports under TensorFlow 2.16 and later ("cannot import name
'estimator_training'"), so `import tensorflow_privacy` fails there, though every module tfdp uses
(the DP queries, the Keras optimizers, the accountant's statement) works. On TensorFlow >= 2.16
this module registers the package `tensorflow_privacy` with its path and no body before the
first import of a submodule: the submodules' own `__init__` files are empty, so nothing of the
estimator is ever loaded. On 2.15 it is a plain import.

Use: `from tfdp.compat.tf_privacy import gaussian_query`; tests use the same names.
"""

import importlib
import importlib.util
import sys
import types

from tfdp import stack

PACKAGE = "tensorflow_privacy"
FIRST_RELEASE_WITHOUT_ESTIMATOR = (2, 16)


def needs_bodiless_package(tensorflow_version=None) -> bool:
  """Whether TF Privacy's top-level package cannot be imported with this TensorFlow."""
  version = tensorflow_version or stack.version_of("tensorflow")
  return stack.release(version) >= FIRST_RELEASE_WITHOUT_ESTIMATOR


def register_package(modules=sys.modules) -> types.ModuleType:
  """`tensorflow_privacy` in `modules`: imported, or registered with its path and no body."""
  if PACKAGE in modules:
    return modules[PACKAGE]
  if not needs_bodiless_package():
    return importlib.import_module(PACKAGE)
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None:
    raise ImportError("tensorflow-privacy is not installed: pip install tensorflow-privacy==0.9.0")
  package = importlib.util.module_from_spec(spec)  # Not executed: its __init__ imports estimator.
  modules[PACKAGE] = package
  return package


register_package()

# pylint: disable=wrong-import-position
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib  # noqa: E402
from tensorflow_privacy.privacy.dp_query import dp_query  # noqa: E402
from tensorflow_privacy.privacy.dp_query import discrete_gaussian_utils  # noqa: E402
from tensorflow_privacy.privacy.dp_query import gaussian_query  # noqa: E402
from tensorflow_privacy.privacy.dp_query import nested_query  # noqa: E402
from tensorflow_privacy.privacy.dp_query import normalized_query  # noqa: E402
from tensorflow_privacy.privacy.dp_query import quantile_adaptive_clip_sum_query  # noqa: E402
from tensorflow_privacy.privacy.dp_query import quantile_estimator_query  # noqa: E402
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras  # noqa: E402

__all__ = ["compute_dp_sgd_privacy_lib", "dp_query", "discrete_gaussian_utils", "gaussian_query",
           "nested_query", "normalized_query", "quantile_adaptive_clip_sum_query",
           "quantile_estimator_query", "dp_optimizer_keras"]
