"""Export for TF Serving: encoded-image and pixel signatures, model card, versions, and the CLIs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfdp import config as config_lib
from tfdp import data
from tfdp.training import loop as training

pytestmark = pytest.mark.newest_stack  # Also run on the newest TensorFlow (setup.cfg).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A short DP run on digits with its export (the module shares it: training is the slow part)."""
  base = tmp_path_factory.mktemp("export")
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=3.0),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="dp_sgd", learning_rate=0.5, momentum=0.9),
      run=config_lib.RunConfig(batch_size=128, epochs=2, output_dir=str(base / "run"),
                               export_dir=str(base / "served")))
  metrics = training.train_and_evaluate(config)
  return base, metrics


def _cli(module, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _in_process_probabilities(base, pixels):
  """What the trained model says about pixels, computed without the export."""
  dataset = data.load_dataset("digits")
  loaded = tf.saved_model.load(str(base / "run" / "saved_model"))
  preprocess = data.make_preprocess(dataset.mean, dataset.std, "none", training=False)
  return tf.nn.softmax(loaded.model(preprocess(pixels), training=False)).numpy()


def test_versioned_layout_and_both_signatures_agree_with_the_model(run):
  base, _ = run
  version = base / "served" / "1"
  assert (version / "saved_model.pb").exists() and (base / "served" / "model_card.json").exists()
  loaded = tf.saved_model.load(str(version))
  assert set(loaded.signatures) == {"serving_default", "predict_pixels"}
  images = data.load_dataset("digits").test_images[:16]
  png = [tf.io.encode_png(image).numpy() for image in images]
  jpeg = [tf.io.encode_jpeg(tf.image.grayscale_to_rgb(tf.constant(image)), quality=95).numpy()
          for image in images]
  by_pixels = loaded.signatures["predict_pixels"](pixels=tf.constant(images))
  by_png = loaded.signatures["serving_default"](image_bytes=tf.constant(png))
  by_jpeg = loaded.signatures["serving_default"](image_bytes=tf.constant(jpeg))
  expected = _in_process_probabilities(base, images)
  np.testing.assert_allclose(by_pixels["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(by_png["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
  decoded = np.stack([tf.io.decode_image(j, channels=1).numpy() for j in jpeg])  # Lossy: decode.
  np.testing.assert_allclose(by_jpeg["probabilities"].numpy(),
                             _in_process_probabilities(base, decoded), rtol=1e-5, atol=1e-6)
  assert by_png["classes"].numpy().tolist() == expected.argmax(axis=1).tolist()
  assert by_png["class_names"].shape == (16, 10)
  big = tf.io.encode_png(tf.image.resize(images[:1], [32, 32]).numpy().astype(np.uint8)[0])
  assert loaded.signatures["serving_default"](
      image_bytes=tf.constant([big.numpy()]))["probabilities"].shape == (1, 10)


def test_export_holds_weights_only(run, tmp_path):
  base, _ = run
  names = [name for name, _ in tf.train.list_variables(
      str(base / "served" / "1" / "variables" / "variables"))]
  assert not [n for n in names if "optimizer" in n.lower() or "slot" in n.lower()], names
  from tfdp import export
  from tfdp import models
  fresh = models.build_model("linear", 10, (8, 8, 1))
  preprocess = data.make_preprocess((0.5,), (0.5,), "none", training=False)
  export.export_saved_model(fresh, str(tmp_path / "fresh"), preprocess=preprocess,
                            class_names=[str(d) for d in range(10)])
  size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and
                       f.name != "model_card.json")
  trained, untrained = size(base / "served" / "1"), size(tmp_path / "fresh")
  assert abs(trained - untrained) < 0.05 * untrained  # 1,437 digits would add ~92 kB.


def test_model_card_matches_the_metrics_and_sits_inside_the_export(run):
  base, metrics = run
  beside = json.loads((base / "served" / "model_card.json").read_text())
  inside = json.loads((base / "served" / "1" / "assets" / "model_card.json").read_text())
  assert beside == inside
  for key in ("epsilon", "delta", "accountant", "sampling", "noise_multiplier", "l2_norm_clip",
              "steps", "dataset", "train_examples", "model", "optimizer", "test_accuracy"):
    assert inside[key] == metrics[key], key
  assert inside["sampling"] == "poisson" and "add/remove-one" in inside["guarantee"]
  assert inside["tensorflow_version"] == tf.__version__ and inside["tfdp_version"]


def test_predict_cli_classifies_and_names_each_bad_file(run, tmp_path):
  base, _ = run
  image = data.load_dataset("digits").test_images[0]
  good = tmp_path / "digit.png"
  good.write_bytes(tf.io.encode_png(image).numpy())
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
  text = tmp_path / "notes.txt"
  text.write_text("not an image")
  result = _cli("tfdp.predict", f"--model_dir={base / 'served'}", str(corrupt), str(good),
                str(text), str(tmp_path / "missing.png"))
  assert result.returncode == 1
  assert f"{good}: " in result.stdout and "(" in result.stdout
  for bad in (corrupt, text, tmp_path / "missing.png"):
    assert f"{bad}: error:" in result.stderr, result.stderr


def test_evaluate_cli_reproduces_the_runs_accuracy(run, tmp_path):
  base, metrics = run
  result = _cli("tfdp.evaluate", f"--model_dir={base / 'served'}", "--dataset=digits",
                f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / "evaluation.json").read_text())
  assert report["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
  assert report["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
  assert len(report["per_class_accuracy"]) == 10 and report["examples"] == 360
  assert np.sum(report["confusion_matrix"]) == 360
  assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_export_cli_writes_the_next_version_from_a_checkpoint(run):
  base, _ = run
  result = _cli("tfdp.export", f"--checkpoint_dir={base / 'run'}",
                f"--export_dir={base / 'served'}")
  assert result.returncode == 0, result.stderr
  images = tf.constant(data.load_dataset("digits").test_images[:8])
  first = tf.saved_model.load(str(base / "served" / "1")).signatures["predict_pixels"]
  second = tf.saved_model.load(str(base / "served" / "2")).signatures["predict_pixels"]
  np.testing.assert_allclose(first(pixels=images)["probabilities"].numpy(),
                             second(pixels=images)["probabilities"].numpy(), rtol=1e-6)
  missing = _cli("tfdp.export", "--checkpoint_dir=/nonexistent", f"--export_dir={base}/x")
  assert missing.returncode != 0 and "not a tfdp.train run directory" in missing.stderr


def test_saved_model_cli_shows_and_runs_both_signatures(run, tmp_path):
  base, _ = run
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  version = str(base / "served" / "1")
  shown = subprocess.run([cli, "show", "--dir", version, "--all"], capture_output=True, text=True)
  assert shown.returncode == 0 and "image_bytes" in shown.stdout and "pixels" in shown.stdout
  pixels = data.load_dataset("digits").test_images[:2]
  np.save(tmp_path / "pixels.npy", pixels)
  ran = subprocess.run([cli, "run", "--dir", version, "--tag_set", "serve", "--signature_def",
                        "predict_pixels", "--inputs", f"pixels={tmp_path / 'pixels.npy'}"],
                       capture_output=True, text=True)
  assert ran.returncode == 0, ran.stderr
  assert "probabilities" in ran.stdout
  encoded = np.array([tf.io.encode_png(p).numpy() for p in pixels], dtype=object)
  np.save(tmp_path / "bytes.npy", encoded.astype(bytes))
  ran = subprocess.run([cli, "run", "--dir", version, "--tag_set", "serve", "--signature_def",
                        "serving_default", "--inputs", f"image_bytes={tmp_path / 'bytes.npy'}"],
                       capture_output=True, text=True)
  assert ran.returncode == 0, ran.stderr
  assert "classes" in ran.stdout


def _keras_io_model(last):
  """A keras.io-style Sequential: pixels / 255 in, `last` out."""
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([tf.keras.Input((8, 8, 1)),
                              tf.keras.layers.Conv2D(4, 3, activation="relu"),
                              tf.keras.layers.GroupNormalization(groups=2),
                              tf.keras.layers.Flatten(), last])


def _pixels():
  return np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)).astype(np.uint8)


def test_a_private_keras_model_exports_alone_with_its_own_probabilities(tmp_path):
  import tfdp  # pylint: disable=import-outside-toplevel
  digits = data.load_dataset("digits")
  images = digits.train_images[:200].astype(np.float32) / 255.0
  private = tfdp.keras.make_private(
      _keras_io_model(tf.keras.layers.Dense(10, activation="softmax")), optimizer="dp_sgd",
      learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.0, target_delta=1e-3, epochs=1,
      train_size=200, batch_size=50)
  private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy())
  private.fit(tfdp.data.poisson_dataset(images, digits.train_labels[:200], batch_size=50),
              epochs=1, verbose=0, callbacks=[tfdp.keras.PrivacyBudget(pld=False)])
  assert tfdp.export.output_kind(private) == "probabilities"
  path = tfdp.export.export_saved_model(private, str(tmp_path / "served"))
  served = tf.saved_model.load(path).signatures["predict_pixels"](pixels=_pixels())
  own = private(_pixels().astype(np.float32) / 255.0).numpy()
  np.testing.assert_allclose(served["probabilities"].numpy(), own, rtol=1e-5, atol=1e-7)
  assert not np.allclose(own, tf.nn.softmax(own).numpy(), atol=1e-3)  # softmax twice differs.
  assert served["class_names"].numpy()[0].tolist() == [str(k).encode() for k in range(10)]
  card = tfdp.export.read_model_card(path)
  assert card["steps"] == 4 and card["epsilon"] == pytest.approx(private.privacy_ledger.epsilon())


@pytest.mark.parametrize("last, outputs", [
    (tf.keras.layers.Dense(1, activation="sigmoid"), "probabilities"),
    (tf.keras.layers.Dense(1), "logits"),
])
def test_a_single_unit_is_two_classes(tmp_path, last, outputs):
  from tfdp import export  # pylint: disable=import-outside-toplevel
  model = _keras_io_model(last)
  assert export.output_kind(model) == outputs
  path = export.export_saved_model(model, str(tmp_path / "served"))
  served = tf.saved_model.load(path).signatures["predict_pixels"](pixels=_pixels())
  p = model(_pixels().astype(np.float32) / 255.0).numpy()[:, 0]
  p = p if outputs == "probabilities" else 1 / (1 + np.exp(-p))
  np.testing.assert_allclose(served["probabilities"].numpy(), np.stack([1 - p, p], axis=1),
                             rtol=1e-5, atol=1e-6)
  assert served["class_names"].shape == (5, 2)


def test_the_default_preprocess_and_output_kind_read_the_model():
  from tfdp import export  # pylint: disable=import-outside-toplevel
  inputs = tf.keras.Input((8, 8, 1))
  augmented = tf.keras.Sequential([tf.keras.layers.RandomFlip()])(inputs)
  scaled = tf.keras.layers.Rescaling(1 / 127.5, offset=-1)(augmented)
  logits = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(scaled))
  rescaling = tf.keras.Model(inputs, logits)
  pixels = tf.constant(_pixels())
  np.testing.assert_array_equal(export.default_preprocess(rescaling)(pixels),
                                tf.cast(pixels, tf.float32))  # The model scales itself.
  np.testing.assert_allclose(export.default_preprocess(_keras_io_model(
      tf.keras.layers.Dense(3)))(pixels), tf.cast(pixels, tf.float32) / 255.0)
  assert export.output_kind(rescaling) == "logits"
  assert export.output_kind(tf.keras.Model(inputs, tf.keras.layers.Softmax()(logits))) == \
      "probabilities"
  assert export.output_kind(tf.keras.Model(inputs, tf.keras.layers.Activation("softmax")(
      logits))) == "probabilities"
  assert export.default_class_names(rescaling) == ["0", "1", "2"]
