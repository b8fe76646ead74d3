"""Random-process images: no file read, deterministic by seed, the requested shape, varied."""

import builtins
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from tfdp.data import random_processes


def _refuse_files(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f"a random-process generator opened a file: {args[:1]}")
  for owner, name in ((builtins, "open"), (io, "open"), (os, "open"), (tf.io.gfile, "GFile")):
    monkeypatch.setattr(owner, name, refuse)


@pytest.mark.parametrize("source", random_processes.sources())
def test_generator_reads_no_file_and_gives_varied_images_of_the_requested_shape(
    monkeypatch, source):
  _refuse_files(monkeypatch)
  images = random_processes.generate(source, num_images=10, image_size=16, seed=3,
                                     block_size=8).numpy()
  assert images.shape == (10, 16, 16, 3) and images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  per_image_std = images.std(axis=(1, 2, 3))
  assert per_image_std.min() > 0.02, per_image_std  # Not constant images.
  assert np.abs(images[0] - images[1]).mean() > 0.01  # Not one image repeated.


@pytest.mark.parametrize("source", sorted(random_processes.GENERATORS))
def test_same_seed_same_images_other_seed_other_images(source):
  first = random_processes.generate(source, 4, 16, seed=1, block_size=4).numpy()
  again = random_processes.generate(source, 4, 16, seed=1, block_size=4).numpy()
  other = random_processes.generate(source, 4, 16, seed=2, block_size=4).numpy()
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).mean() > 0.01


def test_stream_is_the_generated_sequence_and_resumes_at_a_block():
  expected = random_processes.generate("mix", 12, 16, seed=5, block_size=4).numpy()
  stream = random_processes.dataset("mix", 16, seed=5, block_size=4)
  # Graph and eager execution may round differently; the draws themselves are the same.
  np.testing.assert_allclose(np.stack(list(stream.take(12).as_numpy_iterator())), expected,
                             atol=1e-4)
  resumed = random_processes.dataset("mix", 16, seed=5, start_block=2, block_size=4)
  np.testing.assert_allclose(np.stack(list(resumed.take(4).as_numpy_iterator())), expected[8:],
                             atol=1e-4)


def test_mix_cycles_through_every_generator():
  mixed = random_processes.generate("mix", 12, 16, seed=0, block_size=4).numpy()
  for block, name in enumerate(sorted(random_processes.GENERATORS)):
    alone = random_processes.GENERATORS[name](tf.constant([0, block]), 4, 16).numpy()
    np.testing.assert_allclose(mixed[4 * block:4 * block + 4], np.clip(alone, 0, 1), atol=1e-6)


def test_grayscale_and_bad_arguments():
  gray = random_processes.generate("dead_leaves", 2, 16, seed=0, channels=1, block_size=2)
  assert gray.shape == (2, 16, 16, 1)
  with pytest.raises(ValueError, match="valid sources"):
    random_processes.generate("photos", 2, 16, seed=0)
  with pytest.raises(ValueError, match="image_size"):
    random_processes.generate("spectral", 2, 4, seed=0)
  with pytest.raises(ValueError, match="channels"):
    random_processes.generate("spectral", 2, 16, seed=0, channels=2)


def test_wavelet_marginal_matching_gives_detail_coefficients_laplace_quantiles():
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(1, 32, 32, 3)).astype(np.float32))  # Gaussian marginals.
  matched = random_processes._match_wavelet_marginals(images).numpy()
  # The horizontal Haar detail of each channel, sorted, is the Laplace quantile grid (up to scale).
  detail = (matched[0, 0::2, 0::2] + matched[0, 0::2, 1::2] - matched[0, 1::2, 0::2]
            - matched[0, 1::2, 1::2]) / 2  # [16, 16, 3]
  p = (np.arange(256) + 0.5) / 256 - 0.5
  quantiles = -np.sign(p) * np.log1p(-2 * np.abs(p))
  for channel in range(3):
    got = np.sort(detail[..., channel].ravel())
    np.testing.assert_allclose(got / got.std(), quantiles / quantiles.std(), atol=1e-3)
  kurtosis = np.mean(quantiles**4) / np.mean(quantiles**2) ** 2
  assert kurtosis > 4.5  # Heavy-tailed, where the Gaussian input's is 3.
