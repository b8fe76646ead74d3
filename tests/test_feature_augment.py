"""Cached-feature augmentation: each copy is a view of its own example, translated; the copies'
mean is clipped as one, so one example still moves the clipped sum by at most C."""

import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config
from tfdp.data import feature_augment
from tfdp.dp import groups as groups_lib
from tfdp import optimizers
from tfdp.training import loop as training
from tfdp.training import steps

POLICY = feature_augment.POLICIES["scatter_flip_shift"]
K = 3  # Copies per example.


def _candidates(example_views, max_shift):
  """Every row the policy may draw from one example's [V, h, w, c] views."""
  padded = np.pad(example_views, [(0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)],
                  mode="symmetric")
  height, width = example_views.shape[1:3]
  offsets = range(2 * max_shift + 1)
  return [padded[view, top:top + height, left:left + width]
          for view, top, left in itertools.product(range(len(example_views)), offsets, offsets)]


def _drawn_from(row, example_views, max_shift):
  """Indices of the candidates of `example_views` that `row` equals."""
  return [i for i, candidate in enumerate(_candidates(example_views, max_shift))
          if np.array_equal(candidate, row)]


def _views(size=4, shape=(6, 6, 2), seed=3):
  """[B, V, h, w, c] distinct random 'features' per example and view."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(size, len(POLICY.views), *shape)).astype(np.float32)


def test_each_copy_is_a_view_of_its_own_example_translated_within_the_bound():
  views = _views()
  rows = POLICY.make_train_preprocess()(groups_lib.repeat_rows(tf.constant(views), K)).numpy()
  assert rows.shape == (4 * K, 6, 6, 2)
  for r, row in enumerate(rows):
    assert _drawn_from(row, views[r // K], POLICY.max_shift), r
    for other in range(4):
      if other != r // K:
        assert not _drawn_from(row, views[other], POLICY.max_shift), (r, other)


def test_draws_cover_every_view_and_offset():
  views = np.repeat(_views(size=1), 400, axis=0)
  rows = POLICY.make_train_preprocess()(tf.constant(views)).numpy()
  drawn = {tuple(_drawn_from(row, views[0], POLICY.max_shift)) for row in rows}
  assert {i for indices in drawn for i in indices} == set(range(len(_candidates(views[0], 1))))


def test_flip_view_is_the_mirrored_image_and_identity_comes_first():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  identity, flip = POLICY.view_images(images)
  np.testing.assert_array_equal(identity, images)
  np.testing.assert_array_equal(flip[:, :, 0], images[:, :, -1])
  features = np.stack([identity, flip], axis=1)
  np.testing.assert_array_equal(feature_augment.identity_features(features, POLICY), images)
  with pytest.raises(ValueError, match="identity"):
    feature_augment.Policy(views=("flip", "identity"), max_shift=0)


def _recording(preprocess, recorded):
  def record(features):
    rows = preprocess(features)
    recorded.assign(rows)
    return rows
  return record


@pytest.mark.newest_stack
def test_train_step_clips_the_mean_of_the_drawn_copies_of_each_example():
  """Through TrainStep with the policy: the clipped sum is the brute-force mean of each example's
  drawn copies (per-example gradients one row at a time), clipped, summed."""
  model = ref.small_conv_model()
  views, (_, labels) = _views(), ref.batch(size=4)
  mask = np.array([1, 1, 0, 1], np.float32)
  recorded = tf.Variable(tf.zeros([0]), shape=tf.TensorShape(None), trainable=False)
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=0.05, noise_multiplier=0.0)
  step = steps.TrainStep(model, optimizer, _recording(POLICY.make_train_preprocess(), recorded),
                         private=True, augmult=K)
  total, _, _, _, count = step.accumulate([(views, labels, mask)])
  rows = recorded.numpy()
  assert rows.shape == (4 * K, 6, 6, 2) and count == 3
  wanted = [np.zeros(v.shape) for v in model.trainable_variables]
  for i in np.flatnonzero(mask):
    assert all(_drawn_from(rows[i * K + k], views[i], 1) for k in range(K))
    grads = [ref.per_example_gradient(model, rows[i * K + k], labels[i]) for k in range(K)]
    mean = [sum(parts) / K for parts in zip(*grads)]
    assert ref.global_norm(mean) > 0.05  # The clip binds.
    wanted = [w + min(1.0, 0.05 / ref.global_norm(mean)) * m for w, m in zip(wanted, mean)]
  for actual, expected in zip(total, wanted):
    np.testing.assert_allclose(actual.numpy(), expected, rtol=2e-4, atol=1e-6)


def _digits_run(tmp_path, augment, augmult=1, model="scatter_linear", name="run", epochs=4):
  return config.Config(
      data=config.DataConfig(dataset="digits", train_examples=512, augment=augment,
                             augmult=augmult),
      model=config.ModelConfig(name=model),
      privacy=config.PrivacyConfig(epsilon=3.0, delta=1e-3, l2_norm_clip=0.1),
      optimizer=config.OptimizerConfig(name="dp_sgd", learning_rate=2.0, momentum=0.9),
      run=config.RunConfig(batch_size=128, epochs=epochs, output_dir=str(tmp_path / name),
                           export=False))


@pytest.mark.newest_stack
def test_a_run_caches_each_view_and_records_the_policy(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  metrics = training.train_and_evaluate(_digits_run(tmp_path, "scatter_flip_shift", augmult=2))
  assert capsys.readouterr().out.count("Computing scattering features of 512 images") == 2
  assert len(list((tmp_path / "cache").iterdir())) == 3  # Two training views and the test set.
  assert metrics["augment"] == "scatter_flip_shift" and metrics["augmult"] == 2
  # Chance is 0.1. Four epochs, not two: with two, six runs gave 0.29 to 0.41 (the noise is secure,
  # so each run differs); with four, 0.43 to 0.54.
  assert metrics["epsilon"] <= 3.0 and metrics["test_accuracy"] > 0.3


@pytest.mark.parametrize("augment,augmult,model,match", [
    ("flip_crop", 1, "scatter_cnn", "cannot vary per step"),
    ("none", 2, "scatter_cnn", "identical copies"),
    ("scatter_flip", 1, "cnn", "trains on images"),
])
def test_mismatched_augmentation_is_refused_before_training(tmp_path, augment, augmult, model,
                                                            match):
  with pytest.raises(ValueError, match=match):
    training.prepare(_digits_run(tmp_path, augment, augmult, model))


def test_an_unknown_policy_is_refused_by_name():
  with pytest.raises(ValueError, match="scatter_flip_shift"):
    config.DataConfig(augment="scatter_rotate")
  assert dataclasses.replace(config.DataConfig(), augment="scatter_flip").augment == "scatter_flip"
