"""`make_private`: a Keras model whose `compile` + `fit` train with DP-SGD and an honest ε.

    private = tfdp.keras.make_private(model, optimizer="dp_sgd", learning_rate=0.5,
                                      l2_norm_clip=1.0, target_epsilon=3.0, target_delta=1e-5,
                                      epochs=10, train_size=len(x), batch_size=256)
    private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = private.fit(tfdp.data.poisson_dataset(x, y, batch_size=256), epochs=10)
    history.history["epsilon"]       # ε after every epoch (RDP), and "epsilon_pld"

Privacy argument. Each `fit` step is one step of DP-SGD, the mechanism `tfdp.train` runs, through
the same code (tfdp.training.steps.TrainStep): the step's examples are a Poisson draw with probability
q = batch_size / N (tfdp.data.poisson_dataset, secret coins); each example's gradient (the mean
over its `augmult` copies) is clipped to L2 norm C, per group to C / sqrt(G) with `clip_groups`,
by the per-example engine, so the step's clipped sum has L2 sensitivity C under adding or removing
one example; Gaussian noise of std σC is added once per logical step, however many physical
chunks the draw took, with a key from a CSPRNG-seeded generator that Keras does not track (no
checkpoint, config or export holds it); the sum is divided by the public expected batch size,
and the optimizer's update reads only that noised mean (post-processing). What carries over
between steps is the weights and the optimizer's slots, functions of earlier noised releases
only, and nothing else of the data: the accumulators hold one step's sums and are zeroed when it
is applied. The training logs hold no figure computed from the private batches. So T steps are
the adaptive composition of T Poisson-subsampled Gaussian mechanisms, which the RDP accountant
bounds (Mironov et al. 2019, Abadi et al. 2016), with PLD beside it; the ledger counts T in a
model variable that every checkpoint of the model holds, so a resumed `fit` continues the same ε,
and a guard in the compiled step refuses any step past the target. Starting weights that private
training produced bring that training's phases (tfdp.keras.weights_ledger), composed ahead of
the T steps: the new steps start from post-processing of those releases, on the same data.

Under a MirroredStrategy scope, Keras deals each step's chunks out to the replicas; each replica
clips its share, the sums are all-reduced, and every replica draws the noise from replica 0's key,
so the step is the single-device one (tfdp.training.distribution says why).
"""

import dataclasses
import os
from typing import Callable, Optional

import h5py
import tensorflow as tf

from tfdp.data import fit_input
from tfdp.dp import clipping
from tfdp.dp import randomness
from tfdp.keras import callbacks as callbacks_lib
from tfdp.keras import keras3
from tfdp.keras import losses as losses_lib
from tfdp.keras import plan as plan_lib
from tfdp.keras import validation
from tfdp.keras import weights_ledger
from tfdp import optimizers
from tfdp import precision
from tfdp.privacy import mechanisms
from tfdp.privacy import ledger as ledger_lib
from tfdp import config as config_lib
from tfdp.training import distribution
from tfdp.training import planning
from tfdp.training import steps as steps_lib


@dataclasses.dataclass(frozen=True)
class _StepSettings:
  """How the private step is built (a plain object, so Keras tracks none of it twice)."""
  optimizer: object
  engine: str
  clip_groups: object
  augmult: int
  augment: Callable
  jit_compile: bool
  physical_batch_size: Optional[int]
  scaling: object = None  # tfdp.dp.groups.Scaling: clip, or normalize.
  norm: str = "l2"  # "l1" for Laplace noise.
  loss_scale: float = 1.0  # A fixed, public power of two, for a mixed_float16 model.


class PrivateModel(tf.keras.Model):
  """A functional Keras model trained by DP-SGD in `fit` (build it with `make_private`).

  It shares its layers and weights with the model it was made from. `fit` takes only a
  `tfdp.data.poisson_dataset` (or, with sampling='shuffle', what Keras's `fit` takes) and adds
  `epsilon` and `epsilon_pld` to the logs of every epoch. `evaluate` and `predict` are Keras's
  own; `save_weights` and `save` also record the weights' ledger (tfdp.keras.weights_ledger) and
  write it beside the file, so the weights carry the privacy they spent.
  """

  def _set_up_privacy(self, plan: plan_lib.PrivacyPlan, optimizer, ledger, *, engine: str,
                      clip_groups, augmult: int, augment: Optional[Callable], jit_compile: bool,
                      physical_batch_size: Optional[int], scaling=None, norm: str = "l2",
                      loss_scale: float = 1.0):
    self._plan = plan
    self._dp = _StepSettings(optimizer, engine, clip_groups, augmult,
                             augment or (lambda images: images), jit_compile,
                             physical_batch_size, scaling, norm, loss_scale)
    self._ledger = ledger
    self._max_steps = ledger.max_steps()
    # T, the noisy steps taken: a model variable, so every checkpoint of the model carries it.
    self.privacy_steps = tf.Variable(  # Every replica counts the same steps: keep the first's.
        0, dtype=tf.int64, trainable=False, name="privacy_steps",
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self._noise_keys = [randomness.SecretKeyStream()]  # In a list: untracked, never saved.
    self._private_step = None
    self._mirrors = []  # Callbacks that copy the weights out (keras3.MirrorWeights).

  @property
  def privacy_ledger(self) -> ledger_lib.PrivacyLedger:
    """The ledger (tfdp.privacy.ledger) with the steps taken so far."""
    self._ledger.steps = int(self.privacy_steps.numpy())
    return self._ledger

  @property
  def max_privacy_steps(self) -> Optional[int]:
    """The steps the target ε allows (None without a target)."""
    return self._max_steps

  def compile(self, loss=None, metrics=None, optimizer=None, **kwargs):
    """Keras's compile with the DP optimizer make_private built; `loss` as in Keras (its
    reduction is ignored: each example's loss is clipped on its own)."""
    if optimizer is not None and optimizer is not self._dp.optimizer:
      raise ValueError("a private model trains with the DP optimizer make_private built; "
                       "pass the optimizer to make_private, not to compile")
    if kwargs.get("jit_compile"):
      raise ValueError("use make_private(jit_compile=True): it compiles each chunk's clipped "
                       "sum with XLA, while the step itself stays a graph")
    kwargs.pop("jit_compile", None)
    loss = keras3.keras_2_object(loss, "losses")  # A Keras 3 user's loss and metric objects.
    metrics = [keras3.keras_2_object(m, "metrics") for m in metrics] if isinstance(
        metrics, (list, tuple)) else metrics
    super().compile(optimizer=self._dp.optimizer, loss=loss, metrics=metrics,
                    jit_compile=False, **kwargs)
    dp = self._dp
    self._private_step = [steps_lib.TrainStep(
        self, dp.optimizer, dp.augment, private=True,
        expected_batch_size=self._plan.batch_size, engine=dp.engine,
        clip_groups=dp.clip_groups, scaling=dp.scaling, norm=dp.norm, augmult=dp.augmult,
        jit_compile=dp.jit_compile, loss_fn=losses_lib.per_example_loss(loss),
        loss_scale=dp.loss_scale)]

  def apply_noise_schedule(self) -> None:
    """Sets the next step's noise std to the ledger's schedule (no-op for a constant σ)."""
    ledger = self._ledger
    if ledger.epoch_factors and self._private_step:
      step = int(self.privacy_steps.numpy())
      self._private_step[0].set_noise_factor(ledger.noise_multiplier_at(step)
                                             / ledger.noise_multiplier)

  def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, **kwargs):
    """Keras's fit on Poisson-sampled steps; refuses input the accountant does not describe."""
    if self._private_step is None:
      raise ValueError("compile the private model (with its loss) before fit")
    _refuse_weights(kwargs)
    self._check_input(x, y, batch_size)
    callbacks = list(callbacks or [])
    if not any(isinstance(c, callbacks_lib.PrivacyBudget) for c in callbacks):
      callbacks.insert(0, callbacks_lib.PrivacyBudget())  # First: later callbacks see ε.
    callbacks.extend(self._mirrors)
    drawn = fit_input.sampling_plan(x)
    if drawn is not None and kwargs.get("steps_per_epoch") is None:
      # One iterator for the whole fit: Keras would otherwise start the dataset anew each epoch
      # (tens of ms, more than a small model's epoch), and the next epoch's draw is prefetched.
      # Each epoch is still ceil(N / batch_size) fresh Poisson steps.
      x, kwargs["steps_per_epoch"] = x.repeat().prefetch(1), drawn.steps_per_epoch
    return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, **kwargs)

  def _check_input(self, x, y, batch_size) -> None:
    drawn = fit_input.sampling_plan(x)
    if self._plan.sampling == "shuffle":
      if drawn is not None:
        raise ValueError("this model was made with sampling='shuffle'; a poisson_dataset "
                         "needs make_private(sampling='poisson')")
      if batch_size not in (None, self._plan.batch_size):
        raise ValueError(f"fit(batch_size={batch_size}) differs from the batch_size "
                         f"{self._plan.batch_size} the accountant was given")
      return
    if drawn is None:
      raise ValueError(
          "a private fit takes the dataset tfdp.data.poisson_dataset(images, labels, "
          "batch_size=..., physical_batch_size=...) returns, unchanged: the accountant assumes "
          "Poisson sampling, which a plain batched dataset or NumPy arrays do not give. To train "
          "on fixed-size shuffled batches with ε as the usual approximation, make the model with "
          f"make_private(..., sampling='shuffle'). Got {type(x).__name__}.")
    if y is not None:
      raise ValueError("poisson_dataset holds the labels; call fit(dataset) without y")
    if (drawn.num_examples, drawn.batch_size) != (self._plan.train_size, self._plan.batch_size):
      raise ValueError(f"the dataset draws batches of {drawn.batch_size} expected from "
                       f"{drawn.num_examples} examples, but make_private planned "
                       f"batch_size={self._plan.batch_size} of train_size="
                       f"{self._plan.train_size}: ε would be wrong")
    if drawn.randomness == "reproducible":
      self._ledger.randomness = "reproducible"  # Sticky: such steps have no guarantee.

  def train_step(self, data):
    """One logical DP-SGD step; logs hold nothing computed from the private batch."""
    images, labels, masks = self._step_inputs(data)
    step = self._private_step[0]

    def take_step():
      if tf.distribute.get_replica_context().num_replicas_in_sync > 1:
        # This replica's share of the step's chunks: all-reduced sums, the chief's noise key.
        step.replica_step(images, labels, masks, self._noise_keys[0].next())
      else:
        step.step_in_graph(images, labels, masks, self._noise_keys[0].next())
      self.privacy_steps.assign_add(1)
      return tf.constant(True)

    if self._max_steps is None:
      take_step()
    else:  # A step past the target is never taken, whatever the callbacks do.
      tf.cond(self.privacy_steps < self._max_steps, take_step, lambda: tf.constant(False))
    return {}

  def _step_inputs(self, data):
    if fit_input.is_poisson_element(data):
      return data[fit_input.IMAGES], data[fit_input.LABELS], data[fit_input.MASK]
    if self._plan.sampling != "shuffle":
      raise ValueError("a private fit takes tfdp.data.poisson_dataset elements")
    x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
      raise ValueError("sample weights would change each example's clipped contribution; "
                       "a private fit does not take them")
    size = tf.shape(x)[0]
    tf.debugging.assert_less_equal(size, self._plan.batch_size,
                                   message="a shuffled batch is larger than the planned batch_size")
    return _as_chunks(x, y, self._dp.physical_batch_size or self._plan.batch_size)

  def privacy_report(self) -> dict:
    """What the model card and metrics say of the privacy of this model's training."""
    ledger = self.privacy_ledger
    return {**ledger.mechanism_report(), "batch_size": self._plan.batch_size,
            "train_examples": self._plan.train_size, "optimizer": ledger.mechanism["optimizer"],
            "augmult": self._dp.augmult, "parameters": ledger.coordinates,
            "prior_phases": ledger.prior_phases or None}

  def register_weights(self) -> Optional[str]:
    """Records (tfdp.keras.weights_ledger) that the current weights came from this ledger, so
    make_private of a model holding them continues its ε; returns their fingerprint, None
    while nothing was spent. PrivacyBudget calls it after every epoch and at the end of fit."""
    return weights_ledger.register(self, self.privacy_ledger)

  def save_weights(self, filepath, overwrite=True, save_format=None, options=None):
    """Keras's save_weights; also registers the weights and writes their ledger beside them,
    `<filepath>.tfdp-ledger.json`, for make_private(prior_ledger=...) on another machine.

    An .h5 file holds the layers' weights as the plain model loads them, and the step count as
    the file's `tfdp_privacy_steps` attribute, which `load_weights` restores.
    """
    if _is_h5(filepath, save_format):
      result = tf.keras.Model(self.inputs, self.outputs).save_weights(
          filepath, overwrite=overwrite, save_format=save_format, options=options)
      with h5py.File(filepath, "a") as f:
        f.attrs[_H5_STEPS] = int(self.privacy_steps.numpy())
    else:
      result = super().save_weights(filepath, overwrite=overwrite, save_format=save_format,
                                    options=options)
    self._record_saved(filepath)
    return result

  def load_weights(self, filepath, *args, **kwargs):
    """Keras's load_weights; from an .h5 file save_weights wrote, the step count too."""
    steps = None
    if _is_h5(filepath, None) and os.path.isfile(filepath):
      with h5py.File(filepath, "r") as f:
        steps = int(f.attrs[_H5_STEPS]) if _H5_STEPS in f.attrs else None
    if steps is None:
      return super().load_weights(filepath, *args, **kwargs)
    result = tf.keras.Model(self.inputs, self.outputs).load_weights(filepath, *args, **kwargs)
    self.privacy_steps.assign(steps)
    return result

  def save(self, filepath, *args, **kwargs):
    """Saves the model as a plain Keras model over the same layers (no DP optimizer, no step
    counter: `tf.keras.models.load_model` reads it back anywhere), registers the weights and
    writes their ledger beside the file, as save_weights does."""
    result = tf.keras.Model(self.inputs, self.outputs, name=self.name).save(
        filepath, *args, **kwargs)
    self._record_saved(filepath)
    return result

  def _record_saved(self, filepath) -> None:
    self.register_weights()
    if isinstance(filepath, (str, os.PathLike)):  # Not an open h5py file.
      weights_ledger.write_sidecar(filepath, self.privacy_ledger)


def _refuse_weights(fit_kwargs) -> None:
  """class_weight and sample_weight scale each example's loss before its gradient is clipped:
  clipping then undoes them for every example above the bound, so they do not do what they say."""
  for name in ("class_weight", "sample_weight"):
    if fit_kwargs.get(name) is not None:
      raise ValueError(f"a private fit does not take {name}: each example's gradient is clipped "
                       "to the same norm, which undoes a weight on its loss; leave it out")


_H5_STEPS = "tfdp_privacy_steps"  # The step count in an .h5 file of save_weights.


def _is_h5(filepath, save_format) -> bool:
  """Whether `filepath` is a path Keras writes as HDF5 (its rule: the format, else the suffix);
  an open h5py.File is left to Keras."""
  if not isinstance(filepath, (str, os.PathLike)):
    return False
  if save_format is not None:
    return save_format.lower() in ("h5", "hdf5")
  return os.fspath(filepath).endswith((".h5", ".hdf5"))


def _as_chunks(x, y, rows: int):
  """A batch [B, ...] as [n, rows, ...] chunks, the last padded with zeros, and their [n, rows]
  mask: the shape the private step takes."""
  size = tf.shape(x)[0]
  chunks = (size + rows - 1) // rows
  pad = chunks * rows - size

  def split(t):
    padded = tf.concat([t, tf.zeros(tf.concat([[pad], tf.shape(t)[1:]], 0), t.dtype)], 0)
    return tf.reshape(padded, tf.concat([[chunks, rows], tf.shape(t)[1:]], 0))

  return split(x), split(y), split(tf.ones([size], tf.float32))


def _refuse_multi_worker() -> None:
  """Keras would shard the steps themselves among workers: not one step on every worker."""
  if distribution.worker(tf.distribute.get_strategy())[1] > 1:
    raise ValueError("a private Keras model runs under one host's MirroredStrategy, not across "
                     "workers yet; use python -m tfdp.train --distribution=multi_worker")


def _dp_optimizer(optimizer, learning_rate, momentum, settings, sigma, model):
  """The tfdp DP optimizer: built from its name with the mechanism's query
  (tfdp.privacy.mechanisms), or a given one checked against the plan."""
  if isinstance(optimizer, str):
    if not optimizers.has_privacy_proof(optimizer):  # DiceSGD, unproven, stays on the CLI.
      raise ValueError(f"optimizer {optimizer!r} is not a DP optimizer with a proof; valid: "
                       f"{sorted(n for n in optimizers.OPTIMIZERS if optimizers.has_privacy_proof(n))}")
    query = planning.make_query(settings, sigma, model)
    return optimizers.build_optimizer(
        optimizer, learning_rate or optimizers.default_learning_rate(optimizer),
        momentum=momentum, dp_query=query)
  if any("LossScaleOptimizer" in cls.__name__ for cls in type(optimizer).__mro__):
    raise ValueError("Keras's LossScaleOptimizer is refused: its dynamic loss scale changes after "
                     "any step whose gradients overflowed, a function of the private data carried "
                     "from step to step. Pass the DP optimizer's name and make_private(..., "
                     "loss_scale=S), a fixed power of two, for a mixed_float16 model")
  if not hasattr(optimizer, "noised_mean") or getattr(optimizer, "needs_plain_sum", False):
    raise ValueError("optimizer must be a DP optimizer name or an instance built by "
                     f"tfdp.optimizers.build_optimizer, got {type(optimizer).__name__}")
  mechanism = mechanisms.select(settings)
  if mechanism.name != "gaussian":  # The instance's query is DP-SGD's, not this mechanism's.
    raise ValueError(f"a DP optimizer instance carries its own Gaussian noise query, but these "
                     f"settings select the {mechanism.name} mechanism: pass the optimizer's "
                     "name (e.g. 'dp_sgd') so make_private builds the mechanism's query")
  if abs(optimizer.noise_multiplier - sigma) > 1e-9 * sigma or optimizer.adaptive or \
      abs(optimizer.l2_norm_clip - settings.l2_norm_clip) > 1e-12:
    raise ValueError(f"the optimizer's noise_multiplier {optimizer.noise_multiplier:g} and clip "
                     f"{optimizer.l2_norm_clip:g} must be the plan's σ = {sigma:g} and "
                     f"l2_norm_clip = {settings.l2_norm_clip:g} (tfdp.privacy.calibrate_noise "
                     "gives σ)")
  return optimizer


def make_private(model: tf.keras.Model, *, optimizer, l2_norm_clip: float, target_delta: float,
                 epochs: int, train_size: int, batch_size: int,
                 target_epsilon: Optional[float] = None, noise_multiplier: Optional[float] = None,
                 learning_rate: Optional[float] = None, momentum: float = 0.0, clip_groups=None,
                 engine: str = "fast", augmult: int = 1, augment: Optional[Callable] = None,
                 sampling: str = "poisson", physical_batch_size: Optional[int] = None,
                 jit_compile: bool = False, prior_ledger=None, noise: str = "gaussian",
                 l1_norm_clip: float = 1.0, clipping_mode: str = "clip",
                 normalize_gamma: float = 0.01, layer_noise: str = "uniform",
                 adaptive_clip_quantile: Optional[float] = None,
                 adaptive_clip_learning_rate: float = 0.2,
                 adaptive_clip_count_stddev: Optional[float] = None,
                 discrete_rounding_inflation: float = 0.01,
                 noise_schedule: str = "constant",
                 noise_schedule_end_factor: float = 0.5, noise_schedule_step_epochs: int = 1,
                 noise_schedule_step_gamma: float = 0.9,
                 loss_scale: float = 1.0) -> PrivateModel:
  """A private copy of `model` (same layers and weights) whose `fit` runs DP-SGD.

  σ is calibrated to `target_epsilon` over `epochs` epochs before anything trains (or taken as
  `noise_multiplier`, ε then only reported); fit stops before a step would exceed the target.
  The plan, the mechanism and the ledger are the command line's (tfdp.privacy.run_plan,
  tfdp.privacy.mechanisms): the same settings give the same σ, ε and statement as tfdp.train.

  Args:
    model: a functional or Sequential Keras model, one input and one output (logits or
      probabilities, as its loss expects): a `tf.keras` (Keras 2) model, or a Keras 3 model
      (`import keras`, TensorFlow backend) of Keras's own layers, which trains through its Keras 2
      twin and receives the trained weights after every epoch (tfdp.keras.keras3). tfdp.keras.check runs first and refuses, by name,
      every layer that mixes the examples of a batch or keeps state fit updates (BatchNorm:
      tfdp.keras.fix replaces it) and every layer it cannot prove per-example.
    optimizer: a DP optimizer name ('dp_sgd', 'dp_adam', 'dp_rmsprop', 'dp_adagrad') or an
      instance from tfdp.optimizers.build_optimizer whose σ and clip match the plan. DiceSGD,
      which has no proof, is refused here: it is a labelled baseline of the command line only.
    l2_norm_clip: C, the L2 bound on each example's gradient.
    target_delta: δ, below 1 / train_size.
    epochs: planned epochs, ceil(train_size / batch_size) steps each.
    train_size: N, the number of private training examples.
    batch_size: the expected batch size q N of each step.
    target_epsilon / noise_multiplier: exactly one (see tfdp.keras.plan.PrivacyPlan).
    learning_rate, momentum: the update rule's (default: the optimizer's usual learning rate).
    clip_groups: None (one clip), an int K (K groups of consecutive layers) or 'layer'; each
      group is clipped to C / sqrt(K), so the sensitivity stays C.
    engine: the per-example engine, 'fast' (closed forms per layer) or 'vectorized'.
    augmult: augmented copies per example; its gradient is the mean over them, clipped as one.
    augment: images -> images, applied to every copy inside the step (public randomness).
    sampling: 'poisson' (tfdp.data.poisson_dataset) or 'shuffle' (fixed-size batches, ε the
      usual approximation, labelled so).
    physical_batch_size: with sampling='shuffle', rows per chunk of fit's batches (default: the
      whole batch); with 'poisson', poisson_dataset's own physical_batch_size decides. Memory,
      never privacy: noise is added once per batch whatever the chunks.
    jit_compile: compile each chunk's clipped sum with XLA.
    prior_ledger: where `model`'s weights came from, when they were trained privately on
      another machine: a PrivacyLedger or the path of its JSON (the `<file>.tfdp-ledger.json`
      that PrivateModel.save_weights writes). Weights this machine trained are found without it.
    noise ... noise_schedule_step_gamma: the mechanism, named and valued as tfdp.train's flags of
      the same names (tfdp.config.PrivacyConfig): 'laplace' (L1 clip l1_norm_clip, engine
      'vectorized', PLD), 'discrete_gaussian', per-group noise (layer_noise with clip_groups),
      adaptive clipping (adaptive_clip_quantile), automatic clipping (clipping_mode='normalize'),
      and a noise schedule over the epochs.
    loss_scale: for a model built under Keras's mixed_float16 policy, a fixed, public power of
      two S: each example's loss is scaled by S before the float16 backward pass and its gradient
      divided by S after, in float32 (tfdp.precision). Keras's dynamic loss scale would follow
      the private data; an example whose gradient overflows is dropped (it adds 0).

  Weights trained privately before (by a PrivateModel, in memory, or saved and loaded back:
  tfdp.keras.weights_ledger) continue their ledger: its phases are composed ahead of the new
  steps, so ε, the budget and the model card cover both, and `target_epsilon` is the total.
  Such weights are refused when their δ, sampling or randomness differ from this plan's, or
  when the target leaves no room for a step after them.
  """
  _refuse_multi_worker()
  keras_3_model = model if keras3.is_keras_3_model(model) else None
  if keras_3_model is not None:  # Trained through its Keras 2 twin (tfdp.keras.keras3).
    model = keras3.twin(keras_3_model)
  validation.check(model)  # Before anything else: every layer per-example, no BatchNorm.
  precision.check_loss_scale(getattr(getattr(model, "dtype_policy", None), "name", "float32"),
                             loss_scale)
  plan = plan_lib.PrivacyPlan(l2_norm_clip=l2_norm_clip, target_delta=target_delta,
                              epochs=epochs, train_size=train_size, batch_size=batch_size,
                              target_epsilon=target_epsilon, noise_multiplier=noise_multiplier,
                              sampling=sampling)
  if engine not in clipping.CLIPPING_ENGINES:
    raise ValueError(f"unknown engine {engine!r}; valid: {sorted(clipping.CLIPPING_ENGINES)}")
  privacy = config_lib.PrivacyConfig(  # The command line's checks of the same settings.
      epsilon=target_epsilon, delta=target_delta, noise_multiplier=noise_multiplier,
      l2_norm_clip=l2_norm_clip, clipping=engine, clip_groups=clip_groups,
      clipping_mode=clipping_mode, normalize_gamma=normalize_gamma, noise=noise,
      l1_norm_clip=l1_norm_clip, discrete_rounding_inflation=discrete_rounding_inflation,
      layer_noise=layer_noise, adaptive_clip_quantile=adaptive_clip_quantile,
      adaptive_clip_learning_rate=adaptive_clip_learning_rate,
      adaptive_clip_count_stddev=adaptive_clip_count_stddev, noise_schedule=noise_schedule,
      noise_schedule_end_factor=noise_schedule_end_factor,
      noise_schedule_step_epochs=noise_schedule_step_epochs,
      noise_schedule_step_gamma=noise_schedule_step_gamma)
  name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
  settings = privacy.settings(name, batch_size, target_epsilon)
  prior_phases = _earlier_phases(model, plan, prior_ledger)
  ledger = plan.ledger(settings, privacy, augmult=augmult, prior_phases=prior_phases)
  ledger.coordinates = int(sum(v.shape.num_elements() for v in model.trainable_variables))
  dp_optimizer = _dp_optimizer(optimizer, learning_rate, momentum, settings,
                               ledger.noise_multiplier, model)
  private = PrivateModel(inputs=model.inputs, outputs=model.outputs, name=model.name)
  private._set_up_privacy(plan, dp_optimizer, ledger, engine=engine, clip_groups=clip_groups,  # pylint: disable=protected-access
                          augmult=augmult, augment=augment, jit_compile=jit_compile,
                          physical_batch_size=physical_batch_size, scaling=privacy.scaling,
                          norm=privacy.norm, loss_scale=loss_scale)
  weights_ledger.track(private)  # A later make_private of these variables sees its live ledger.
  if keras_3_model is not None:
    private._mirrors.append(keras3.MirrorWeights(keras_3_model))  # pylint: disable=protected-access
  return private


def _earlier_phases(model, plan: plan_lib.PrivacyPlan, prior_ledger) -> list:
  """The private phases that produced `model`'s weights (tfdp.keras.weights_ledger), checked
  against the plan and announced in one line; [] for fresh weights."""
  phases = weights_ledger.earlier_phases(model, prior_ledger)
  if phases:
    plan.check_prior(phases)
    steps = sum(int(phase["steps"]) for phase in phases)
    in_phases = f" in {len(phases)} phases" if len(phases) > 1 else ""
    print(f"these weights were trained privately before: {steps} steps{in_phases}, ε = "
          f"{weights_ledger.phases_epsilon(phases, plan.target_delta):.3g} at δ = "
          f"{plan.target_delta:g}; the new phase's ε adds to it")
  return phases
