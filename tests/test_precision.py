"""Mixed precision (tfdp.precision): bfloat16 layers, a float32 private step, the bound after
rounding.

The privacy argument is in tfdp/precision.py: nothing is rounded to bfloat16 after the clip. These
tests check its three claims: that rounding after the clip would break the bound (so the design
matters), that the engines' sums under the policy are the brute-force clipped sums of the same
bfloat16 model, and that removing any one example moves the sum by at most C on inputs where
every example is clipped and the batch's sum is many times C.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfdp import models
from tfdp import precision
from tfdp import optimizers
from tfdp.dp import clipping
from tfdp.dp import groups as groups_lib
from tfdp.training import steps
from tests import dp_reference as ref

BF16 = precision.MIXED_BFLOAT16
F16 = precision.MIXED_FLOAT16
LOSS = precision.float32_loss(clipping.per_example_loss)


def _in_bfloat16(build):
  with precision.policy(BF16):
    return build()


def _in(policy, build):
  with precision.policy(policy):
    return build()


def _resnet():
  tf.keras.utils.set_random_seed(0)
  return models.build_model("resnet20", 3, (8, 8, 3))


MODELS = {"small_conv": ref.small_conv_model, "resnet20_ws_groupnorm": _resnet}


def test_rounding_a_clipped_gradient_to_bfloat16_can_leave_it_above_the_clip():
  # bfloat16 keeps 8 significant bits: in [2^-5, 2^-4) its spacing is 2^-12. A coordinate 0.6 of
  # a spacing above a grid point rounds up, so every coordinate grows by 0.4 spacing.
  clipped = np.full(1000, (1 + 0.6 * 2.0**-7) * 2.0**-5)
  clip = float(np.linalg.norm(clipped))  # Clipped to norm C exactly.
  rounded = tf.cast(tf.cast(clipped, tf.bfloat16), tf.float64).numpy()
  assert np.linalg.norm(rounded) > clip * (1 + 2e-3)


def test_the_policy_is_set_inside_the_block_only():
  with precision.policy(BF16):
    layer = tf.keras.layers.Dense(2)
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"


@pytest.mark.parametrize("engine_name", ["fast", "vectorized"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_bfloat16_clipped_sum_is_the_brute_force_sum_of_the_same_model(engine_name, model_name):
  model = _in_bfloat16(MODELS[model_name])
  shape = model.input_shape[1:]
  images, labels = ref.batch(size=6, input_shape=shape, num_classes=3)
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
  grads = [ref.per_example_gradient(model, tf.constant(x), tf.constant(y), LOSS)
           for x, y in zip(images, labels)]
  norms = sorted(ref.global_norm(g) for g, m in zip(grads, mask) if m)
  clip = float(np.sqrt(norms[1] * norms[2]))  # Clips some examples and not others.
  engine = clipping.make_engine(engine_name, model)
  sums = engine(LOSS, tf.constant(images), tf.constant(labels), tf.constant(mask), clip)[0]
  expected = ref.clipped_sum(model, images, labels, mask, clip, LOSS)
  assert all(s.dtype == tf.float32 for s in sums)
  # The batch and one example alone may take different bfloat16 kernels: both are the model's
  # gradient to bfloat16 accuracy, not to float32 accuracy.
  got, want = np.concatenate([np.ravel(s) for s in sums]), np.concatenate(
      [np.ravel(e) for e in expected])
  assert np.linalg.norm(got - want) <= 0.02 * np.linalg.norm(want)


@pytest.mark.newest_stack
@pytest.mark.parametrize("policy", [BF16, F16])
@pytest.mark.parametrize("engine_name", ["fast", "vectorized"])
def test_removing_any_one_example_moves_the_16_bit_sum_by_at_most_the_clip(engine_name, policy):
  model = _in(policy, _resnet)
  # Twelve near-copies of one large image with one label: their gradients point the same way, so
  # the sum is nearly 12 C, and a bfloat16 rounding of it would move it by about 12 C / 2^9.
  base, _ = ref.batch(size=1, input_shape=(8, 8, 3), scale=30.0)
  jitter, _ = ref.batch(size=12, input_shape=(8, 8, 3), scale=0.3, seed=2)
  images, labels = (base + jitter).astype(np.float32), np.zeros(12, np.int64)
  clip = 1e-3  # Far below every example's norm: each contributes C.
  engine = clipping.make_engine(engine_name, model)
  run = tf.function(lambda mask: engine(LOSS, tf.constant(images), tf.constant(labels), mask,
                                        clip))
  full_sums, _, _, norms = run(tf.ones(12))
  assert float(tf.reduce_min(norms)) > 100 * clip
  full = np.concatenate([np.ravel(s.numpy()).astype(np.float64) for s in full_sums])
  assert np.linalg.norm(full) > 10 * clip
  moved = []
  for j in range(12):
    mask = np.ones(12, np.float32)
    mask[j] = 0
    without = np.concatenate([np.ravel(s.numpy()).astype(np.float64)
                              for s in run(tf.constant(mask))[0]])
    moved.append(np.linalg.norm(full - without))
  # Each example moves the sum by C (it is clipped), never more than float32 rounding above it.
  np.testing.assert_allclose(moved, clip, rtol=1e-4)
  assert max(moved) <= clip * (1 + 1e-4)


@pytest.mark.parametrize("features, allowed", [
    (["avx2", "fma", "avx512f", "avx512_bf16"], True),
    (["avx2", "fma", "amx_tile"], True),
    (["avx2", "fma"], False),
])
def test_bfloat16_is_refused_on_a_cpu_without_bfloat16_arithmetic(features, allowed):
  if tf.config.list_physical_devices("GPU"):
    pytest.skip("on a GPU machine the CPU's features do not decide")
  if allowed:
    precision.check(BF16, features)
  else:
    with pytest.raises(ValueError, match="no bfloat16 arithmetic.*AVX512_BF16"):
      precision.check(BF16, features)


def test_float16_is_refused_on_a_cpu_and_unknown_names_with_the_reason():
  with pytest.raises(ValueError, match="mixed_float16 is refused on a CPU.*emulate"):
    precision.check(F16, ["avx2", "avx512_bf16", "amx_tile"], gpus=False)
  precision.check(F16, [], gpus=True)
  precision.check(BF16, [], gpus=True)
  with pytest.raises(ValueError, match="precision"):
    precision.check("bfloat16")
  precision.check(precision.FLOAT32)


@pytest.mark.parametrize("policy, scale, allowed", [
    (F16, 1.0, True), (F16, 2.0**12, True), (F16, 3.0, False), (F16, 0.5, False),
    (F16, float("inf"), False), (F16, 2.0**24, True), (F16, 2.0**25, False),
    (BF16, 1.0, True), (BF16, 256.0, False),
    (precision.FLOAT32, 2.0, False)])
def test_a_loss_scale_is_a_power_of_two_and_for_float16_only(policy, scale, allowed):
  if allowed:
    precision.check_loss_scale(policy, scale)
  else:
    with pytest.raises(ValueError, match="loss_scale"):
      precision.check_loss_scale(policy, scale)


def _dp_step(model, clip, engine, scaling=None, loss_scale=1.0):
  optimizer = optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=clip, noise_multiplier=0.0)
  return steps.TrainStep(model, optimizer, tf.identity, private=True, engine=engine,
                         scaling=scaling, loss_scale=loss_scale)


def _flat(arrays):
  return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])


@pytest.mark.newest_stack
@pytest.mark.parametrize("engine_name", ["fast", "vectorized"])
@pytest.mark.parametrize("mode", ["clip", "normalize"])
def test_float16_with_a_loss_scale_gives_the_brute_force_sum_of_the_unscaled_losses(
    engine_name, mode):
  """The step differentiates 2^10 times each loss and clips at 2^10 C; its sum must be the
  brute-force sum of the same float16 model's unscaled gradients, clipped at C."""
  model = _in(F16, ref.small_conv_model)
  images, labels = ref.batch(size=6, input_shape=model.input_shape[1:], num_classes=3)
  mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
  grads = [ref.per_example_gradient(model, tf.constant(x), tf.constant(y), LOSS)
           for x, y in zip(images, labels)]
  norms = sorted(ref.global_norm(g) for g, m in zip(grads, mask) if m)
  clip = float(np.sqrt(norms[1] * norms[2]))  # Clips some examples and not others.
  # A gamma near the norms, so that a gamma left unscaled would change the factors by far more
  # than the tolerance.
  scaling = groups_lib.Scaling(mode, gamma=norms[2])
  factor = {"clip": lambda g: min(1.0, clip / ref.global_norm(g)),
            "normalize": lambda g: clip / (ref.global_norm(g) + norms[2])}[mode]
  expected = ref.scaled_sum(model, images, labels, mask, factor, LOSS)
  step = _dp_step(model, clip, engine_name, scaling, loss_scale=2.0**10)
  sums, _, loss_sum, _, count = step.accumulate([(images, labels, mask)])
  got, want = _flat(sums), _flat(expected)
  assert np.linalg.norm(got - want) <= 0.01 * np.linalg.norm(want)
  losses = LOSS(labels, model(images))
  assert loss_sum == pytest.approx(float(tf.reduce_sum(losses * mask)), rel=1e-2)
  assert count == 5


@pytest.mark.parametrize("engine_name", ["fast", "vectorized"])
def test_an_example_that_overflows_float16_adds_nothing_and_changes_no_other(engine_name):
  model = _in(F16, ref.small_conv_model)
  images, labels = ref.batch(size=6, input_shape=model.input_shape[1:], num_classes=3)
  images[3] *= 3e4  # Its activations pass float16's 65504: inf, then NaN.
  engine = clipping.make_engine(engine_name, model)
  run = lambda mask: engine(LOSS, tf.constant(images), tf.constant(labels), tf.constant(mask), 1.0)
  with_it, _, _, norms = run(np.ones(6, np.float32))
  without_it = run(np.array([1, 1, 1, 0, 1, 1], np.float32))[0]
  assert not np.isfinite(norms.numpy()[3]) and np.all(np.isfinite(np.delete(norms.numpy(), 3)))
  assert np.all(np.isfinite(_flat(with_it)))
  np.testing.assert_allclose(_flat(with_it), _flat(without_it), rtol=1e-6, atol=1e-7)


def test_a_non_private_float16_chunk_that_overflows_is_skipped():
  model = _in(F16, ref.small_conv_model)
  images, labels = ref.batch(size=6, input_shape=model.input_shape[1:], num_classes=3)
  step = steps.TrainStep(model, optimizers.build_optimizer("sgd", 0.1), tf.identity,
                         private=False, loss_scale=2.0**4)
  before = _flat(v.numpy() for v in model.trainable_variables)
  overflowing = images.copy()
  overflowing[0] *= 3e4
  step([(overflowing, labels, np.ones(6, np.float32))])
  np.testing.assert_array_equal(_flat(v.numpy() for v in model.trainable_variables), before)
  step([(images, labels, np.ones(6, np.float32))])
  after = _flat(v.numpy() for v in model.trainable_variables)
  assert np.all(np.isfinite(after)) and not np.array_equal(after, before)


@pytest.mark.newest_stack
def test_the_quickstart_in_bfloat16_trains_and_serves_float32_or_is_refused_with_the_reason(
    tmp_path):
  from tests import test_train_cli as cli
  from tfdp import cpu
  # pylint: disable=protected-access
  code, output = cli._run(*cli._quick_flags(tmp_path / "run", f"--precision={BF16}"))
  if not set(cpu.cpu_features()) & set(precision.BFLOAT16_FEATURES):  # The AVX2-only machine.
    assert code != 0 and "no bfloat16 arithmetic" in output, output[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists()
    return
  assert code == 0, output[-3000:]
  metrics = cli._metrics(tmp_path / "run")
  assert metrics["precision"] == BF16 and metrics["epsilon"] <= 3.0
  assert metrics["test_accuracy"] > 0.7, metrics  # Chance is 0.1; float32 measures about 0.9.
  cli._assert_export_reproduces_accuracy(tmp_path / "run" / "saved_model",
                                         metrics["test_accuracy"])


@pytest.mark.parametrize("flags, reason", [
    (["--precision=mixed_float16"], "mixed_float16 is refused on a CPU"),
    (["--loss_scale=256"], "applies to the mixed_float16 policy only"),
])
def test_tfdp_train_refuses_float16_on_a_cpu_and_a_loss_scale_without_it(tmp_path, flags, reason):
  from tests import test_train_cli as cli
  if tf.config.list_physical_devices("GPU"):
    pytest.skip("a GPU machine runs mixed_float16")
  # pylint: disable=protected-access
  code, output = cli._run(*cli._quick_flags(tmp_path / "run", *flags))
  assert code != 0 and reason in output, output[-2000:]
  assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_scatternet_front_stays_float32_and_its_head_follows_the_policy():
  from tfdp.models import scatter
  model = _in_bfloat16(lambda: models.build_model("scatter_cnn", 10, (32, 32, 3)))
  front, head = scatter.split(model)
  assert front.compute_dtype == "float32"  # Complex transforms have no bfloat16 kernels.
  assert head.get_layer("conv1").compute_dtype == "bfloat16"


@pytest.mark.newest_stack
def test_a_keras_users_mixed_bfloat16_model_trains_through_make_private():
  """As Keras's mixed precision guide writes it: the global policy, a float32 softmax output."""
  import tfdp  # pylint: disable=import-outside-toplevel
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = load_digits(return_X_y=True)
  x, y = (x.reshape(-1, 8, 8, 1) / 16.0).astype("float32"), y.astype("int64")
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(16, 3, activation="relu", input_shape=(8, 8, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(10),
        tf.keras.layers.Activation("softmax", dtype="float32"),
    ])
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  private = tfdp.keras.make_private(model, optimizer="dp_sgd", learning_rate=0.5,
                                    l2_norm_clip=1.0, target_epsilon=3.0, target_delta=1e-5,
                                    epochs=3, train_size=len(x), batch_size=128)
  private.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=128), epochs=3, verbose=0)
  assert history.history["epsilon"][-1] <= 3.0
  assert private.evaluate(x, y, verbose=0)[1] > 0.4  # Chance is 0.1; one run measured 0.80.


@pytest.mark.newest_stack
@pytest.mark.parametrize("loss_scale", [1.0, 2.0**8])
def test_a_keras_users_mixed_float16_model_trains_through_make_private(loss_scale):
  """As Keras's mixed precision guide writes it for GPUs: the global policy, a float32 softmax
  output. Keras's compile would wrap the optimizer in its dynamic loss-scale optimizer; the
  private step must not take that path."""
  import tfdp  # pylint: disable=import-outside-toplevel
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = load_digits(return_X_y=True)
  x, y = (x.reshape(-1, 8, 8, 1) / 16.0).astype("float32"), y.astype("int64")
  with precision.policy(F16):
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(16, 3, activation="relu", input_shape=(8, 8, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(10),
        tf.keras.layers.Activation("softmax", dtype="float32"),
    ])
  private = tfdp.keras.make_private(model, optimizer="dp_sgd", learning_rate=0.5,
                                    l2_norm_clip=1.0, target_epsilon=3.0, target_delta=1e-5,
                                    epochs=3, train_size=len(x), batch_size=128,
                                    loss_scale=loss_scale)
  private.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  assert not isinstance(private.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=128), epochs=3, verbose=0)
  assert history.history["epsilon"][-1] <= 3.0
  assert private.evaluate(x, y, verbose=0)[1] > 0.4  # Chance is 0.1.


def test_make_private_refuses_keras_dynamic_loss_scale_optimizer_with_the_reason():
  import tfdp  # pylint: disable=import-outside-toplevel
  with precision.policy(F16):
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
  wrapped = tf.keras.mixed_precision.LossScaleOptimizer(
      optimizers.build_optimizer("dp_sgd", 0.1, l2_norm_clip=1.0, noise_multiplier=1.0))
  with pytest.raises(ValueError, match="LossScaleOptimizer is refused: its dynamic loss scale"):
    tfdp.keras.make_private(model, optimizer=wrapped, l2_norm_clip=1.0, noise_multiplier=1.0,
                            target_delta=1e-5, epochs=1, train_size=100, batch_size=10)


def test_make_private_refuses_a_loss_scale_for_a_float32_model():
  import tfdp  # pylint: disable=import-outside-toplevel
  model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
  with pytest.raises(ValueError, match="loss_scale=256 applies to the mixed_float16 policy only"):
    tfdp.keras.make_private(model, optimizer="dp_sgd", l2_norm_clip=1.0, target_epsilon=3.0,
                            target_delta=1e-5, epochs=1, train_size=100, batch_size=10,
                            loss_scale=256.0)
