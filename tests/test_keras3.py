"""Keras 3 models (`import keras`) through make_private, checked as the Keras 2 path is: the fast
engine's clipped sum against brute force computed on the user's Keras 3 model itself, a private
fit with ε in History and the budget guard, the validator's refusals by name, and the export.

These run where Keras 3 is installed (TensorFlow >= 2.16, constraints-tf2.21.txt); TF 2.15 has no
Keras 3, and the module is skipped there.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp import stack
from tfdp.keras import keras3
from tfdp.keras import losses as losses_lib

pytestmark = [pytest.mark.newest_stack,
              pytest.mark.skipif(not stack.keras_3_installed(),
                                 reason="Keras 3 comes with TensorFlow >= 2.16")]

CLIP = 0.05  # Below every example's gradient norm here: the clip bites (checked).
MASK = np.array([1, 1, 0, 1, 1, 1], np.float32)  # One padding row, which must add nothing.


def _keras():
  import keras  # pylint: disable=import-outside-toplevel
  return keras


def mnist_convnet(num_classes=10, input_shape=(28, 28, 1)):
  """keras.io's "Simple MNIST convnet", written with `import keras` as keras.io writes it."""
  keras = _keras()
  layers = keras.layers
  return keras.Sequential([
      keras.Input(shape=input_shape),
      layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
      layers.MaxPooling2D(pool_size=(2, 2)),
      layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
      layers.MaxPooling2D(pool_size=(2, 2)),
      layers.Flatten(),
      layers.Dropout(0.5),
      layers.Dense(num_classes, activation="softmax"),
  ])


def residual_net():
  """A functional Keras 3 model: GroupNorm, a residual Add, global pooling, logits out."""
  keras = _keras()
  layers = keras.layers
  inputs = keras.Input((8, 8, 3))
  x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
  y = layers.GroupNormalization(groups=2)(x)
  y = layers.Conv2D(8, 3, padding="same")(y)
  x = layers.Activation("relu")(layers.Add()([x, y]))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, layers.Dense(3)(x))


def nested_net():
  """A functional Keras 3 model around a nested functional backbone and a nested Sequential
  built from an Input (Keras 2 numbers such models' calls from 1, Keras 3 from 0)."""
  keras = _keras()
  layers = keras.layers
  inner_inputs = keras.Input((6, 6, 2))
  backbone = keras.Model(inner_inputs, layers.Conv2D(4, 3, activation="tanh")(inner_inputs),
                         name="backbone")
  head = keras.Sequential([keras.Input((4, 4, 4)), layers.Flatten(), layers.Dense(3)], name="head")
  inputs = keras.Input((6, 6, 2))
  return keras.Model(inputs, head(backbone(inputs)))


def _data(n, shape, classes, seed):
  rng = np.random.default_rng(seed)
  return (rng.random((n, *shape)).astype(np.float32),
          rng.integers(0, classes, n).astype(np.int64))


def _brute_force_keras_3(model, loss_fn, images, labels, mask, clip):
  """Clipped sum from the user's own Keras 3 model: each example's gradient taken alone through
  Keras 3's layers, clipped to `clip` by global norm, summed; keyed by variable path."""
  total = {_path(v.path): np.zeros(v.shape, np.float64) for v in model.trainable_variables}
  for image, label, real in zip(images, labels, mask):
    if not real:
      continue
    with tf.GradientTape() as tape:
      loss = loss_fn(label[None], model(image[None], training=False))[0]
    grads = tape.gradient(loss, model.trainable_variables)
    norm = np.sqrt(sum(np.sum(np.square(g.numpy(), dtype=np.float64)) for g in grads))
    for variable, grad in zip(model.trainable_variables, grads):
      total[_path(variable.path)] += min(1.0, clip / norm) * grad.numpy()
  return total


def _private(model, loss="sparse_categorical_crossentropy", train_size=32, batch_size=8,
             **overrides):
  options = dict(optimizer="dp_sgd", learning_rate=0.1, l2_norm_clip=1.0, target_epsilon=3.0,
                 target_delta=1e-5, epochs=1, train_size=train_size, batch_size=batch_size)
  options.update(overrides)
  private = tfdp.keras.make_private(model, **options)
  private.compile(loss=loss, metrics=["accuracy"])
  return private


def _path(name: str) -> str:
  """'layer/variable' of a Keras 3 path ('sequential/conv2d/kernel') or a Keras 2 name
  ('conv2d/kernel:0'): the layer names are the twin's too."""
  return "/".join(name.split(":")[0].split("/")[-2:])


@pytest.mark.parametrize("build,shape,classes,loss", [
    (mnist_convnet, (28, 28, 1), 10, "sparse_categorical_crossentropy"),
    (residual_net, (8, 8, 3), 3, "keras3_logits_loss"),
    (nested_net, (6, 6, 2), 3, "keras3_logits_loss"),
])
def test_keras_3_model_takes_the_fast_engine_and_matches_brute_force(build, shape, classes, loss):
  keras = _keras()
  keras.utils.set_random_seed(0)
  model = build()
  if loss == "keras3_logits_loss":  # A Keras 3 Loss object, as its users write it.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  private = _private(model, loss=loss)
  engine = private._private_step[0].engine  # pylint: disable=protected-access
  assert engine.fallback_layers == []
  for layer in private.layers:  # Batched and one-at-a-time dropout masks differ.
    if isinstance(layer, tf.keras.layers.Dropout):
      layer.rate = 0.0
  x, y = _data(6, shape, classes, seed=1)
  x *= 3.0
  loss_fn = losses_lib.per_example_loss(keras3.keras_2_object(loss, "losses"))
  sums, _, _, norms = engine(loss_fn, tf.constant(x), tf.constant(y), tf.constant(MASK), CLIP)
  assert float(tf.reduce_min(tf.boolean_mask(norms, MASK > 0))) > CLIP  # The clip bites.
  keras_3_loss = (keras.losses.get(loss) if isinstance(loss, str) else
                  (lambda labels, outputs: loss.call(labels, outputs)))
  expected = _brute_force_keras_3(model, keras_3_loss, x, y, MASK, CLIP)
  got = {_path(v.name): s.numpy() for v, s in zip(private.trainable_variables, sums)}
  assert sorted(got) == sorted(expected)
  for path, want in expected.items():
    np.testing.assert_allclose(got[path], want, rtol=2e-4, atol=1e-6, err_msg=path)


def test_keras_3_fit_reports_epsilon_stops_at_the_budget_and_trains_the_users_model(tmp_path):
  keras = _keras()
  keras.utils.set_random_seed(0)
  model = mnist_convnet(num_classes=3, input_shape=(12, 12, 1))
  start = [w.copy() for w in model.get_weights()]
  private = _private(model, epochs=1)
  x, y = _data(32, (12, 12, 1), 3, seed=2)
  history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=8), epochs=3, verbose=0)
  assert private.max_privacy_steps is not None
  assert int(private.privacy_steps.numpy()) == private.max_privacy_steps  # Guard: no step past.
  assert 0 < history.history["epsilon"][-1] <= 3.0
  assert "loss" not in history.history  # Nothing computed from the private batches.
  trained = model.get_weights()
  assert any(not np.allclose(a, b) for a, b in zip(start, trained))
  for mine, twins in zip(trained, private.get_weights()):
    np.testing.assert_array_equal(mine, twins)  # The user's Keras 3 model holds the result.

  path = tfdp.export.export_saved_model(private, str(tmp_path / "served"),
                                        preprocess=lambda pixels: tf.cast(pixels, tf.float32) / 255,
                                        class_names=["a", "b", "c"])
  card = tfdp.export.read_model_card(path)
  assert card["epsilon"] == pytest.approx(private.privacy_ledger.epsilon())
  served = tf.saved_model.load(path)
  pixels = np.random.default_rng(0).integers(0, 255, (2, 12, 12, 1)).astype(np.uint8)
  np.testing.assert_allclose(  # The export serves the function the user's model computes.
      served.signatures["predict_pixels"](pixels=pixels)["probabilities"],
      np.asarray(model(pixels.astype(np.float32) / 255, training=False)), rtol=1e-5, atol=1e-6)
  assert os.path.isdir(path)


def test_keras_3_batchnorm_is_refused_by_name():
  keras = _keras()
  model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="stem"),
                            keras.layers.BatchNormalization(name="stem_bn"),
                            keras.layers.Flatten(), keras.layers.Dense(2)])
  refused = tfdp.keras.validate(model)
  assert [(v.path, v.layer_class) for v in refused] == [("stem_bn", "BatchNormalization")]
  with pytest.raises(tfdp.keras.PrivacyValidationError, match="stem_bn"):
    _private(model)
  fixed = tfdp.keras.fix(model)  # Its Keras 2 twin, BatchNorm swapped for GroupNorm.
  assert isinstance(fixed.get_layer("stem_bn"), tf.keras.layers.GroupNormalization)
  assert tfdp.keras.validate(fixed) == []


def test_keras_3_models_without_a_faithful_twin_are_refused_with_the_reason():
  keras = _keras()

  class Subclassed(keras.Model):
    def __init__(self):
      super().__init__()
      self.dense = keras.layers.Dense(2)

    def call(self, inputs):
      return self.dense(inputs)

  subclassed = Subclassed()
  subclassed(np.zeros((1, 4), np.float32))
  with pytest.raises(keras3.TwinError, match="subclassed"):
    _private(subclassed)
  assert tfdp.keras.validate(subclassed)[0].verdict == "refused"

  @keras.saving.register_keras_serializable(package="tfdp_tests")
  class Doubling(keras.layers.Layer):
    def call(self, inputs):
      return 2 * inputs

  custom = keras.Sequential([keras.Input((4,)), Doubling(name="double"), keras.layers.Dense(2)])
  with pytest.raises(keras3.TwinError, match="Doubling"):
    _private(custom)

  lora = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
  lora.layers[-1].enable_lora(2)
  with pytest.raises(keras3.TwinError, match="lora"):
    _private(lora)


def test_twin_config_drops_only_unset_keras_3_settings():
  spec = {"module": "keras.layers", "class_name": "Dense",
          "config": {"name": "d", "units": 2, "quantization_config": None}}
  assert "quantization_config" not in keras3.to_keras_2_config(spec)["config"]
  spec["config"]["quantization_config"] = {"mode": "int8"}
  with pytest.raises(keras3.TwinError, match="quantization_config"):
    keras3.to_keras_2_config(spec)
