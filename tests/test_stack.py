"""tfdp.stack: Keras 2 as tf.keras on every TensorFlow, chosen before TensorFlow is imported."""

import os
import subprocess
import sys

import pytest

from tfdp import stack
from tfdp.compat import tf_privacy

pytestmark = pytest.mark.newest_stack


def test_keras_2_is_chosen_only_where_keras_3_and_tf_keras_are_both_installed(monkeypatch):
  environ = {}
  origin = stack.default_keras_2(environ)
  if stack.keras_3_installed():
    assert (origin, environ) == ("tfdp", {stack.LEGACY_KERAS_VARIABLE: "1"})
  else:  # TF 2.15: tf.keras is Keras 2 already; setting the variable would ask for tf_keras.
    assert (origin, environ) == ("tensorflow", {})


def test_the_users_choice_is_kept():
  environ = {stack.LEGACY_KERAS_VARIABLE: "0"}
  assert stack.default_keras_2(environ) == "user"
  assert environ == {stack.LEGACY_KERAS_VARIABLE: "0"}


def test_keras_3_as_tf_keras_is_refused_with_the_way_out(monkeypatch):
  monkeypatch.setattr(stack, "keras_3_installed", lambda: True)
  with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS='0'.*unset it"):
    stack.require_keras_2({stack.LEGACY_KERAS_VARIABLE: "0"})
  stack.require_keras_2({stack.LEGACY_KERAS_VARIABLE: "1"})  # tf_keras is installed on both.


def test_this_process_runs_keras_2_and_says_which():
  assert stack.tf_keras_is_keras_2()
  line = stack.describe()
  assert line.startswith(f"TensorFlow {stack.version_of('tensorflow')}, Keras 2 as tf.keras")
  assert "TF Privacy 0.9.0" in line


@pytest.mark.parametrize("version,bodiless", [("2.15.1", False), ("2.16.1", True),
                                              ("2.21.0", True)])
def test_tf_privacy_is_a_plain_import_on_2_15_only(version, bodiless):
  assert tf_privacy.needs_bodiless_package(version) is bodiless


def test_versions_parse():
  assert stack.release("2.21.0") == (2, 21) and stack.major("3.15.1") == 3
  assert stack.release(None) == () and stack.major(None) == 0


@pytest.mark.skipif(not stack.keras_3_installed(), reason="Keras 3 comes with TensorFlow >= 2.16")
def test_keras_2_is_chosen_even_when_the_user_imported_keras_3_first():
  """`import keras` (Keras 3) imports TensorFlow, but tf.keras is resolved on first use: tfdp's
  choice still holds."""
  code = ("import keras; import tfdp; import tensorflow as tf; "
          "print(tf.keras.layers.Dense.__module__.split('.')[0], keras.__version__[0])")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        check=True, env={k: v for k, v in os.environ.items()
                                         if k != stack.LEGACY_KERAS_VARIABLE})
  assert done.stdout.split() == ["tf_keras", "3"]
