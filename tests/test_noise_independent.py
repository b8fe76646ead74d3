"""The noise every mechanism draws, measured against what the accountant is told, independently.

Each query is built the way tfdp.train builds it (flags -> config_from_flags -> loop.prepare ->
planning.build_optimizer), fed a known clipped sum (zeros), and drawn many times; the expected
noise is computed here from the flags and the ledger's σ by the mechanism's definition, not by
tfdp's helpers. A pooled sample std of n draws has relative standard error sqrt((κ - 1) / (4n))
(κ the kurtosis: 3 for Gaussians, 6 for Laplace), and every comparison allows Z = 6 of them:
P(|N(0, 1)| > 6) = 2e-9, so a test of a few comparisons fails by chance with probability < 1e-7.

Also: a --noise=discrete_gaussian run end to end, its subsampled RDP bound against the Rényi
divergence of the subsampled discrete Gaussian computed by direct summation over the integers,
and fresh noise at every step of a Keras `fit`.
"""

import json
import math
import os

from absl import flags
from dp_accounting.rdp import rdp_privacy_accountant
import numpy as np
import pytest
from scipy import special
import tensorflow as tf

import tfdp
from tfdp import models
from tfdp.dp import randomness
from tfdp.privacy import accounting
from tfdp.training import loop
from tfdp.training import planning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "flags", "quickstart.flags")
Z = 6.0  # Standard errors allowed per comparison (see the module docstring).
CLIP = 0.7  # --l2_norm_clip of every run here: not the default 1, so a wrong C shows.


def _train_path(tmp_path, *extra):
  """(config, ledger, model, optimizer) as tfdp.train builds them from the quickstart + `extra`."""
  from tfdp import train  # pylint: disable=import-outside-toplevel  (defines tfdp.train's flags)
  flags.FLAGS(["tfdp.train", f"--flagfile={QUICKSTART}", f"--output_dir={tmp_path / 'run'}",
               f"--l2_norm_clip={CLIP}", *extra])
  try:
    config = train.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  dataset, ledger = loop.prepare(config)
  model = models.build_model(config.model.name, dataset.num_classes, dataset.input_shape,
                             **config.model.kwargs)
  steps_per_epoch = math.ceil(dataset.num_train / config.run.batch_size)
  return config, ledger, model, planning.build_optimizer(config, ledger, model, steps_per_epoch)


def _secret_key():
  return tf.constant(randomness.SecretCoins().noise_seed(0), tf.int64)


def _key_of_step(key, i):
  """Step i's own key, derived from one secret key inside the compiled loop."""
  return tf.random.experimental.stateless_fold_in(key, tf.cast(i, tf.int64))


def _noise_draws(optimizer, model, count):
  """Per trainable variable, [count, *shape] releases of noised_mean on a zero clipped sum (the
  noise on the sum: expected batch size 1), each step with its own key, in one compiled loop."""
  zeros = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]

  @tf.function
  def draw(key):
    def body(i, arrays):
      noised = optimizer.noised_mean(zeros, 1.0, noise_seed=_key_of_step(key, i))
      return i + 1, [a.write(i, n) for a, n in zip(arrays, noised)]

    arrays = [tf.TensorArray(v.dtype, size=count) for v in zeros]
    _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays))
    return [a.stack() for a in arrays]

  return [a.numpy().astype(np.float64) for a in draw(_secret_key())]


def _rms(values):
  return float(np.sqrt(np.mean(np.square(values))))


def _tolerance(count, kurtosis=3.0):
  """Z relative standard errors of the pooled std of `count` draws."""
  return Z * math.sqrt((kurtosis - 1) / (4 * count))


def _assert_std(values, expected, kurtosis=3.0, what=""):
  values = np.ravel(values)
  tolerance = _tolerance(values.size, kurtosis)
  assert abs(_rms(values) / expected - 1) < tolerance, (what, _rms(values), expected, tolerance)
  assert abs(np.mean(values)) < Z * expected / math.sqrt(values.size), (what, np.mean(values))


def _assert_ledger_accounts(ledger, sigma, noise, accountant, steps=12):
  """The ε the ledger reports after `steps` steps is the accountant's at σ (the σ measured
  against) for this noise: the std checked is the one ε is computed from."""
  assert ledger.noise == noise and ledger.accountant == accountant
  assert ledger.epsilon(steps=steps) == accounting.epsilon(
      sigma, ledger.sampling_probability, steps, ledger.delta, accountant, noise)


def test_gaussian_noise_is_sigma_c(tmp_path):
  config, ledger, model, optimizer = _train_path(tmp_path)
  sigma = ledger.noise_multiplier
  _assert_ledger_accounts(ledger, sigma, "gaussian", "rdp")
  drawn = _noise_draws(optimizer, model, 1500)  # 975,000 draws: tolerance 0.43%.
  _assert_std(np.concatenate([d.ravel() for d in drawn]), sigma * CLIP)
  assert config.privacy.l2_norm_clip == CLIP


def test_laplace_noise_has_scale_sigma_times_the_l1_clip(tmp_path):
  """Laplace(b) per coordinate with b = σ C₁ (dp_accounting's LaplaceDpEvent(σ) on L1
  sensitivity C₁): E|X| = b and std b √2, which together also tell it from a Gaussian."""
  l1_clip = 5.0
  _, ledger, model, optimizer = _train_path(
      tmp_path, "--noise=laplace", "--clipping=vectorized", f"--l1_norm_clip={l1_clip}")
  sigma = ledger.noise_multiplier
  _assert_ledger_accounts(ledger, sigma, "laplace", "pld")
  values = np.concatenate([d.ravel() for d in _noise_draws(optimizer, model, 1500)])
  scale = sigma * l1_clip
  # |X| is Exp(b): mean b, relative standard error 1 / sqrt(n).
  assert abs(np.mean(np.abs(values)) / scale - 1) < Z / math.sqrt(values.size)
  _assert_std(values, scale * math.sqrt(2), kurtosis=6.0)


def test_discrete_gaussian_noise_is_on_the_grid_with_scale_sigma_times_the_sensitivity(tmp_path):
  """In grid units γ = ρ C / sqrt(d) (d the noised coordinates), neighbouring rounded sums are at
  most Δ = C / γ + sqrt(d) apart; the accountant's α / (2σ²) needs integer noise of scale at least
  σ Δ (tfdp draws ceil(σ Δ), less than one grid step more)."""
  inflation = 0.25  # Large, so that forgetting the inflation would be far outside the tolerance.
  _, ledger, model, optimizer = _train_path(tmp_path, "--noise=discrete_gaussian",
                                            f"--discrete_rounding_inflation={inflation}")
  sigma = ledger.noise_multiplier
  _assert_ledger_accounts(ledger, sigma, "discrete_gaussian", "rdp")
  drawn = _noise_draws(optimizer, model, 1000)  # 650,000 draws: tolerance 0.53%.
  values = np.concatenate([d.reshape(len(d), -1) for d in drawn], axis=1)
  coordinates = values.shape[1]
  assert coordinates == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  grid = inflation * CLIP / math.sqrt(coordinates)
  on_grid = values / grid
  np.testing.assert_allclose(on_grid, np.round(on_grid), atol=1e-2)  # float32 grid multiples.
  sensitivity = CLIP / grid + math.sqrt(coordinates)
  assert sensitivity * grid == pytest.approx(CLIP * (1 + inflation))
  scale = _rms(on_grid)
  tolerance = _tolerance(on_grid.size) * sigma * sensitivity
  assert sigma * sensitivity - tolerance < scale < sigma * sensitivity + 1 + tolerance, (
      scale, sigma * sensitivity)
  assert abs(np.mean(on_grid)) < Z * scale / math.sqrt(on_grid.size)


def test_per_layer_noise_has_each_groups_std_and_the_ledgers_effective_sigma(tmp_path):
  """--clip_groups=layer --layer_noise=depth_decay: group k of G (a layer with weights, from the
  input) is clipped to C / sqrt(G) and noised with std s_k = s w_k, w_k = 1 / (k + 1); the
  accountant composes σ = 1 / sqrt(Σ_k (C / sqrt(G))² / s_k²), so s = σ C sqrt(Σ_k w_k⁻² / G)."""
  _, ledger, model, optimizer = _train_path(tmp_path, "--model=cnn", "--clip_groups=layer",
                                            "--layer_noise=depth_decay")
  sigma = ledger.noise_multiplier
  _assert_ledger_accounts(ledger, sigma, "gaussian", "rdp")
  layers = [layer for layer in model.layers if layer.trainable_weights]
  group_of = {id(w): k for k, layer in enumerate(layers) for w in layer.trainable_weights}
  groups = [group_of[id(v)] for v in model.trainable_variables]
  count = len(layers)
  assert count == 4  # Two convolutions and two dense layers.
  weights = [1.0 / (k + 1) for k in range(count)]
  base = sigma * CLIP * math.sqrt(sum(w ** -2 for w in weights) / count)
  stds = [base * w for w in weights]
  drawn = _noise_draws(optimizer, model, 400)  # The smallest group: 160 x 400 = 64,000 draws.
  measured = []
  for k in range(count):
    values = np.concatenate([d.ravel() for d, g in zip(drawn, groups) if g == k])
    _assert_std(values, stds[k], what=f"group {k}")
    measured.append(_rms(values))
  effective = 1 / math.sqrt(sum((CLIP / math.sqrt(count)) ** 2 / s ** 2 for s in measured))
  assert effective == pytest.approx(sigma, rel=_tolerance(400 * 160))


def _adaptive_draws(optimizer, model, count):
  """`count` adaptive steps on a zero clipped sum and a zero centered count, each from the
  initial clip: per step, the gradient noise's sum of squares and the clip it moves to."""
  zeros = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]
  initial = float(optimizer.clip_norm())
  clip = optimizer._adaptive_clip  # pylint: disable=protected-access

  @tf.function
  def draw(key):
    def body(i, squares, clips):
      clip.assign(initial)
      noised = optimizer.noised_mean(zeros, 1.0, noise_seed=_key_of_step(key, i),
                                     centered_unclipped_count=tf.constant(0.0))
      total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(n, tf.float64))) for n in noised])
      return i + 1, squares.write(i, total), clips.write(i, clip.read_value())

    _, squares, clips = tf.while_loop(
        lambda i, *_: i < count, body,
        (tf.constant(0), tf.TensorArray(tf.float64, size=count),
         tf.TensorArray(tf.float32, size=count)))
    return squares.stack(), clips.stack()

  squares, clips = draw(_secret_key())
  clip.assign(initial)
  return initial, squares.numpy(), clips.numpy().astype(np.float64)


@pytest.mark.parametrize("count_stddev", [1.2, None], ids=["given", "default"])
def test_adaptive_clipping_noises_the_gradient_and_the_count_as_the_split_says(tmp_path,
                                                                               count_stddev):
  """Andrew et al. (2021): the gradient sum (sensitivity C) gets std σ_Δ C and the centered
  unclipped count (sensitivity 1/2) std σ_b, one Gaussian mechanism of σ = (σ_Δ⁻² + (2σ_b)⁻²)^-½:
  σ_Δ = (σ⁻² - (2σ_b)⁻²)^-½. The count's noise is read off the clip update,
  C' = C exp(-η (clamp(0.5 + noisy count / B) - quantile)), from a count of 0."""
  quantile, rate = 0.5, 0.2
  extra = [f"--adaptive_clip_quantile={quantile}", f"--adaptive_clip_learning_rate={rate}"]
  if count_stddev:
    extra.append(f"--adaptive_clip_count_stddev={count_stddev}")
  config, ledger, model, optimizer = _train_path(tmp_path, *extra)
  sigma, batch = ledger.noise_multiplier, config.run.batch_size
  _assert_ledger_accounts(ledger, sigma, "gaussian", "rdp")
  count_std = count_stddev or batch / 20  # The documented default: expected batch / 20.
  assert ledger.mechanism["adaptive_clip_count_stddev"] == count_std
  gradient_sigma = (sigma ** -2 - (2 * count_std) ** -2) ** -0.5
  steps = 10_000
  initial, squares, clips = _adaptive_draws(optimizer, model, steps)
  assert initial == pytest.approx(CLIP)
  coordinates = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  # 6.5 million gradient draws: tolerance 0.17%, below the 1.3% split of the default σ_b.
  measured = math.sqrt(np.sum(squares) / (steps * coordinates))
  assert abs(measured / (gradient_sigma * CLIP) - 1) < _tolerance(steps * coordinates), (
      measured, gradient_sigma * CLIP, sigma * CLIP)
  below = quantile - np.log(clips / initial) / rate
  assert np.all((below > 0) & (below < 1))  # Never clamped: the count is read exactly.
  noisy_count = batch * (below - 0.5)
  _assert_std(noisy_count, count_std, what="unclipped count")  # 10,000 draws: tolerance 4.2%.


def _discrete_gaussian_log_pmf(support, center, scale):
  log_weights = -np.square(support - center) / (2 * scale ** 2)
  return log_weights - special.logsumexp(log_weights)


def _subsampled_divergences(order, q, noise_multiplier, shift):
  """Both Rényi divergences of order `order` between N_Z(0, s²) and the Poisson-subsampled
  (1 - q) N_Z(0, s²) + q N_Z(shift, s²), s = σ shift, by summation over the integers that carry
  all the mass of either sum (the tilted terms peak near order * shift)."""
  scale = noise_multiplier * shift
  reach = int(math.ceil(60 * scale + (order + 2) * shift))
  support = np.arange(-reach, reach + 1, dtype=np.float64)
  without = _discrete_gaussian_log_pmf(support, 0, scale)
  shifted = _discrete_gaussian_log_pmf(support, shift, scale)
  with_one = (np.logaddexp(math.log1p(-q) + without, math.log(q) + shifted) if q < 1
              else shifted)
  forward = special.logsumexp(order * with_one + (1 - order) * without) / (order - 1)
  backward = special.logsumexp(order * without + (1 - order) * with_one) / (order - 1)
  return forward, backward


def _exact_rdp(orders, q, noise_multiplier, shift=3):
  return np.array([max(_subsampled_divergences(a, q, noise_multiplier, shift)) for a in orders])


def _accountant_rdp(orders, q, noise_multiplier):
  """The accountant's bound for one discrete Gaussian step."""
  return np.array([accounting.subsampled_rdp_any_mechanism(
      lambda a: a / (2 * noise_multiplier ** 2), q, a) for a in orders])


@pytest.mark.parametrize("noise_multiplier", [0.8, 1.5, 3.0])
def test_discrete_gaussian_subsampled_rdp_bound_holds_against_direct_summation(noise_multiplier):
  """At integer shifts the divergence is computed exactly (to float precision). The bound must
  never be below it; it is tight at order 2 (where Zhu & Wang's bound is exact) and unsampled."""
  orders = list(range(2, 33)) + [48, 64, 96, 128, 192, 256]
  for q in (0.01, 0.1, 0.5):
    for shift in (1, 3):
      exact = _exact_rdp(orders, q, noise_multiplier, shift)
      bound = _accountant_rdp(orders, q, noise_multiplier)
      assert np.all(bound >= exact * (1 - 1e-9)), (q, shift, np.flatnonzero(bound < exact))
      assert bound[0] == pytest.approx(exact[0], rel=1e-9)  # Order 2.
  # Unsampled: exactly α shift² / (2 s²) = α / (2σ²), the curve the accountant composes.
  for order in (2, 5, 32):
    unsampled = max(_subsampled_divergences(order, 1.0, noise_multiplier, 2))
    assert unsampled == pytest.approx(order / (2 * noise_multiplier ** 2), rel=1e-9)
    assert accounting.subsampled_rdp_any_mechanism(
        lambda a: a / (2 * noise_multiplier ** 2), 1.0, order) == pytest.approx(unsampled)


def test_a_discrete_gaussian_run_reports_an_epsilon_above_the_exact_one(tmp_path):
  """A tfdp.train run with --noise=discrete_gaussian finishes and reports ε; the ε of the exact
  subsampled divergences (1-D, integer shift) over the same orders and steps, converted by the same
  RDP-to-(ε, δ) rule, is a lower bound for it, and the bound is not absurdly loose (at these
  parameters the general subsampling bound reports about 1.65 times the exact ε)."""
  from tfdp import train  # pylint: disable=import-outside-toplevel
  output = tmp_path / "run"
  flags.FLAGS(["tfdp.train", f"--flagfile={QUICKSTART}", "--noise=discrete_gaussian",
               "--epochs=1", "--noexport", f"--output_dir={output}"])
  try:
    train.main(["tfdp.train"])
  finally:
    flags.FLAGS.unparse_flags()
  with open(output / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["noise"] == "discrete_gaussian" and metrics["accountant"] == "rdp"
  # The float64 sampler is not exact: its distance from N_Z is in δ, small at this size.
  assert metrics["steps"] == 12 and 0 < metrics["delta_float_tail"] < 1e-6
  epsilon = metrics["epsilon"]
  assert 0 < epsilon <= 3.0 and metrics["test_accuracy"] > 0.3  # Chance is 0.1.
  orders = list(range(2, 257))  # The orders the accountant uses.
  sigma, q = metrics["noise_multiplier"], metrics["sampling_probability"]
  exact = rdp_privacy_accountant.compute_epsilon(
      orders, metrics["steps"] * _exact_rdp(orders, q, sigma), metrics["delta"])[0]
  assert exact <= epsilon <= 3 * exact, (exact, epsilon)


def test_keras_fit_draws_fresh_noise_at_every_step():
  """A model whose every gradient is 0 (Dense without bias on zero images) at learning rate 1:
  each step's update is -noise / B. The noise of different steps must differ and be uncorrelated;
  a key fixed when fit traces its step would repeat one draw (correlation 1) with the right std."""
  sigma, clip, batch, size = 2.0, 1.5, 8, 64
  inputs = tf.keras.Input((8, 8, 1))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(16, use_bias=False)(
      tf.keras.layers.Flatten()(inputs)))
  private = tfdp.keras.make_private(
      model, optimizer="dp_sgd", learning_rate=1.0, l2_norm_clip=clip, noise_multiplier=sigma,
      target_delta=1e-3, epochs=3, train_size=size, batch_size=batch)
  private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  kernel = private.trainable_variables[0]
  weights = [kernel.numpy().copy()]
  record = tf.keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda step, logs: weights.append(kernel.numpy().copy()))
  images, labels = np.zeros((size, 8, 8, 1), np.float32), np.zeros(size, np.int64)
  private.fit(tfdp.data.poisson_dataset(images, labels, batch_size=batch, physical_batch_size=4),
              epochs=3, verbose=0, callbacks=[record])
  noise = -np.diff(np.stack(weights).astype(np.float64), axis=0).reshape(len(weights) - 1, -1)
  noise *= batch
  steps, coordinates = noise.shape
  assert steps == 24 and coordinates == 1024
  unit = noise / np.linalg.norm(noise, axis=1, keepdims=True)
  cosines = (unit @ unit.T)[np.triu_indices(steps, 1)]
  # Independent zero-mean steps: each cosine is about N(0, 1/d). 276 pairs at 6.5 / sqrt(d) each
  # (P < 1e-10 apiece); their mean over pairs at Z / sqrt(pairs d).
  assert np.max(np.abs(cosines)) < 6.5 / math.sqrt(coordinates), np.max(np.abs(cosines))
  assert abs(np.mean(cosines)) < Z / math.sqrt(len(cosines) * coordinates)
  _assert_std(noise, sigma * clip)  # 24,576 draws: tolerance 2.7%.
