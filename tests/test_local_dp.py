"""Local DP on images: perturbed once before training, in range, with the ε the formula gives."""

import json

import numpy as np
import pytest

from tfdp import config as config_lib
from tfdp.data import local_dp
from tfdp.data import sampling
from tfdp.serving import model_card
from tfdp.training import loop


def test_perturbation_stays_in_range_and_has_the_laplace_spread():
  images = np.full((200, 8, 8, 1), 128, np.uint8)
  perturbed = local_dp.perturb_once(images, 4.0, np.random.default_rng(0))
  assert perturbed.dtype == np.uint8 and perturbed.shape == images.shape
  difference = perturbed.astype(np.float64) - 128
  assert np.mean(np.abs(difference)) == pytest.approx(4.0, rel=0.05)  # E|Laplace(β)| = β.
  edges = local_dp.perturb_once(np.zeros((50, 8, 8, 1), np.uint8), 50.0, np.random.default_rng(1))
  assert edges.min() == 0 and edges.max() <= 255  # Clipped, never wrapped around.


@pytest.mark.parametrize("shape, scale, per_image", [
    ((28, 28, 1), 1.0, 199_920.0), ((28, 28, 1), 4.0, 49_980.0), ((32, 32, 3), 2.0, 391_680.0)])
def test_epsilon_is_the_l1_diameter_over_the_scale(shape, scale, per_image):
  assert local_dp.epsilon_per_image(shape, scale) == per_image
  assert local_dp.epsilon_per_pixel(scale) == 255 / scale


def _config(tmp_path, **data):
  return config_lib.Config(
      data=config_lib.DataConfig(local_dp="laplace", local_dp_scale=8.0, **data),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name="sgd", learning_rate=0.1),
      run=config_lib.RunConfig(batch_size=256, epochs=2, output_dir=str(tmp_path),
                               export=False))


def test_training_sees_one_perturbed_copy_in_every_epoch_and_reports_its_epsilon(
    tmp_path, monkeypatch):
  seen = {}  # index -> the image the step gathered, over both epochs.
  repeats = []
  original_gather = sampling.gather_chunk

  def recording_gather(images, labels, chunk):
    rows = original_gather(images, labels, chunk)
    for row, index in enumerate(chunk.indices):
      if index != sampling.PADDING:
        if index in seen:
          repeats.append(np.array_equal(seen[index], rows[0][row]))
        seen[index] = rows[0][row].copy()
    return rows

  monkeypatch.setattr(sampling, "gather_chunk", recording_gather)
  config = _config(tmp_path)
  metrics = loop.train_and_evaluate(config)
  raw = loop.data.load_dataset("digits").train_images
  assert len(repeats) > 1000 and all(repeats)  # Two epochs: the same perturbed images.
  changed = [not np.array_equal(seen[i], raw[i]) for i in list(seen)[:100]]
  assert sum(changed) > 90  # What training saw is not the raw data.
  assert metrics["local_dp"]["epsilon_per_image"] == 8 * 8 * 255 / 8.0
  assert metrics["local_dp"]["epsilon_per_pixel"] == 255 / 8.0
  card = model_card.build(metrics)
  assert "(ε = 2040, δ = 0)-DP per training image" in card["local_dp_guarantee"]
  with open(tmp_path / "metrics.json") as f:
    assert json.load(f)["local_dp"]["mechanism"] == "laplace"


def test_a_resumed_run_reuses_its_perturbed_copy(tmp_path):
  config = _config(tmp_path)
  first = loop.load_training_data(config).train_images
  again = loop.load_training_data(config).train_images  # A new invocation of the same run.
  np.testing.assert_array_equal(first, again)
  other = loop.load_training_data(_config(tmp_path / "other")).train_images
  assert not np.array_equal(first, other)  # Fresh secret noise for a new run.


@pytest.mark.parametrize("data, message", [
    ({"local_dp": "laplace"}, "--local_dp_scale goes with --local_dp"),
    ({"local_dp_scale": 2.0}, "--local_dp_scale goes with --local_dp"),
    ({"local_dp": "gauss", "local_dp_scale": 2.0}, "unknown local_dp"),
    ({"local_dp": "laplace", "local_dp_scale": -1.0}, "must be > 0"),
])
def test_bad_local_dp_settings_are_refused(data, message):
  with pytest.raises(ValueError, match=message):
    config_lib.DataConfig(**data)


def test_images_perturbed_from_the_public_seed_get_no_local_dp_guarantee():
  secret = local_dp.report("laplace", 2.0, (8, 8, 1))
  seeded = local_dp.report("laplace", 2.0, (8, 8, 1), randomness="reproducible")
  assert "(ε = 8160, δ = 1)-DP per training image" in model_card.local_dp_guarantee(secret)
  assert model_card.local_dp_guarantee(seeded).startswith("NO LOCAL-DP GUARANTEE")


def test_the_delta_is_what_the_sampler_cannot_reach():
  """NumPy's Laplace is scale · ±log(2U) on a 53-bit U in (0, 1): its extremes bound every draw."""
  uniforms = np.array([2.0 ** -53, 1 - 2.0 ** -53])
  reach = np.max(np.abs(np.where(uniforms >= 0.5, -np.log(2 - 2 * uniforms),
                                 np.log(2 * uniforms))))
  assert reach == pytest.approx(local_dp.LAPLACE_REACH, rel=1e-12)
  # β = 4: from 255 no output lies below 255.5 - 4 · 36.04 = 111.3; pixel value 0 lands there with
  # probability 1 - e^(-111.3 / 4) / 2, so no pure ε holds and δ = 1 per image.
  assert local_dp.delta_per_image((8, 8, 1), 4.0) == 1.0
  per_value = 1 - 0.5 * np.exp(-(255.5 - local_dp.LAPLACE_REACH * 7.0) / 7.0)
  assert local_dp.delta_per_image((1, 1, 1), 7.0) == pytest.approx(per_value)
  assert local_dp.delta_per_image((28, 28, 1), 7.1) == 0.0  # 36.04 · 7.1 > 255.5: all reachable.
  assert local_dp.report("laplace", 4.0, (8, 8, 1))["delta_per_image"] == 1.0
