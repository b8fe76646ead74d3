"""Automatic clipping (--clipping_mode=normalize) against brute force; its sensitivity is C."""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config
from tfdp.dp import clipping
from tfdp.dp import groups

NORMALIZE = groups.Scaling(mode="normalize", gamma=0.01)


def _sum(engine, model, images, labels, mask, clip, scaling=NORMALIZE):
  sums, *_ = clipping.make_engine(engine, model, None, scaling)(
      clipping.per_example_loss, tf.constant(images), tf.constant(labels), tf.constant(mask), clip)
  return [s.numpy() for s in sums]


@pytest.mark.parametrize("engine", sorted(clipping.CLIPPING_ENGINES))
@pytest.mark.parametrize("clip", [0.05, 100.0])  # Normalize rescales every example either way.
def test_normalized_sum_equals_brute_force(engine, clip):
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
  expected = ref.normalized_sum(model, images, labels, mask, clip, 0.01)
  for actual, wanted in zip(_sum(engine, model, images, labels, mask, clip), expected):
    np.testing.assert_allclose(actual, wanted, rtol=2e-4, atol=1e-5)


def test_normalize_differs_from_clip_for_small_gradients():
  model = ref.small_conv_model()
  images, labels = ref.batch()
  mask = np.ones(len(images), np.float32)
  clipped = _sum("fast", model, images, labels, mask, 100.0, groups.Scaling())
  normalized = _sum("fast", model, images, labels, mask, 100.0)
  assert ref.global_norm([a - b for a, b in zip(clipped, normalized)]) > 1.0


def test_removing_one_example_moves_the_sum_by_less_than_c():
  model = ref.small_conv_model()
  images, labels = ref.batch(scale=10.0)
  mask = np.ones(len(images), np.float32)
  base = _sum("fast", model, images, labels, mask, 0.3)
  for i in range(len(images)):
    removed = mask.copy()
    removed[i] = 0
    moved = ref.global_norm([a - b for a, b in zip(base, _sum("fast", model, images, labels,
                                                                removed, 0.3))])
    assert moved < 0.3 * (1 + 1e-6)


@pytest.mark.parametrize("kwargs,message", [(dict(clipping_mode="auto"), "clipping_mode"),
                                            (dict(clipping_mode="normalize",
                                                  normalize_gamma=0.0), "gamma")])
def test_bad_settings_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config.PrivacyConfig(**kwargs)
