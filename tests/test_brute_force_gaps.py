"""Clipping paths checked against one-example-at-a-time brute force (tests/dp_reference.py).

Each test compares an engine's (or a training path's) clipped sum with the sum of per-example
gradients computed alone and clipped by hand, at a clip norm chosen from the examples' own gradient
norms so that it bites for some examples and not for others (normalize, which rescales every
example, is checked with gamma near the gradients' norms instead), and checks that each example's
contribution, taken alone, is within its bound. Covered here: Dense's materialized-norm branch,
dilated Conv2D and Conv1D, L1 clipping by groups, augmult and normalize by groups, make_private
with the vectorized engine and with augmult, the grouped optimizers'
gradient_accumulation_steps, and WRN-40-4.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tests import dp_reference as ref
from tfdp import models
from tfdp import optimizers
from tfdp.dp import clipping
from tfdp.dp import groups as groups_lib
from tfdp.dp import randomness
from tfdp.dp.fast import conv as fast_conv
from tfdp.dp.fast import rules

K = 3  # Augmented copies per example (augmult).
RTOL, ATOL = 2e-4, 2e-5


# The reference: per-example gradients computed alone, scaled per group by hand.


def _example_gradients(model, rows, labels, augmult=1):
  """Per example, the mean over its `augmult` copies (example-major rows) of each copy's gradient,
  every copy's gradient computed alone: a list of var-shaped float64 arrays per example."""
  grads = []
  for i, label in enumerate(labels):
    copies = [ref.per_example_gradient(model, tf.constant(rows[i * augmult + k]),
                                       tf.constant(label)) for k in range(augmult)]
    grads.append([np.mean(np.stack(parts).astype(np.float64), axis=0) for parts in zip(*copies)])
  return grads


def _norm(arrays, norm):
  return ref.l1_norm(arrays) if norm == "l1" else ref.global_norm(arrays)


def _group_norms(grads, groups, norm="l2"):
  """[G] norms of one example's gradient restricted to each group's variables."""
  return np.array([_norm([g for g, k in zip(grads, groups) if k == group], norm)
                   for group in range(max(groups) + 1)])


def _group_bound(clip, groups, norm="l2"):
  count = max(groups) + 1
  return clip / count if norm == "l1" else clip / np.sqrt(count)


def _reference_sum(grads, mask, clip, groups, norm="l2", mode="clip", gamma=0.01):
  """sum over real examples of each group of g_i scaled by min(1, C_g / ||g_i,g||) (clip) or by
  C_g / (||g_i,g|| + gamma) (normalize), C_g = C / sqrt(G) in L2 and C / G in L1."""
  bound = _group_bound(clip, groups, norm)
  total = [np.zeros_like(g) for g in grads[0]]
  for example, real in zip(grads, mask):
    if not real:
      continue
    norms = _group_norms(example, groups, norm)
    factors = (np.minimum(1.0, bound / norms) if mode == "clip" else bound / (norms + gamma))
    total = [t + factors[k] * g for t, g, k in zip(total, example, groups)]
  return total


def _biting_clip(grads, mask, groups, norm="l2"):
  """A clip norm C whose group bound lies strictly inside the real examples' group norms, so it
  scales some (example, group) gradients down and leaves others whole."""
  norms = np.sort(np.concatenate([_group_norms(g, groups, norm) for g, m in zip(grads, mask) if m]))
  middle = len(norms) // 2
  bound = float(np.sqrt(norms[middle - 1] * norms[middle]))  # Between two neighbours.
  assert norms[middle - 1] < bound < norms[middle]
  count = max(groups) + 1
  return bound * count if norm == "l1" else bound * np.sqrt(count)


def _assert_bites_for_some_only(grads, mask, clip, groups, norm="l2"):
  bound = _group_bound(clip, groups, norm)
  norms = np.concatenate([_group_norms(g, groups, norm) for g, m in zip(grads, mask) if m])
  assert np.any(norms > bound * 1.01) and np.any(norms < bound * 0.99), (norms, bound)


def _assert_close(actual, expected, variables, rtol=RTOL, atol=ATOL):
  assert len(actual) == len(expected) == len(variables)
  for got, want, variable in zip(actual, expected, variables):
    np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol, err_msg=variable.name)


def _engine_sums(engine, rows, labels, mask, clip, augmult=1):
  sums, _, _, _ = engine(clipping.per_example_loss, tf.constant(rows),
                         tf.constant(np.repeat(labels, augmult)), tf.constant(mask, tf.float32),
                         clip)
  return [s.numpy().astype(np.float64) for s in sums]


def _assert_each_example_within_its_bounds(engine, rows, labels, mask, clip, groups, norm="l2",
                                           augmult=1):
  """The engine's sum over one real example alone (every other row masked out) has each group
  within C_g and the whole within C, in the clipping norm."""
  bound = _group_bound(clip, groups, norm)
  for i in np.flatnonzero(mask):
    alone = np.zeros(len(mask), np.float32)
    alone[i] = 1
    contribution = _engine_sums(engine, rows, labels, alone, clip, augmult)
    assert np.all(_group_norms(contribution, groups, norm) <= bound * (1 + 1e-5))
    assert _norm(contribution, norm) <= clip * (1 + 1e-5)
    assert _norm(contribution, norm) > 0  # The example is in the sum at all.


def _fast_case(model, images, labels, mask):
  """(groups, per-example gradients, a clip that bites for some examples only, fast engine)."""
  groups = _flat_groups(model)
  grads = _example_gradients(model, images, labels)
  clip = _biting_clip(grads, mask, groups)
  _assert_bites_for_some_only(grads, mask, clip, groups)
  return groups, grads, clip, clipping.make_engine("fast", model)


def _check_engine(engine, model, rows, labels, mask, clip, groups, grads, norm="l2", augmult=1,
                  mode="clip", gamma=0.01):
  """The engine's clipped sum against the reference, and each example's contribution bounded."""
  sums = _engine_sums(engine, rows, labels, mask, clip, augmult)
  expected = _reference_sum(grads, mask, clip, groups, norm, mode, gamma)
  _assert_close(sums, expected, model.trainable_variables)
  _assert_each_example_within_its_bounds(engine, rows, labels, mask, clip, groups, norm, augmult)


def _model_around(layer, input_shape, seed=0):
  """Input -> a ruled layer (so the tested layer's input depends on weights) -> tanh -> the
  tested layer -> tanh -> flatten -> dense logits."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(input_shape)
  if len(input_shape) == 3:
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="pre")(inputs)
  else:
    x = tf.keras.layers.Dense(2, name="pre")(inputs)
  x = tf.keras.layers.Activation("tanh")(x)
  x = layer(x)
  x = tf.keras.layers.Activation("tanh")(x)
  x = tf.keras.layers.Flatten()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="head")(x))


def _flat_groups(model):
  return groups_lib.variable_groups(model, None)


# 1. Dense's materialized-norm branch.


def test_dense_materialized_norm_branch_matches_brute_force(monkeypatch):
  """Tokens T with T^2 > d_in * d_out: DenseRule forms each example's [d_in, d_out] kernel
  gradient (not the token Gram matrices) and takes its norm; the branch is observed as that
  [B, d_in, d_out] tensor reaching the row-norm helper."""
  tokens, d_in, d_out = 6, 2, 3
  assert tokens * tokens > d_in * d_out
  layer = tf.keras.layers.Dense(d_out, name="tested")
  model = _model_around(layer, (tokens, 5))
  images, labels = ref.batch(size=5, input_shape=(tokens, 5), scale=2.0)
  mask = np.array([1, 1, 0, 1, 1], np.float32)

  seen = []
  row_norms = rules._row_squared_norms  # pylint: disable=protected-access

  def spy(per_example):
    seen.append(tuple(per_example.shape))
    return row_norms(per_example)

  monkeypatch.setattr(rules, "_row_squared_norms", spy)
  groups, grads, clip, engine = _fast_case(model, images, labels, mask)
  assert not engine.fallback_layers
  _check_engine(engine, model, images, labels, mask, clip, groups, grads)
  assert (len(images), d_in, d_out) in seen  # The tested layer took the materialized branch.


# 2. Conv2D with dilation > 1 (stride 1), on both norm paths of the Conv2D rule.

DILATED = {
    # name: (padding, dilation, filters, input size, path of Conv2DRule.squared_norms)
    "same_materialized": ("same", 2, 3, 7, "materialized"),
    "valid_materialized": ("valid", 2, 3, 9, "materialized"),
    "same_materialized_2x3": ("same", (2, 3), 3, 8, "materialized"),
    "same_ghost": ("same", 2, 8, 4, "ghost"),
    "valid_ghost": ("valid", 2, 8, 8, "ghost"),
}


@pytest.mark.parametrize("name", sorted(DILATED))
def test_dilated_conv2d_matches_brute_force(name, monkeypatch):
  padding, dilation, filters, size, path = DILATED[name]
  layer = tf.keras.layers.Conv2D(filters, 3, padding=padding, dilation_rate=dilation,
                                 name="tested")
  model = _model_around(layer, (size, size, 2))
  images, labels = ref.batch(size=4, input_shape=(size, size, 2), scale=2.0)
  mask = np.array([1, 1, 0, 1], np.float32)

  taken = []
  ghost = fast_conv._ghost_kernel_squared_norms  # pylint: disable=protected-access
  rule_class = fast_conv.Conv2DRule
  # Both materialized paths (kept parts, and the copies of augmult) end in _kernel_squared_norms_of.
  materialized = rule_class._kernel_squared_norms_of  # pylint: disable=protected-access
  monkeypatch.setattr(fast_conv, "_ghost_kernel_squared_norms",
                      lambda lay, a, dz, *copies: taken.append((lay.name, "ghost"))
                      or ghost(lay, a, dz, *copies))
  monkeypatch.setattr(rule_class, "_kernel_squared_norms_of",
                      lambda self, lay, grads: taken.append((lay.name, "materialized"))
                      or materialized(self, lay, grads))

  groups, grads, clip, engine = _fast_case(model, images, labels, mask)
  assert not engine.fallback_layers
  assert isinstance(rules.rule_for(layer), fast_conv.Conv2DRule)
  _check_engine(engine, model, images, labels, mask, clip, groups, grads)
  assert ("tested", path) in taken

  # The rule's own per-example gradients (used with augmult) and norms of the dilated layer.
  a, dz = ref.layer_input_and_output_gradient(model, layer, images, labels)
  rule = rules.rule_for(layer)
  per_example = rule.per_example_gradients(layer, a, dz)
  squared = rule.squared_norms(layer, a, dz)
  positions = [i for i, v in enumerate(model.trainable_variables)
               if any(v is w for w in layer.trainable_weights)]
  for i, example in enumerate(grads):
    for k, position in enumerate(positions):
      np.testing.assert_allclose(per_example[k][i], example[position], rtol=RTOL, atol=2e-6)
      np.testing.assert_allclose(squared[k][i], np.sum(np.square(example[position])),
                                 rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("padding", ["same", "valid", "causal"])
def test_dilated_conv1d_matches_brute_force(padding):
  """Conv1D's rule (tfdp.dp.fast.conv_nd) with dilation 2, causal padding included."""
  layer = tf.keras.layers.Conv1D(3, 3, padding=padding, dilation_rate=2, name="tested")
  model = _model_around(layer, (9, 3))
  images, labels = ref.batch(size=4, input_shape=(9, 3), scale=2.0)
  mask = np.array([1, 0, 1, 1], np.float32)
  groups, grads, clip, engine = _fast_case(model, images, labels, mask)
  assert not engine.fallback_layers and layer in engine.fast_layers
  _check_engine(engine, model, images, labels, mask, clip, groups, grads)


# 3. L1 clipping by groups (the vectorized engine: the fast one computes L2 norms only).


@pytest.mark.parametrize("clip_groups", [2, "layer"])
def test_l1_clipping_by_groups_matches_brute_force(clip_groups):
  model = ref.small_conv_model()
  images, labels = ref.batch(size=5)
  mask = np.array([1, 1, 0, 1, 1], np.float32)
  groups = groups_lib.variable_groups(model, clip_groups)
  assert max(groups) > 0
  grads = _example_gradients(model, images, labels)
  clip = _biting_clip(grads, mask, groups, "l1")
  _assert_bites_for_some_only(grads, mask, clip, groups, "l1")
  engine = clipping.make_engine("vectorized", model, clip_groups, norm="l1")
  _check_engine(engine, model, images, labels, mask, clip, groups, grads, norm="l1")


# 4. augmult and normalize, by groups, on both engines.


def _copies(images, seed=5):
  """K distinct 'augmented' copies of each example, example-major: [B * K, ...]."""
  rows = np.repeat(images, K, axis=0)
  return (rows + np.random.default_rng(seed).normal(size=rows.shape)).astype(np.float32)


@pytest.mark.parametrize("engine_name", sorted(clipping.CLIPPING_ENGINES))
@pytest.mark.parametrize("clip_groups", [2, "layer"])
def test_augmult_by_groups_matches_brute_force(engine_name, clip_groups):
  """Each example's gradient is the mean over its K copies, and each group of that mean is
  clipped to C / sqrt(G)."""
  model = ref.small_conv_model()
  images, labels = ref.batch(size=4)
  rows, mask = _copies(images), np.array([1, 0, 1, 1], np.float32)
  groups = groups_lib.variable_groups(model, clip_groups)
  grads = _example_gradients(model, rows, labels, augmult=K)
  clip = _biting_clip(grads, mask, groups)
  _assert_bites_for_some_only(grads, mask, clip, groups)
  engine = clipping.make_engine(engine_name, model, clip_groups, augmult=K)
  _check_engine(engine, model, rows, labels, mask, clip, groups, grads, augmult=K)


@pytest.mark.parametrize("engine_name", sorted(clipping.CLIPPING_ENGINES))
@pytest.mark.parametrize("clip_groups", [2, "layer"])
def test_normalize_by_groups_matches_brute_force(engine_name, clip_groups):
  """Each group of each example's gradient is scaled by C_g / (||g_i,g|| + gamma); gamma is set
  at the median group norm so that it changes every factor noticeably."""
  model = ref.small_conv_model()
  images, labels = ref.batch(size=5)
  mask = np.array([1, 1, 0, 1, 1], np.float32)
  groups = groups_lib.variable_groups(model, clip_groups)
  grads = _example_gradients(model, images, labels)
  gamma = float(np.median(np.concatenate([_group_norms(g, groups) for g in grads])))
  clip = 0.5
  scaling = groups_lib.Scaling("normalize", gamma)
  engine = clipping.make_engine(engine_name, model, clip_groups, scaling)
  _check_engine(engine, model, images, labels, mask, clip, groups, grads, mode="normalize",
                gamma=gamma)


# 5. make_private with the vectorized engine, and with augmult.


def _augment(images):
  """A deterministic 'augmentation' that differs between an example's copies (copy c of every
  example is row r with r % K == c, rows being example-major): x * (1 + c / 2) + c / 10."""
  copy = tf.cast(tf.range(tf.shape(images)[0]) % K, images.dtype)[:, None, None, None]
  return images * (1.0 + 0.5 * copy) + 0.1 * copy


@pytest.mark.parametrize("engine_name, augmult, clip_groups",
                         [("vectorized", 1, None), ("fast", K, 2)],
                         ids=["vectorized", "fast_augmult_groups"])
def test_make_private_fit_step_matches_brute_force(engine_name, augmult, clip_groups):
  images, labels = ref.batch(size=12)
  drawn = randomness.ReproducibleCoins(5).inclusion(0, 12, 0.5).astype(np.float32)
  assert drawn.sum() > 2  # Several chunks of 2 examples.
  rows = np.repeat(images, augmult, axis=0)
  if augmult > 1:
    rows = _augment(tf.constant(rows)).numpy()
  reference = ref.small_conv_model()  # The same seed: the weights before the step.
  groups = groups_lib.variable_groups(reference, clip_groups)
  grads = _example_gradients(reference, rows, labels, augmult=augmult)
  clip = _biting_clip(grads, drawn, groups)
  _assert_bites_for_some_only(grads, drawn, clip, groups)

  private = tfdp.keras.make_private(
      ref.small_conv_model(), optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=clip,
      target_delta=1e-3, epochs=2, train_size=12, batch_size=6, noise_multiplier=1e-9,
      clip_groups=clip_groups, engine=engine_name, augmult=augmult,
      augment=_augment if augmult > 1 else None)
  private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  engine = private._private_step[0].engine  # pylint: disable=protected-access
  assert isinstance(engine, clipping.VectorizedEngine) == (engine_name == "vectorized")
  before = [v.numpy() for v in private.trainable_variables]
  dataset = tfdp.data.poisson_dataset(images, labels, batch_size=6, physical_batch_size=2, seed=5)
  private.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0,
              callbacks=[tfdp.keras.PrivacyBudget(pld=False)])  # PLD has no bound at σ ≈ 0.

  expected = _reference_sum(grads, drawn, clip, groups)
  # σ C = 1e-9 C of noise on the sum (C ≈ 7 here): far below atol. At σ = 1e-6 it was 7e-6 per
  # coordinate, and one coordinate in 72 passed atol about one run in three.
  _assert_close([(old - v.numpy()) * 6 for old, v in zip(before, private.trainable_variables)],
                expected, private.trainable_variables, rtol=2e-3, atol=1e-5)
  # The step's own engine, one drawn example at a time, weights as before the step.
  for variable, old in zip(private.trainable_variables, before):
    variable.assign(old)
  _assert_each_example_within_its_bounds(engine, rows, labels, drawn, clip, groups,
                                         augmult=augmult)


# 6. The grouped optimizers' gradient_accumulation_steps.


class _Weights(tf.keras.callbacks.Callback):
  """The weights after every batch."""

  def on_train_batch_end(self, batch, logs=None):
    self.after.append([w.copy() for w in self.model.get_weights()])

  def on_train_begin(self, logs=None):
    self.after = []


def test_grouped_optimizer_gradient_accumulation_matches_brute_force():
  """With gradient_accumulation_steps = 3 and σ = 0, the weights stay put for two batches of 4,
  and after the third move by lr times the mean over the three batches of each batch's clipped
  mean: the brute-force clipped sum over all 12 examples divided by 12."""
  steps, size, clip_groups = 3, 4, "layer"
  images, labels = ref.batch(size=steps * size)
  reference = ref.small_conv_model()
  groups = groups_lib.variable_groups(reference, clip_groups)
  mask = np.ones(len(images))
  grads = _example_gradients(reference, images, labels)
  clip = _biting_clip(grads, mask, groups)
  _assert_bites_for_some_only(grads, mask, clip, groups)

  model = ref.small_conv_model()
  before = [v.numpy() for v in model.trainable_variables]
  optimizer = optimizers.GroupedDPKerasSGDOptimizer(
      l2_norm_clip=clip, noise_multiplier=0.0, gradient_accumulation_steps=steps,
      learning_rate=1.0, clip_groups=clip_groups)
  model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.NONE))
  weights = _Weights()
  model.fit(images, labels, batch_size=size, epochs=1, shuffle=False, verbose=0,
            callbacks=[weights])
  assert len(weights.after) == steps
  for accumulating in weights.after[:-1]:
    for now, old in zip(accumulating, before):
      np.testing.assert_array_equal(now, old)
  expected = _reference_sum(grads, mask, clip, groups)
  _assert_close([(old - new) * len(images) for old, new in zip(before, weights.after[-1])],
                expected, model.trainable_variables, rtol=2e-3, atol=1e-5)

  # One example alone through the same optimizer's private step: within C_g per group, C whole.
  bound = _group_bound(clip, groups)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.NONE)
  reference_model = ref.small_conv_model()
  for i in range(len(images)):
    pairs = optimizer._compute_gradients(  # pylint: disable=protected-access
        lambda i=i: loss(labels[i:i + 1], reference_model(images[i:i + 1], training=True)),
        reference_model.trainable_variables)
    contribution = [g.numpy() for g, _ in pairs]
    assert np.all(_group_norms(contribution, groups) <= bound * (1 + 1e-5))
    assert ref.global_norm(contribution) <= clip * (1 + 1e-5)


# 7. WRN-40-4.


def test_wrn40_4_fast_clipped_sum_matches_brute_force():
  """WRN-40-4 on 8x8 images (its three stages leave 2x2 maps), swish as in tests/test_zoo.py:
  at a ReLU input within float32 rounding of zero batched and single-example evaluation can
  disagree on the sign."""
  tf.keras.utils.set_random_seed(0)
  model = models.build_model("wrn40_4", 10, (8, 8, 3), activation="swish")
  assert model.name == "wrn40_4"
  images, labels = ref.batch(size=3, input_shape=(8, 8, 3), num_classes=10, scale=1.0)
  mask = np.ones(3, np.float32)
  groups, grads, clip, engine = _fast_case(model, images, labels, mask)
  assert not engine.fallback_layers
  sums = _engine_sums(engine, images, labels, mask, clip)
  _assert_close(sums, _reference_sum(grads, mask, clip, groups), model.trainable_variables,
                rtol=1e-3, atol=1e-5)
  _assert_each_example_within_its_bounds(engine, images, labels, mask, clip, groups)
