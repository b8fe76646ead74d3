"""--recipe=auto: the configuration is a function of public facts alone, and the run says so."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfdp import config
from tfdp import recipes
from tfdp.serving import model_card
from tfdp.training import loop

CIFAR10 = recipes.Facts(num_train=50000, input_shape=(32, 32, 3), num_classes=10, epsilon=3.0,
                        delta=1e-5, budget_minutes=60.0, cpu_kind="avx512", cores=2)
PNEUMONIA = dataclasses.replace(CIFAR10, num_train=4708, input_shape=(28, 28, 1), num_classes=2)


def test_cifar10_facts_give_the_tramer_boneh_scale():
  chosen = recipes.choose(CIFAR10)
  assert chosen["run.batch_size"] == 8192 and chosen["optimizer.learning_rate"] == 4.0
  assert chosen["model.name"] == "scatter_cnn"
  assert chosen["model.options"] == (("normalization", "statistics"),)
  assert chosen["privacy.normalization_noise_multiplier"] == 8.0
  assert chosen["run.epochs"] == recipes.BASE_EPOCHS


def test_a_small_set_gets_a_smaller_batch_and_a_smaller_learning_rate():
  chosen = recipes.choose(PNEUMONIA)
  assert chosen["run.batch_size"] == 512  # The largest power of two <= 4708 / 6.
  assert chosen["optimizer.learning_rate"] == pytest.approx(4.0 * (512 / 8192) ** 0.5)


@pytest.mark.parametrize("num_train,batch", [(200, 128), (300, 256), (4708, 512), (50000, 8192),
                                             (10**6, 8192)])
def test_the_batch_rule_at_its_bounds(num_train, batch):
  assert recipes.batch_size(num_train) == batch


def test_below_epsilon_3_the_statistics_get_proportionally_more_noise():
  noise = [recipes.choose(dataclasses.replace(CIFAR10, epsilon=e))[
      "privacy.normalization_noise_multiplier"] for e in (0.5, 1.0, 3.0, 8.0)]
  assert noise == [48.0, 24.0, 8.0, 8.0]


def test_epochs_grow_with_epsilon_and_shrink_to_fit_the_budget():
  epochs = [recipes.choose(dataclasses.replace(CIFAR10, epsilon=e))["run.epochs"]
            for e in (1.0, 3.0, 8.0)]
  assert epochs[0] < epochs[1] < epochs[2]
  tight = dataclasses.replace(CIFAR10, budget_minutes=20.0)
  chosen = recipes.choose(tight)
  assert chosen["run.epochs"] < epochs[1]
  assert recipes.estimated_minutes(tight, chosen["run.epochs"]) <= 20.0
  assert recipes.estimated_minutes(tight, chosen["run.epochs"] + 1) > 20.0
  slower = recipes.choose(dataclasses.replace(tight, cpu_kind="avx2"))
  assert slower["run.epochs"] < chosen["run.epochs"]
  with pytest.raises(ValueError, match="does not fit one epoch"):
    recipes.choose(dataclasses.replace(CIFAR10, budget_minutes=3.5))


def test_images_the_scatternet_cannot_take_are_refused_with_the_way_out():
  with pytest.raises(ValueError, match="multiples of 4.*without --recipe"):
    recipes.choose(dataclasses.replace(CIFAR10, input_shape=(30, 30, 3)))


def test_flags_the_recipe_chooses_are_refused_by_name():
  with pytest.raises(ValueError, match="--batch_size, --epochs"):
    recipes.refuse_chosen_flags(["epochs", "output_dir", "batch_size"])
  recipes.refuse_chosen_flags(["epsilon", "delta", "dataset", "data_dir", "output_dir", "seed"])


def _write_npz(path, seed, train=300, test=60, shape=(16, 16)):
  rng = np.random.default_rng(seed)
  np.savez(path, train_images=rng.integers(0, 256, (train, *shape)).astype(np.uint8),
           train_labels=rng.integers(0, 2, train), test_images=rng.integers(
               0, 256, (test, *shape)).astype(np.uint8), test_labels=np.arange(test) % 2)
  return str(path)


def _recipe_run(tmp_path, data_path, name="run"):
  return config.Config(
      data=config.DataConfig(dataset="npz", data_dir=data_path),
      privacy=config.PrivacyConfig(epsilon=3.0, delta=1e-4),
      run=config.RunConfig(recipe="auto", output_dir=str(tmp_path / name), export=False))


def test_the_choice_depends_on_the_facts_not_on_the_pixels_or_labels(tmp_path):
  first, _ = loop.with_recipe(_recipe_run(tmp_path, _write_npz(tmp_path / "a.npz", seed=1)))
  second, _ = loop.with_recipe(_recipe_run(tmp_path, _write_npz(tmp_path / "b.npz", seed=2)))
  assert first.run.recipe_record and first.run.recipe_record == second.run.recipe_record
  assert dataclasses.replace(first, data=second.data) == second  # All but the data path.
  assert first.run.batch_size == 256 and first.model.name == "scatter_cnn"
  bigger, _ = loop.with_recipe(_recipe_run(
      tmp_path, _write_npz(tmp_path / "c.npz", seed=1, train=3200)))
  assert bigger.run.batch_size == 512


@pytest.mark.newest_stack
def test_a_recipe_run_trains_and_its_card_says_nothing_was_tuned_on_the_data(tmp_path,
                                                                            monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  run, dataset = loop.with_recipe(_recipe_run(tmp_path, _write_npz(tmp_path / "a.npz", seed=1)))
  run = dataclasses.replace(run, run=dataclasses.replace(run.run, epochs=2))  # A short test.
  metrics = loop.train_and_evaluate(run, loop.prepare(run, dataset))
  assert metrics["epsilon"] <= 3.0 and metrics["model"] == "scatter_cnn"
  recipe = metrics["recipe"]
  assert recipe["looked_at_data"] is False and recipe["rule"] == recipes.RULE
  assert recipe["facts"]["num_train"] == 300 and tuple(recipe["facts"]["input_shape"]) == (16, 16, 1)
  assert recipe["chosen"]["run.batch_size"] == metrics["batch_size"] == 256
  assert metrics["feature_statistics"]["released"]  # The noise split's statistics, in ε.
  card = model_card.build(metrics)
  assert card["recipe"] == recipe and "recipe" in card["covered_fields"]


def test_the_command_refuses_a_chosen_flag_and_a_missing_epsilon(tmp_path):
  data_path = _write_npz(tmp_path / "a.npz", seed=1)
  base = [sys.executable, "-m", "tfdp.train", "--recipe=auto", "--dataset=npz",
          f"--data_dir={data_path}", "--delta=1e-3", f"--output_dir={tmp_path / 'run'}"]
  env = {**os.environ, "TFDP_CACHE_DIR": str(tmp_path / "cache")}
  clash = subprocess.run(base + ["--epsilon=3", "--batch_size=128"], capture_output=True,
                         text=True, env=env, check=False)
  assert clash.returncode == 1 and "--recipe=auto chooses --batch_size" in clash.stderr
  missing = subprocess.run(base, capture_output=True, text=True, env=env, check=False)
  assert missing.returncode == 1 and "give --epsilon" in missing.stderr
  assert not (tmp_path / "run").exists()


# The flag of each field the recipe chooses, as a flagfile spells it.
FLAG_OF = {"model.name": "model", "model.options": "model_kwargs",
           "privacy.normalization_noise_multiplier": "normalization_noise_multiplier",
           "privacy.l2_norm_clip": "l2_norm_clip", "optimizer.name": "optimizer",
           "optimizer.learning_rate": "learning_rate", "optimizer.momentum": "momentum",
           "run.batch_size": "batch_size", "run.physical_batch_size": "physical_batch_size",
           "run.epochs": "epochs", "data.augment": "augment", "data.augmult": "augmult"}


FLAG_DEFAULTS = {"augmult": "1"}  # What a flagfile may leave out.


def _flagfile(path):
  with open(path) as f:
    pairs = [line.strip()[2:].split("=", 1) for line in f if line.startswith("--")]
  return dict(pairs)


def _as_flag(value):
  if isinstance(value, tuple):
    return ",".join(f"{key}={option}" for key, option in value)
  return value


@pytest.mark.parametrize("epsilon", [1, 3, 8])
def test_the_cifar10_cpu_flagfiles_are_what_the_recipe_chooses_on_an_avx512_machine(epsilon):
  """So that --recipe=auto on CIFAR-10 is the flagfile, and the flagfiles follow a written rule."""
  flagfile = _flagfile(os.path.join(os.path.dirname(__file__), "..", "flags",
                                    f"cifar10_cpu_eps{epsilon}.flags"))
  assert float(flagfile["epsilon"]) == epsilon
  for path, value in recipes.choose(dataclasses.replace(CIFAR10, epsilon=epsilon)).items():
    written = flagfile.get(FLAG_OF[path], FLAG_DEFAULTS.get(FLAG_OF[path]))
    if isinstance(value, (int, float)):
      assert float(written) == pytest.approx(value), path
    else:
      assert written == _as_flag(value), path
