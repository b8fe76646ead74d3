"""Imported by pytest before any test module: tfdp first, so that TensorFlow starts with the oneDNN
setting a user of tfdp gets (tfdp.cpu), whichever module imports TensorFlow first."""

import tfdp  # noqa: F401  pylint: disable=unused-import
