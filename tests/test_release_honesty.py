"""What a run releases: only what its guarantee covers by default, labelled figures on request, the
clip that was used, the provenance of pretrained weights, and the public training subset."""

import glob
import hashlib
import json
import os

import pytest
import tensorflow as tf

from tfdp import config as config_lib
from tfdp.privacy import ledger as ledger_lib
from tfdp.serving import model_card
from tfdp.serving import release
from tfdp.training import loop as training

_TRAIN_FIGURES = ("train_loss", "train_accuracy")


def _run(tmp_path, privacy=None, optimizer="dp_sgd", data=None, **run):
  config = config_lib.Config(
      data=config_lib.DataConfig(**(data or {})),
      privacy=config_lib.PrivacyConfig(**({"epsilon": 3.0} if privacy is None else privacy)),
      model=config_lib.ModelConfig(name="linear"),
      optimizer=config_lib.OptimizerConfig(name=optimizer, learning_rate=0.5),
      run=config_lib.RunConfig(**{"batch_size": 256, "epochs": 2, "output_dir": str(tmp_path),
                                  "export": False, **run}))
  return training.train_and_evaluate(config)


def _tensorboard_tags(output_dir):
  tags = set()
  for path in glob.glob(os.path.join(output_dir, "tensorboard", "*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


def _progress_lines(output):
  return [line for line in output.splitlines() if line.startswith("  ") and "/" in line.split()[0]]


def test_a_private_run_releases_no_training_batch_figures(tmp_path, capsys):
  metrics = _run(tmp_path, progress="verbose")  # Per-step progress lines: --progress=verbose.
  output = capsys.readouterr().out
  state = (tmp_path / "state.json").read_text()
  for figure in _TRAIN_FIGURES:
    assert figure not in json.dumps(metrics), figure
    assert figure not in state, figure
    assert not [tag for tag in _tensorboard_tags(str(tmp_path)) if figure in tag]
  progress = _progress_lines(output)
  assert progress and all("loss" not in line and "accuracy" not in line for line in progress)
  assert "epsilon" in progress[-1]
  assert metrics["not_private_monitoring"] is None
  assert "not_private_monitoring" not in model_card.build(metrics)["covered_fields"]


def test_speed_comes_from_the_expected_batch_not_the_drawn_sizes(tmp_path, monkeypatch):
  class OneSecondPerStep:  # Every timed step lasts exactly one second.
    def __init__(self):
      self._now = 0.0

    def perf_counter(self):
      self._now += 1.0  # Called once as each step starts and once as it ends.
      return self._now

    def monotonic(self):
      return 0.0

  monkeypatch.setattr(training, "time", OneSecondPerStep())
  metrics = _run(tmp_path, epochs=1)
  assert metrics["examples_per_second"] == pytest.approx(256.0)  # q·N per step, one step a second.


def test_monitoring_on_request_is_labelled_not_private_everywhere(tmp_path, capsys):
  metrics = _run(tmp_path, monitor_private_metrics=True, progress="verbose")
  output = capsys.readouterr().out
  monitoring = metrics["not_private_monitoring"]
  assert set(monitoring) == {"note", "train_loss", "train_accuracy"}
  assert "NOT covered" in monitoring["note"]
  for record in metrics["history"]:
    assert {"not_private/train_loss", "not_private/train_accuracy"} <= set(record)
    assert not set(_TRAIN_FIGURES) & set(record)
  assert {"not_private/train_loss", "not_private/train_accuracy"} <= _tensorboard_tags(
      str(tmp_path))
  assert "not_private/train_loss" in _progress_lines(output)[-1]
  card = model_card.build(metrics)
  assert card["not_covered"] == ["not_private_monitoring", "timing"]
  assert card["not_private_monitoring"] == monitoring
  assert "not_private_monitoring" not in card["covered_fields"]


def test_non_private_runs_keep_their_training_figures(tmp_path):
  metrics = _run(tmp_path, privacy={}, optimizer="sgd", epochs=1)
  assert set(_TRAIN_FIGURES) <= set(metrics["history"][-1])
  assert metrics["dp_guarantee"] == "none"
  assert model_card.build(metrics)["guarantee"] == model_card.NON_PRIVATE


def test_laplace_runs_record_the_l1_clip_and_the_subset_is_public(tmp_path):
  metrics = _run(tmp_path, privacy={"epsilon": 3.0, "noise": "laplace", "clipping": "vectorized",
                                    "l1_norm_clip": 5.0},
                 data={"train_examples": 300}, batch_size=64, epochs=1, seed=4)
  assert metrics["l1_norm_clip"] == 5.0 and metrics["l2_norm_clip"] is None
  assert metrics["train_subset"] == {"examples": 300, "seed": 4, "chosen_by": "public seed"}
  card = model_card.build(metrics)
  assert card["l1_norm_clip"] == 5.0 and card["l2_norm_clip"] is None
  assert card["train_subset"] == metrics["train_subset"]
  assert "--train_examples" in card["guarantee"] and "subset is public" in card["guarantee"]


def test_gaussian_runs_record_the_l2_clip_and_the_randomness(tmp_path):
  metrics = _run(tmp_path, epochs=1)
  assert metrics["l2_norm_clip"] == 1.0 and metrics["l1_norm_clip"] is None
  assert metrics["randomness"] == "secret" and metrics["dp_guarantee"] == "proven"
  assert metrics["train_subset"] is None and metrics["weights_file"] is None
  assert model_card.build(metrics)["randomness"] == "secret"


def _write(path, text="weights"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_weights_provenance_is_the_path_and_sha256_of_every_file(tmp_path):
  single = _write(tmp_path / "public" / "b0.h5", "abc")
  assert release.weights_provenance(str(single)) == {
      "path": str(single), "sha256": hashlib.sha256(b"abc").hexdigest()}
  index = _write(tmp_path / "public" / "ckpt" / "w.index", "i")
  data = _write(tmp_path / "public" / "ckpt" / "w.data-00000-of-00001", "d")
  provenance = release.weights_provenance(str(tmp_path / "public" / "ckpt" / "w"))
  assert provenance["sha256"] == hashlib.sha256(
      data.read_bytes() + index.read_bytes()).hexdigest()  # Sorted by name: data, then index.
  assert release.weights_provenance(None) is None
  with pytest.raises(ValueError, match="does not exist"):
    release.weights_provenance(str(tmp_path / "missing.h5"))


@pytest.mark.parametrize("record,contents", [
    ("state.json", {"ledger": {"noise_multiplier": 1.1}}),
    ("metrics.json", {"epsilon": 3.0, "noise_multiplier": 1.1}),
    ("metrics.json", {"epsilon": None, "epsilon_if_dp_sgd": 2.0}),
    ("model_card.json", {"dp_guarantee": "shuffle"}),
    (os.path.join("assets", "model_card.json"), {"epsilon": 1.0}),
])
def test_weights_of_an_earlier_private_run_are_refused(tmp_path, record, contents):
  weights = _write(tmp_path / "run" / "checkpoints" / "ckpt-3.index")
  _write(tmp_path / "run" / record, json.dumps(contents))
  with pytest.raises(ValueError, match="earlier private tfdp run.*compose"):
    release.weights_provenance(str(weights)[:-len(".index")])


def test_weights_of_a_non_private_run_are_accepted_and_the_card_states_the_assumption(tmp_path):
  weights = _write(tmp_path / "run" / "pretrained.h5")
  _write(tmp_path / "run" / "metrics.json",
         json.dumps({"epsilon": None, "noise_multiplier": 0.0, "dp_guarantee": "none"}))
  provenance = release.weights_provenance(str(weights))
  assert provenance["path"] == str(weights)
  card = model_card.build({"epsilon": 1.0, "dp_guarantee": "proven", "weights_file": provenance})
  assert card["weights_file"] == provenance and "weights_file" in card["covered_fields"]
  assert any("pretrained weights_file" in a and "independent of the private training data" in a
             for a in card["assumptions"])


def test_prepare_refuses_private_weights_before_any_work(tmp_path):
  weights = _write(tmp_path / "old" / "saved_model" / "variables" / "variables.index")
  _write(tmp_path / "old" / "metrics.json", json.dumps({"epsilon": 2.0}))
  config = config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=3.0),
      model=config_lib.ModelConfig(name="efficientnet_b0",
                                   options=(("weights", str(weights)[:-len(".index")]),)),
      run=config_lib.RunConfig(output_dir=str(tmp_path / "new")))
  with pytest.raises(ValueError, match="earlier private tfdp run"):
    training.prepare(config)
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("changes,kind", [
    ({}, "proven"),
    ({"sampling": "shuffle"}, "shuffle"),
    ({"randomness": "reproducible"}, "reproducible"),
    ({"randomness": "reproducible", "proven": False}, "reproducible"),
    ({"proven": False, "sampling": "shuffle"}, "unproven"),
    ({"noise_multiplier": 0.0}, "none"),
])
def test_the_ledger_says_which_guarantee_holds(changes, kind):
  ledger = ledger_lib.PrivacyLedger(**{"noise_multiplier": 1.0, "sampling_probability": 0.1,
                                       "delta": 1e-5, **changes})
  assert ledger.guarantee() == kind
  assert ledger.describe().startswith("NO PROVEN DP GUARANTEE") == (
      ledger.private and not ledger.proven)
