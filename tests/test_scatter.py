"""ScatterNet models: a frozen scattering front, the paper's heads, cached features, fast clipping."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config
from tfdp.data import feature_cache
from tfdp.dp import clipping
from tfdp import models
from tfdp.models import scatter
from tfdp.training import loop as training

# (input shape, scattering features, parameters of scatter_linear, of scatter_cnn) for 10
# classes: the paper's counts (Tramèr & Boneh 2021, Table 9: 155K, 187K; 40K, 33K).
SHAPES = [((32, 32, 3), (8, 8, 243), 155_530, 187_210),
          ((28, 28, 1), (7, 7, 81), 39_700, 33_066)]


@pytest.mark.parametrize("shape, features, linear, cnn", SHAPES, ids=["rgb32", "gray28"])
def test_feature_shapes_and_parameter_counts(shape, features, linear, cnn):
  for name, parameters in (("scatter_linear", linear), ("scatter_cnn", cnn)):
    model = models.build_model(name, 10, shape)
    front, head = scatter.split(model)
    images = tf.random.stateless_uniform((2,) + shape, [0, 1])
    assert front(images).shape == (2,) + features
    assert model(images).shape == (2, 10)
    assert not front.weights  # Nothing to learn, nothing fitted to data.
    assert models.count_params(model) == models.count_params(head) == parameters


def test_width_multiplies_every_channel_of_the_cnn_head():
  model = models.build_model("scatter_cnn", 10, (32, 32, 3), width=2)
  conv1, conv2, logits = 243 * 9 * 128 + 128, 128 * 9 * 128 + 128, 128 * 4 * 4 * 10 + 10
  assert models.count_params(model) == conv1 + conv2 + logits
  gray = models.build_model("scatter_cnn", 10, (28, 28, 1), width=2)
  assert gray.get_layer("head").get_layer("dense").units == 64
  for width in (0, 1.5, True):
    with pytest.raises(ValueError, match="width must be a positive int"):
      models.build_model("scatter_cnn", 10, (32, 32, 3), width=width)


@pytest.mark.newest_stack  # kymatio's scattering on the newest TensorFlow too.
def test_scattering_depends_on_each_image_alone_and_is_not_trivial():
  front = scatter.Scattering()
  images = tf.random.stateless_uniform((3, 16, 16, 3), [0, 2])
  alone = front(images[:1]).numpy()
  together = front(images).numpy()
  np.testing.assert_allclose(together[:1], alone, rtol=1e-5, atol=1e-6)
  assert together.std() > 0 and not np.allclose(together[0], together[1])
  with pytest.raises(ValueError, match="divisible by 4"):
    scatter.Scattering()(tf.zeros((1, 10, 12, 1)))


@pytest.mark.newest_stack
def test_fast_engine_covers_the_head_and_matches_brute_force():
  model = models.build_model("scatter_cnn", 3, (16, 16, 3))
  _, head = scatter.split(model)
  engine = clipping.make_engine("fast", head)
  assert not engine.fallback_layers
  images, labels = ref.batch(size=4, input_shape=head.input_shape[1:], num_classes=3)
  mask = np.array([1, 1, 0, 1], np.float32)
  fast, *_ = engine(clipping.per_example_loss, tf.constant(images), tf.constant(labels),
                    tf.constant(mask), 0.1)
  expected = ref.clipped_sum(head, images, labels, mask, 0.1)
  for variable, actual, wanted in zip(head.trainable_variables, fast, expected):
    np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-3, atol=1e-6,
                               err_msg=variable.name)


def _digits_run(tmp_path, name="run", epochs=2, **run):
  return config.Config(
      # 512 examples, not 256: at q = 1/4 the noise leaves six runs in six between 0.53 and
      # 0.66 test accuracy; at q = 1/2 half of them fell under 0.3.
      data=config.DataConfig(dataset="digits", train_examples=512),
      model=config.ModelConfig(name="scatter_linear"),
      privacy=config.PrivacyConfig(epsilon=3.0, delta=1e-3, l2_norm_clip=0.1),
      optimizer=config.OptimizerConfig(name="dp_sgd", learning_rate=2.0, momentum=0.9),
      run=config.RunConfig(batch_size=128, epochs=epochs, output_dir=str(tmp_path / name),
                           **run))


def test_training_uses_cached_features_and_leaves_the_front_unchanged(tmp_path, monkeypatch,
                                                                      capsys):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  metrics = training.train_and_evaluate(_digits_run(tmp_path, export=False))
  assert "Computing scattering features of 512 images" in capsys.readouterr().out
  assert metrics["epsilon"] <= 3.0 and metrics["test_accuracy"] > 0.3  # Chance is 0.1.
  assert metrics["augment"] == "none"
  assert len(list((tmp_path / "cache").iterdir())) == 2  # Train and test features.
  training.train_and_evaluate(_digits_run(tmp_path, name="again", export=False))
  assert "from the cache" in capsys.readouterr().out


def test_export_serves_pixels_through_the_front_and_the_statistics(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  from tfdp import data
  run = _digits_run(tmp_path, epochs=1, export_dir=str(tmp_path / "export"))
  run = dataclasses.replace(run, model=config.ModelConfig(
      name="scatter_linear", options=(("normalization", "statistics"),)))
  metrics = training.train_and_evaluate(run)
  assert metrics["feature_statistics"]["released"]
  card = json.loads((tmp_path / "export" / "model_card.json").read_text())
  assert card["feature_statistics"] == metrics["feature_statistics"]
  assert "feature_statistics" in card["covered_fields"]
  dataset = data.load_dataset("digits")
  serve = tf.saved_model.load(metrics["saved_model"]).signatures["predict_pixels"]
  outputs = serve(pixels=tf.constant(dataset.test_images))
  accuracy = np.mean(outputs["classes"].numpy() == dataset.test_labels)
  assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_augmentation_is_refused_for_cached_features(tmp_path):
  run = _digits_run(tmp_path)
  run = config.Config(data=config.DataConfig(dataset="digits", train_examples=256,
                                             augment="flip_crop"),
                      model=run.model, privacy=run.privacy, optimizer=run.optimizer, run=run.run)
  with pytest.raises(ValueError, match="augment"):
    training.prepare(run)


def test_cache_key_changes_with_the_images_and_the_transform():
  images = np.zeros((2, 8, 8, 1), np.uint8)
  key = feature_cache.cache_key(images, scatter.Scattering(), [0.5, 0.25])
  changed = images.copy()
  changed[1, 3, 3, 0] = 1
  assert feature_cache.cache_key(changed, scatter.Scattering(), [0.5, 0.25]) != key
  assert feature_cache.cache_key(images, scatter.Scattering(angles=4), [0.5, 0.25]) != key
  assert feature_cache.cache_key(images, scatter.Scattering(), [0.4, 0.25]) != key
  assert feature_cache.cache_key(images, scatter.Scattering(), [0.5, 0.25]) == key


def test_mnist_flagfile_runs_on_a_folder_of_pngs(tmp_path):
  from absl import flags
  from PIL import Image
  from tfdp import data
  from tfdp import train
  digits = data.load_dataset("digits")
  for split, images, labels in (("train", digits.train_images[:200], digits.train_labels[:200]),
                                ("test", digits.test_images[:60], digits.test_labels[:60])):
    for index, (image, label) in enumerate(zip(images, labels)):
      folder = tmp_path / "pngs" / split / str(label)
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image[..., 0]).resize((28, 28)).save(folder / f"{index}.png")
  flagfile = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags",
                          "mnist_scatter_linear_eps3.flags")
  flags.FLAGS(["tfdp.train", f"--flagfile={flagfile}",
               "--dataset=folder", f"--data_dir={tmp_path / 'pngs'}", "--batch_size=64",
               "--epochs=1", "--delta=1e-3", "--noexport", f"--output_dir={tmp_path / 'run'}"])
  try:
    run = train.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  metrics = training.train_and_evaluate(run)
  assert metrics["model"] == "scatter_linear" and metrics["epsilon"] <= 3.0
  assert metrics["train_examples"] == 200 and metrics["test_examples"] == 60
