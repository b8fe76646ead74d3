"""Per-group noise (--layer_noise) with --clip_groups: each group is clipped to C / sqrt(G), once.

The optimizer and its nested noise query are built through the run's own path (tfdp.training.planning), and
the step's clipped sum is checked against one-example-at-a-time brute force.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config as config_lib
from tfdp.dp import groups as groups_lib
from tfdp import models
from tfdp.training import planning
from tfdp.training import steps

CLIP = 0.3  # Below every group's gradient norm here, so every group is clipped.
NUM_TRAIN = 100


def _config(clip_groups):
  return config_lib.Config(
      privacy=config_lib.PrivacyConfig(noise_multiplier=1.0, l2_norm_clip=CLIP,
                                       clip_groups=clip_groups, layer_noise="depth_decay"),
      run=config_lib.RunConfig(batch_size=10, epochs=1))


def _built(clip_groups, engine):
  """(model, optimizer, step) of a cnn on 6x6x1 inputs, through planning as a run builds them."""
  config = _config(clip_groups)
  tf.keras.utils.set_random_seed(0)
  model = models.build_model("cnn", 3, (6, 6, 1))
  ledger = planning.plan_privacy(config, NUM_TRAIN)
  optimizer = planning.build_optimizer(config, ledger, model, steps_per_epoch=10)
  step = steps.TrainStep(model, optimizer, tf.identity, private=True, expected_batch_size=10,
                         engine=engine, clip_groups=clip_groups)
  return model, optimizer, step


@pytest.mark.parametrize("clip_groups", [2, "layer"])
def test_optimizer_reports_the_whole_gradient_bound(clip_groups):
  _, optimizer, _ = _built(clip_groups, "fast")
  assert optimizer.clip_norm() == pytest.approx(CLIP, rel=1e-6)
  assert optimizer.l2_norm_clip == pytest.approx(CLIP, rel=1e-6)


@pytest.mark.parametrize("clip_groups,engine", [(2, "fast"), ("layer", "vectorized")])
def test_each_group_is_clipped_to_c_over_sqrt_g(clip_groups, engine):
  model, _, step = _built(clip_groups, engine)
  images, labels = ref.batch(size=5, input_shape=(6, 6, 1), num_classes=3)
  mask = np.array([1, 1, 0, 1, 1], np.float32)
  groups = groups_lib.variable_groups(model, clip_groups)
  for i in np.flatnonzero(mask):  # The case is what it says: every group norm exceeds its bound.
    grads = ref.per_example_gradient(model, images[i], labels[i])
    for g in range(max(groups) + 1):
      norm = ref.global_norm([x for x, group in zip(grads, groups) if group == g])
      assert norm > CLIP / np.sqrt(max(groups) + 1)
  sums, _, _, count = step.clipped_sum([(images, labels, mask)])
  expected = ref.grouped_clipped_sum(model, images, labels, mask, CLIP, groups)
  assert count == 4
  for actual, wanted in zip(sums, expected):
    np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-4, atol=1e-6)
