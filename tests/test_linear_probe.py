"""DP linear probing before fine-tuning: the head's clipped sum, the noise, the composed ε, the
calibration rule, the run and its resume (tfdp.training.linear_probe)."""

import json

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tests import dp_reference as ref
from tfdp import config
from tfdp import data
from tfdp.dp import clipping
from tfdp.dp import randomness
from tfdp import models
from tfdp.training import linear_probe
from tfdp.priors import prior_files
from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib
from tfdp.training import loop as training
from tfdp.training import planning

DELTA = 1e-3


def _run(tmp_path, name="run", epochs=1, epsilon=3.0, noise_multiplier=None, model="cnn",
         noise="gaussian", probe_sigma=None, **probe):
  probe = {"steps": 4, "learning_rate": 2.0, "noise_multiplier": probe_sigma, **probe}
  return config.Config(
      data=config.DataConfig(dataset="digits", train_examples=256),
      model=config.ModelConfig(name=model),
      privacy=config.PrivacyConfig(epsilon=epsilon, noise_multiplier=noise_multiplier,
                                   delta=DELTA, l2_norm_clip=1.0, noise=noise,
                                   clipping="vectorized" if noise == "laplace" else "fast"),
      optimizer=config.OptimizerConfig(name="dp_sgd", learning_rate=0.5),
      run=config.RunConfig(batch_size=64, epochs=epochs, output_dir=str(tmp_path / name),
                           export=False, reproducible_noise=True),
      probe=config.ProbeConfig(**probe))


def _digits_model():
  dataset = data.load_dataset("digits", train_examples=256, seed=0)
  tf.keras.utils.set_random_seed(0)
  model = models.build_model("cnn", dataset.num_classes, dataset.input_shape)
  preprocess = data.make_preprocess(dataset.mean, dataset.std, "none", training=False)
  return dataset, model, preprocess


def test_probe_clipped_sum_on_the_head_equals_brute_force():
  dataset, model, preprocess = _digits_model()
  features = linear_probe.encoder_features(model, dataset, preprocess)
  head = linear_probe.head_model(model)
  assert not clipping.make_engine("fast", head).fallback_layers
  step = linear_probe.make_step(_run(tmp_path=_Path()), head, 1.0, 64,
                                clipping.per_example_loss, randomness.ReproducibleCoins(0))
  rows = features.train[:6].astype(np.float32)
  labels, mask = dataset.train_labels[:6], np.array([1, 1, 0, 1, 1, 0], np.float32)
  sums, *_ = step.accumulate([(rows, labels, mask)])
  expected = ref.clipped_sum(head, rows, labels, mask, 1.0)
  for variable, actual, wanted in zip(head.trainable_variables, sums, expected):
    np.testing.assert_allclose(np.asarray(actual), wanted, rtol=1e-4, atol=1e-6,
                               err_msg=variable.name)
  assert ref.global_norm(expected) <= 4.0 + 1e-5  # Four real rows, each of norm <= C.


def test_probe_noise_std_is_sigma_times_clip():
  """With every row padding, the update is -lr * noise / B: its std is lr σ_p C / B."""
  _, model, _ = _digits_model()
  head = linear_probe.head_model(model)
  sigma, batch, lr = 3.0, 50, 2.0
  step = linear_probe.make_step(_run(tmp_path=_Path(), learning_rate=lr), head, sigma, batch,
                                clipping.per_example_loss, randomness.ReproducibleCoins(0))
  width = head.input_shape[-1]
  empty = (np.zeros((8, width), np.float32), np.zeros(8, np.int64), np.zeros(8, np.float32))
  updates = []
  for number in range(20):
    before = [v.numpy() for v in head.trainable_variables]
    step([empty], step=number)
    updates += [(b - v.numpy()).ravel() for b, v in zip(before, head.trainable_variables)]
  observed = np.std(np.concatenate(updates))
  assert observed == pytest.approx(lr * sigma * 1.0 / batch, rel=0.03)


def test_composed_epsilon_equals_dp_accounting_composing_the_two_phases():
  probe = {"noise_multiplier": 20.0, "sampling_probability": 1.0, "steps": 30}
  ledger = ledger_lib.PrivacyLedger(noise_multiplier=1.2, sampling_probability=0.02, delta=1e-5,
                                    probe=probe, probe_steps=30, steps=400)
  events = dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
          1.0, dp_accounting.GaussianDpEvent(20.0)), 30),
      dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
          0.02, dp_accounting.GaussianDpEvent(1.2)), 400)])
  rdp = dp_accounting.rdp.RdpAccountant()
  rdp.compose(events)
  assert ledger.epsilon("rdp") == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-9)
  pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
  pld.compose(events)
  assert ledger.epsilon("pld") == pytest.approx(pld.get_epsilon(1e-5), rel=1e-6)
  alone = accounting.epsilon(1.2, 0.02, 400, 1e-5)
  assert ledger.epsilon("rdp") > alone  # The probe is not free.
  assert ledger.epsilon(probe_steps=0) == pytest.approx(alone, rel=1e-12)


def test_calibration_gives_the_probe_its_fraction_and_both_phases_the_target():
  run = _run(_Path(), epsilon=2.0, epsilon_fraction=0.25, steps=50)
  ledger = planning.plan_privacy(run, 256)
  probe = ledger.probe
  assert probe["sampling_probability"] == 1.0 and probe["steps"] == 50
  alone = accounting.epsilon(probe["noise_multiplier"], 1.0, 50, DELTA)
  assert 0.99 * 0.5 <= alone <= 0.5
  planned = ledger.history[0]["planned_steps"]
  assert 0.99 * 2.0 <= ledger.planned_epsilon(planned) <= 2.0
  assert ledger.max_steps() == planned
  without = planning.plan_privacy(_run(_Path(), epsilon=2.0, steps=0), 256)
  assert ledger.noise_multiplier > without.noise_multiplier  # The main steps pay for the probe.


def test_a_run_probes_the_head_only_then_trains_and_resumes_without_probing_again(tmp_path,
                                                                                  monkeypatch):
  monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path / "cache"))
  dataset, model, preprocess = _digits_model()
  encoder_before = [w.copy() for w in prior_files.split_head(model).get_weights()]
  head_before = model.get_layer("logits").get_weights()
  run = _run(tmp_path, noise_multiplier=1.0, epsilon=None, probe_sigma=20.0)
  ledger = planning.plan_privacy(run, dataset.num_train)
  linear_probe.run(run, model, dataset, preprocess, ledger, clipping.per_example_loss,
                   randomness.ReproducibleCoins(0))
  assert ledger.probe_steps == 4
  for before, after in zip(encoder_before, prior_files.split_head(model).get_weights()):
    np.testing.assert_array_equal(before, after)
  assert not np.allclose(head_before[0], model.get_layer("logits").get_weights()[0])

  first = training.train_and_evaluate(run)
  assert first["linear_probe"]["steps_taken"] == 4
  assert first["linear_probe"]["test_accuracy"] is not None
  assert "linear probe of 4 steps" in first["privacy_statement"]
  longer = _run(tmp_path, epochs=2, noise_multiplier=1.0, epsilon=None,
                probe_sigma=20.0)
  second = training.train_and_evaluate(longer)
  events = [event["event"] for event in second["ledger_history"]]
  assert events.count("linear_probe") == 1 and "resume" in events
  ledger = ledger_lib.PrivacyLedger(**json.loads(
      (tmp_path / "run" / "state.json").read_text())["ledger"])
  assert ledger.probe_steps == 4 and ledger.steps == second["steps"]
  assert second["epsilon"] == pytest.approx(ledger.epsilon(), rel=1e-9)
  assert second["epsilon"] > accounting.epsilon(1.0, 64 / 256, second["steps"], DELTA)


@pytest.mark.parametrize("changes, message", [
    ({"model": "scatter_linear"}, "already trains only a head"),
    ({"noise": "laplace"}, "needs --noise=gaussian"),
    ({"epsilon": None, "noise_multiplier": 1.0}, "needs --probe_noise_multiplier"),
    ({"epsilon_fraction": 1.0}, "probe_epsilon_fraction must be in"),
])
def test_bad_probe_settings_are_refused_with_the_reason(changes, message):
  with pytest.raises(ValueError, match=message):
    _run(_Path(), **changes)


def test_a_probe_that_alone_exceeds_the_target_is_refused_before_training():
  with pytest.raises(ValueError, match="probe alone spends"):
    planning.plan_probe(_run(_Path(), epsilon=1.0, noise_multiplier=None, steps=50,
                             probe_sigma=0.5), 256)


class _Path:
  """A stand-in output directory for configs that are never run."""

  def __truediv__(self, name):
    return f"/nonexistent/{name}"


def test_weight_average_restarts_from_the_probed_weights():
  from tfdp.training import ema
  _, model, _ = _digits_model()
  average = ema.WeightAverage(model, 0.99)
  average.update()
  head = model.get_layer("logits")
  head.set_weights([w + 1.0 for w in head.get_weights()])  # What the probe does to the head.
  average.restart()
  assert int(average.updates.numpy()) == 0
  for mean, variable in zip(average.averages, model.trainable_variables):
    np.testing.assert_array_equal(mean.numpy(), variable.numpy())
