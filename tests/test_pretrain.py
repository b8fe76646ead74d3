"""Phase I pretraining resumes exactly, and its prior loads only into the same architecture."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfdp import models
from tfdp.priors import pretraining
from tfdp.priors import prior_files


def _config(output_dir, **overrides):
  values = dict(model="cnn", source="mix", image_size=16, steps=4, batch_size=8,
                checkpoint_every=2, log_every=1, output_dir=str(output_dir))
  values.update(overrides)
  return pretraining.PretrainConfig(**values)


class _Interrupted(Exception):
  pass


def _interrupt_after(monkeypatch, steps):
  original = pretraining._Pretrainer.batches

  def batches(trainer):
    stream = original(trainer)
    for _ in range(steps):
      yield next(stream)
    raise _Interrupted()
  monkeypatch.setattr(pretraining._Pretrainer, "batches", batches)


def _weights(path):
  model = models.build_model("cnn", 2, (16, 16, 3))
  prior_files.split_head(model).load_weights(os.path.join(path, prior_files.WEIGHTS_FILE))
  return prior_files.split_head(model).get_weights()


def test_interrupted_pretraining_resumes_to_the_same_steps_and_weights(tmp_path, monkeypatch,
                                                                       capsys):
  whole = pretraining.pretrain(_config(tmp_path / "whole"))
  with monkeypatch.context() as patch:
    _interrupt_after(patch, 3)  # Checkpoint at step 2, then killed during step 3.
    with pytest.raises(_Interrupted):
      pretraining.pretrain(_config(tmp_path / "killed"))
  assert not os.path.exists(tmp_path / "killed" / "prior")  # Nothing half-written.
  resumed = pretraining.pretrain(_config(tmp_path / "killed"))
  assert "Resumed at step 2/4" in capsys.readouterr().out
  assert resumed["steps"] == whole["steps"] == 4
  for got, expected in zip(_weights(tmp_path / "killed" / "prior"),
                           _weights(tmp_path / "whole" / "prior")):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert os.listdir(tmp_path / "whole" / "tensorboard")


def test_card_says_no_real_image_and_records_how_it_was_made(tmp_path):
  card = pretraining.pretrain(_config(tmp_path / "run", steps=1, source="dead_leaves"))
  assert card["real_images_used"] is False and "No real image" in card["statement"]
  assert card["generator"] == "dead_leaves" and card["seed"] == 0 and card["steps"] == 1
  assert card["model"] == "cnn" and card["input_shape"] == [16, 16, 3]
  assert card["hyperparameters"]["batch_size"] == 8 and card["weights_sha256"]


def test_prior_loads_its_encoder_and_leaves_the_head_fresh(tmp_path):
  pretraining.pretrain(_config(tmp_path / "run", steps=1))
  prior = str(tmp_path / "run" / "prior")
  model = models.build_model("cnn", 10, (16, 16, 3))
  head_before = model.get_layer("logits").get_weights()
  card = prior_files.load_into(prior, model, "cnn", {})
  assert card["generator"] == "mix"
  for got, expected in zip(prior_files.split_head(model).get_weights(), _weights(prior)):
    np.testing.assert_array_equal(got, expected)
  for got, expected in zip(model.get_layer("logits").get_weights(), head_before):
    np.testing.assert_array_equal(got, expected)


def test_prior_for_another_architecture_or_changed_file_is_refused(tmp_path):
  pretraining.pretrain(_config(tmp_path / "run", steps=1))
  prior = str(tmp_path / "run" / "prior")
  other = models.build_model("linear", 10, (16, 16, 3))
  with pytest.raises(ValueError, match="'cnn'.*'linear'"):
    prior_files.load_into(prior, other, "linear", {})
  with pytest.raises(ValueError, match="is not a tfdp prior"):
    prior_files.load_into(str(tmp_path), other, "linear", {})
  with open(os.path.join(prior, prior_files.WEIGHTS_FILE), "ab") as f:
    f.write(b"changed")
  model = models.build_model("cnn", 10, (16, 16, 3))
  with pytest.raises(ValueError, match="sha256"):
    prior_files.load_into(prior, model, "cnn", {})


def test_bad_pretraining_configs_name_the_value(tmp_path):
  with pytest.raises(ValueError, match="valid sources"):
    _config(tmp_path, source="imagenet")
  with pytest.raises(ValueError, match="batch_size must be >= 2"):
    _config(tmp_path, batch_size=1)
  with pytest.raises(ValueError, match="momentum"):
    _config(tmp_path, momentum=1.0)


def _digits_run(tmp_path, model, init_from):
  from tfdp import config
  return config.Config(
      data=config.DataConfig(dataset="digits", train_examples=256),
      model=config.ModelConfig(name=model, init_from=init_from),
      privacy=config.PrivacyConfig(epsilon=3.0, delta=1e-3),
      optimizer=config.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config.RunConfig(batch_size=64, epochs=1, output_dir=str(tmp_path / "train"),
                           export=False))


def test_train_starts_from_a_prior_and_names_it_in_metrics_and_card(tmp_path, monkeypatch):
  from tfdp.serving import model_card
  from tfdp.training import loop as training
  pretraining.pretrain(_config(tmp_path / "pre", steps=1, image_size=8, channels=1))
  loaded = []
  original = prior_files.load_into
  monkeypatch.setattr(prior_files, "load_into",
                      lambda *args: loaded.append(args[1]) or original(*args))
  # The pretraining run's folder is accepted as well as its prior/ inside it.
  metrics = training.train_and_evaluate(_digits_run(tmp_path, "cnn", str(tmp_path / "pre")))
  assert len(loaded) == 1
  assert metrics["prior"]["real_images_used"] is False
  assert metrics["prior"]["path"] == str(tmp_path / "pre" / "prior")
  card = model_card.build(metrics)
  assert card["prior"]["generator"] == "mix" and "prior" in card["covered_fields"]


def test_train_refuses_a_prior_of_another_architecture_before_training(tmp_path):
  from tfdp.training import loop as training
  pretraining.pretrain(_config(tmp_path / "pre", steps=1, image_size=8, channels=1))
  with pytest.raises(ValueError, match="model 'cnn'.*builds 'linear'"):
    training.prepare(_digits_run(tmp_path, "linear", str(tmp_path / "pre")))
  with pytest.raises(ValueError, match="not a tfdp prior"):
    training.prepare(_digits_run(tmp_path, "cnn", str(tmp_path / "nothing")))


def test_shipped_resnet20_prior_loads_offline_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # `priors/resnet20_randp` resolves under the checkout.
  card = prior_files.check_path("priors/resnet20_randp", "resnet20", {}, (32, 32, 3))
  assert card["real_images_used"] is False and card["model"] == "resnet20"
  assert card["command"].startswith("python -m tfdp.pretrain --model=resnet20")
  assert card["steps"] * card["hyperparameters"]["batch_size"] == card["images_seen"] > 0
  model = models.build_model("resnet20", 10, (32, 32, 3))
  fresh = [w.copy() for w in prior_files.split_head(model).get_weights()]
  prior_files.load_into("priors/resnet20_randp", model, "resnet20", {})
  loaded = prior_files.split_head(model).get_weights()
  assert any(not np.array_equal(a, b) for a, b in zip(fresh, loaded))
  with pytest.raises(ValueError, match="wrn16_4"):
    prior_files.check_path("priors/resnet20_randp", "wrn16_4", {}, (32, 32, 3))
