"""Grouped-clipping subclasses of TF Privacy's DP Keras optimizers, on the `model.fit` path."""

import numpy as np
import pytest
import tensorflow as tf
from tfdp.compat.tf_privacy import dp_optimizer_keras

from tests import dp_reference as ref
from tfdp.dp import groups as groups_lib
from tfdp import optimizers

_NONE = tf.keras.losses.Reduction.NONE
CLIP = 0.5  # Small enough that the random batch's gradients are clipped (checked below).


def _per_example_loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=_NONE)


def _fit_one_step(clip_groups, jit_compile, noise_multiplier=0.0, num_microbatches=None):
  """Weights before and after one fit step of SGD lr 1 on a batch of 6, and the model."""
  model = ref.small_conv_model()
  before = [v.numpy() for v in model.trainable_variables]
  optimizer = optimizers.GroupedDPKerasSGDOptimizer(
      l2_norm_clip=CLIP, noise_multiplier=noise_multiplier, num_microbatches=num_microbatches,
      learning_rate=1.0, clip_groups=clip_groups)
  model.compile(optimizer=optimizer, loss=_per_example_loss(), jit_compile=jit_compile)
  images, labels = ref.batch(size=6)
  model.fit(images, labels, batch_size=6, epochs=1, shuffle=False, verbose=0)
  after = [v.numpy() for v in model.trainable_variables]
  return model, before, after


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("clip_groups", [None, 2, "layer"])
def test_fit_step_is_the_grouped_clipped_mean_of_brute_force(clip_groups, jit_compile):
  model, before, after = _fit_one_step(clip_groups, jit_compile)
  reference = ref.small_conv_model()  # Same seed, the weights before the step.
  images, labels = ref.batch(size=6)
  groups = groups_lib.variable_groups(reference, clip_groups)
  expected = ref.grouped_clipped_sum(reference, images, labels, np.ones(6), CLIP, groups)
  unclipped = ref.grouped_clipped_sum(reference, images, labels, np.ones(6), 1e9, groups)
  assert not np.allclose(expected[0], unclipped[0])  # The clip bites: the test can fail.
  for variable, old, new, total in zip(model.trainable_variables, before, after, expected):
    np.testing.assert_allclose(old - new, total / 6, rtol=2e-3, atol=1e-6, err_msg=variable.name)


def test_groups_by_variable_name_match_the_engines_groups_by_layer():
  model = ref.small_conv_model()
  for clip_groups in (None, 1, 2, 3, "layer"):
    by_name = optimizers.grouped.variable_groups_by_name(model.trainable_variables, clip_groups)
    assert by_name == groups_lib.variable_groups(model, clip_groups), clip_groups


def test_one_example_per_microbatch_is_clipped_as_tf_privacy_clips_it():
  model, before, after = _fit_one_step(None, False, num_microbatches=6)
  tf_privacy_model = ref.small_conv_model()
  images, labels = ref.batch(size=6)
  tf_privacy_model.compile(
      optimizer=dp_optimizer_keras.DPKerasSGDOptimizer(
          l2_norm_clip=CLIP, noise_multiplier=0.0, num_microbatches=6, learning_rate=1.0),
      loss=_per_example_loss())
  tf_privacy_model.fit(images, labels, batch_size=6, epochs=1, shuffle=False, verbose=0)
  for ours, theirs in zip(model.trainable_variables, tf_privacy_model.trainable_variables):
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)
  assert not np.allclose(before[0], after[0])


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_microbatches_of_several_examples_are_refused(jit_compile):
  """Two examples per microbatch: removing one moves the clipped mean by up to 2C, not C."""
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                     match="num_microbatches must equal the batch size|Input to reshape"):
    _fit_one_step(None, jit_compile, num_microbatches=3)


def _noise_draws(optimizer, calls=4):
  """What `calls` private steps add to a zero-gradient sum, in units of the clipped sum."""
  variable = tf.Variable(tf.zeros([40, 20]))
  step = tf.function(lambda: optimizer._compute_gradients(  # pylint: disable=protected-access
      lambda: 0.0 * tf.reduce_sum(variable, axis=1), [variable])[0][0])
  return np.stack([step().numpy() for _ in range(calls)]) * 40  # M = 40 microbatches.


def test_noise_std_is_sigma_times_clip_and_fresh_at_every_step():
  optimizer = optimizers.GroupedDPKerasAdamOptimizer(l2_norm_clip=0.7, noise_multiplier=2.0,
                                                      clip_groups="layer", learning_rate=1e-3)
  draws = _noise_draws(optimizer)
  assert np.std(draws) == pytest.approx(2.0 * 0.7, rel=0.05)  # 3,200 draws: 1.3% std error.
  assert abs(np.mean(draws)) < 0.1
  assert not np.allclose(draws[0], draws[1])


def test_the_public_seed_does_not_fix_the_noise():
  draws = []
  for _ in range(2):
    tf.keras.utils.set_random_seed(0)
    draws.append(_noise_draws(optimizers.GroupedDPKerasSGDOptimizer(
        l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.1), calls=1))
  assert not np.allclose(draws[0], draws[1])


def test_checkpoints_hold_no_noise_generator(tmp_path):
  model, _, _ = _fit_one_step(2, False, noise_multiplier=1.0)
  path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))
  reader = tf.train.load_checkpoint(path)
  shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
  assert any("optimizer" in name for name in shapes)
  # Philox state is int64 [3]; the only int64 the optimizer saves is its step count.
  assert not [name for name in shapes if dtypes[name] == tf.int64 and shapes[name] == [3]]
  config = model.optimizer.get_config()
  assert config["clip_groups"] == 2 and "global_state" not in config
  rebuilt = optimizers.GroupedDPKerasSGDOptimizer.from_config(config)
  assert rebuilt.noise_multiplier == pytest.approx(1.0) and rebuilt.l2_norm_clip == CLIP


@pytest.mark.parametrize("optimizer_class, parent", [
    (optimizers.GroupedDPKerasSGDOptimizer, dp_optimizer_keras.GenericDPSGDOptimizer),
    (optimizers.GroupedDPKerasAdamOptimizer, dp_optimizer_keras.GenericDPAdamOptimizer),
    (optimizers.GroupedDPKerasAdagradOptimizer, dp_optimizer_keras.GenericDPAdagradOptimizer),
    (optimizers.GroupedDPKerasRMSpropOptimizer, tf.keras.optimizers.legacy.RMSprop)])
def test_every_grouped_optimizer_is_tf_privacys_and_trains(optimizer_class, parent):
  assert isinstance(optimizer_class(l2_norm_clip=1.0, noise_multiplier=1.0), parent)
  model = ref.small_conv_model()
  model.compile(optimizer=optimizer_class(l2_norm_clip=1.0, noise_multiplier=0.5,
                                          clip_groups="layer"), loss=_per_example_loss())
  images, labels = ref.batch(size=12)
  history = model.fit(images, labels, batch_size=6, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])


def test_bad_settings_are_refused_with_the_reason():
  with pytest.raises(ValueError, match="clip_groups"):
    optimizers.GroupedDPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, clip_groups=0)
  with pytest.raises(ValueError, match="l2_norm_clip"):
    optimizers.GroupedDPKerasSGDOptimizer(l2_norm_clip=0.0, noise_multiplier=1.0)
  model = ref.small_conv_model()
  model.compile(optimizer=optimizers.GroupedDPKerasSGDOptimizer(
      l2_norm_clip=1.0, noise_multiplier=1.0), loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True))
  images, labels = ref.batch(size=6)
  with pytest.raises(ValueError, match="one loss per example"):
    model.fit(images, labels, batch_size=6, epochs=1, verbose=0)
  model.compile(optimizer=optimizers.GroupedDPKerasSGDOptimizer(
      l2_norm_clip=1.0, noise_multiplier=1.0, clip_groups=4), loss=_per_example_loss())
  with pytest.raises(ValueError, match="clip_groups"):  # 3 layers with parameters.
    model.fit(images, labels, batch_size=6, epochs=1, verbose=0)
