"""--recipe=auto: a whole training configuration chosen from public facts, never from the data.

Tuning hyperparameters on the private data is itself a release: every trial's accuracy depends on
the data, and picking the best of them spends privacy that no reported ε covers (Papernot &
Steinke 2022). A recipe is the alternative: a rule, written down here and in docs/recipes.md,
that reads only facts a DP-SGD run treats as public and returns the configuration. The facts are

    N         the number of training examples (public in DP-SGD's accounting: it fixes q);
    shape     the image shape H x W x C and the number of classes (the model's interface);
    ε, δ      the target;
    budget    the wall-clock minutes the run may take, and the CPU kind (AVX-512 or not) that
              converts examples into minutes (tfdp.cpu; measured speeds, THROUGHPUT).

and the rule (calibrated on CIFAR-10 and PneumoniaMNIST; see docs/recipes.md for the figures):

    model     scatter_cnn with normalization=statistics (the ScatterNet prior costs no privacy
              and beats end-to-end CNNs at ε <= 8 on 2 cores); the statistics are a DP release
              composed into ε, with σ_n = NORMALIZATION_NOISE * max(1, 3 / ε), so that below
              ε = 3 they keep the share of the budget they have at ε = 3.
    optimizer DP-SGD, momentum 0.9, clip norm C = 0.1 (Tramèr & Boneh 2021).
    batch     B = the largest power of two <= N / 6, within [MIN_BATCH, MAX_BATCH], and at
              most the largest power of two <= N.
    lr        BASE_LEARNING_RATE * sqrt(B / MAX_BATCH).
    epochs    round(BASE_EPOCHS * (ε / 3) ** EPOCH_EXPONENT), within [MIN_EPOCHS, MAX_EPOCHS],
              then cut until the estimated time fits the budget (estimated_minutes).
    augment   none, augmult 1. Flips and translations in the feature cache with augmult 2
              (--augment=scatter_flip_shift) trained 2 points behind at equal epochs on CIFAR-10
              at ε = 3 for twice the compute, so the rule leaves them out.
    EMA       none: with about seven steps per epoch an average of the weights lags (decay 0.95
              gave 0.671 against 0.679 without, CIFAR-10 at ε = 3, 45 epochs).

Nothing of the pixels or labels is read: the choice is the same for any two datasets with the same
facts, which `choose` makes testable. The user may not also set a field the recipe chooses (the
run would then be tuned by hand after all, and the card would claim otherwise): `choose` refuses
such a flag by name. The run's metrics and model card record the recipe, its facts and choices.
"""

import dataclasses
import math
from typing import Dict, Iterable, Tuple

import os

from tfdp import cpu
from tfdp import names

RECIPES = ("none", "auto")
RULE = "auto-1"  # Changes with any constant below, so that a card names the rule it followed.

NORMALIZATION_NOISE = 8.0
CLIP_NORM = 0.1
MOMENTUM = 0.9
MIN_BATCH, MAX_BATCH = 256, 8192
EXAMPLES_PER_BATCH = 6  # B <= N / 6: at least six steps per epoch.
BASE_LEARNING_RATE = 4.0  # At B = MAX_BATCH (Tramèr & Boneh's CIFAR-10 ScatterNet CNN).
BASE_EPOCHS = 45  # At ε = 3.
EPOCH_EXPONENT = 0.5
MIN_EPOCHS, MAX_EPOCHS = 15, 120
# Head rows (an example's augmult copies count once each) per second on 2 cores, measured with
# flags/cifar10_cpu_eps3.flags; a conservative figure for each CPU kind. Feature extraction: images
# per second of the scattering front, per view.
THROUGHPUT = {"avx512": {"rows": 2400.0, "features": 400.0},
              "avx2": {"rows": 700.0, "features": 200.0}}
REFERENCE_CORES = 2
OVERHEAD_MINUTES = 3.0  # Loading, DP statistics, evaluation and export.

# The fields a recipe chooses, by flag name: setting any of them with --recipe=auto is refused.
CHOSEN_FLAGS = ("model", "model_kwargs", "normalization_noise_multiplier", "optimizer",
                "batch_size", "learning_rate", "momentum", "l2_norm_clip", "noise_multiplier",
                "epochs", "augment", "augmult", "ema_decay", "lr_schedule", "clipping",
                "clip_groups")


@dataclasses.dataclass(frozen=True)
class Facts:
  """What the rule may read: public facts about the task (see the module docstring)."""
  num_train: int
  input_shape: Tuple[int, int, int]
  num_classes: int
  epsilon: float
  delta: float
  budget_minutes: float
  cpu_kind: str  # A key of THROUGHPUT.
  cores: int

  def as_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)


def check_name(name: str) -> None:
  names.check("recipe", name, RECIPES)


def facts(dataset, epsilon: float, delta: float, budget_minutes: float) -> Facts:
  """The Facts of a loaded tfdp.data.Dataset (only its size, shape, classes and kind) and of
  this machine."""
  return Facts(num_train=int(dataset.num_train), input_shape=tuple(dataset.input_shape),
               num_classes=int(dataset.num_classes),
               epsilon=float(epsilon), delta=float(delta), budget_minutes=float(budget_minutes),
               cpu_kind="avx512" if "avx512f" in cpu.cpu_features() else "avx2",
               cores=len(os.sched_getaffinity(0)))


def _power_of_two_at_most(value: float) -> int:
  return 2 ** int(math.floor(math.log2(max(value, 1))))


def batch_size(num_train: int) -> int:
  """The largest power of two <= N / 6 within [MIN_BATCH, MAX_BATCH], and never above N."""
  batch = min(max(_power_of_two_at_most(num_train / EXAMPLES_PER_BATCH), MIN_BATCH), MAX_BATCH)
  return int(min(batch, _power_of_two_at_most(num_train)))


def normalization_noise(epsilon: float) -> float:
  return round(NORMALIZATION_NOISE * max(1.0, 3.0 / epsilon), 4)


def learning_rate(batch: int) -> float:
  return round(BASE_LEARNING_RATE * math.sqrt(batch / MAX_BATCH), 4)


def target_epochs(epsilon: float) -> int:
  epochs = round(BASE_EPOCHS * (epsilon / 3.0) ** EPOCH_EXPONENT)
  return int(min(max(epochs, MIN_EPOCHS), MAX_EPOCHS))


def estimated_minutes(facts: Facts, epochs: int) -> float:
  """Wall minutes of the whole run by THROUGHPUT: features, head steps and OVERHEAD_MINUTES."""
  speed = THROUGHPUT[facts.cpu_kind]
  scale = max(facts.cores, 1) / REFERENCE_CORES
  images = facts.num_train
  rows = facts.num_train * epochs
  return (images / (speed["features"] * scale) + rows / (speed["rows"] * scale)) / 60.0 \
      + OVERHEAD_MINUTES


def _check_shape(facts: Facts) -> None:
  height, width, _ = facts.input_shape
  if height % 4 or width % 4 or min(height, width) < 16:
    raise ValueError(
        f"--recipe=auto trains a ScatterNet head, which needs images whose height and width "
        f"are multiples of 4 and at least 16; these are {height}x{width}: resize them, or "
        "choose the model and hyperparameters by flags without --recipe")


def choose(facts: Facts) -> Dict[str, object]:
  """The rule: facts -> {config field path: value}. Deterministic; reads nothing else."""
  _check_shape(facts)
  batch = batch_size(facts.num_train)
  epochs = target_epochs(facts.epsilon)
  while epochs > 1 and estimated_minutes(facts, epochs) > facts.budget_minutes:
    epochs -= 1
  if estimated_minutes(facts, epochs) > facts.budget_minutes:
    raise ValueError(f"--time_budget_minutes={facts.budget_minutes:g} does not fit one epoch of "
                     f"{facts.num_train} examples (about {estimated_minutes(facts, 1):.0f} "
                     "minutes)")
  return {
      "model.name": "scatter_cnn",
      "model.options": (("normalization", "statistics"),),
      "privacy.normalization_noise_multiplier": normalization_noise(facts.epsilon),
      "privacy.l2_norm_clip": CLIP_NORM,
      "optimizer.name": "dp_sgd",
      "optimizer.learning_rate": learning_rate(batch),
      "optimizer.momentum": MOMENTUM,
      "run.batch_size": batch,
      "run.physical_batch_size": min(batch, 512),
      "run.epochs": epochs,
      "data.augment": "none",
      "data.augmult": 1,
  }


def refuse_chosen_flags(given: Iterable[str]) -> None:
  """ValueError naming the flags the user set that --recipe=auto chooses."""
  clashing = sorted(set(given) & set(CHOSEN_FLAGS))
  if clashing:
    raise ValueError(
        f"--recipe=auto chooses {', '.join('--' + name for name in clashing)} from public facts; "
        "setting them too would tune the run by hand: drop them, or drop --recipe")


def apply(config, facts: Facts):
  """A tfdp.config.Config with the recipe's choices and its record (RunConfig.recipe_record)."""
  chosen = choose(facts)
  sections = {}
  for path, value in chosen.items():
    section, field = path.split(".")
    sections.setdefault(section, {})[field] = value
  record = (("rule", RULE), ("facts", tuple(sorted(facts.as_dict().items()))),
            ("chosen", tuple(sorted(chosen.items()))),
            ("estimated_minutes", round(estimated_minutes(facts, chosen["run.epochs"]), 1)))
  sections.setdefault("run", {})["recipe_record"] = record
  return dataclasses.replace(config, **{
      section: dataclasses.replace(getattr(config, section), **fields)
      for section, fields in sections.items()})


def record_for_metrics(record) -> Dict[str, object]:
  """The recipe record as metrics.json and the model card hold it."""
  as_dict = dict(record)
  return {"rule": as_dict["rule"], "facts": dict(as_dict["facts"]),
          "chosen": {path: list(value) if isinstance(value, tuple) else value
                     for path, value in as_dict["chosen"]},
          "estimated_minutes": as_dict["estimated_minutes"],
          "looked_at_data": False,
          "statement": "chosen by the written rule of tfdp.recipes from public facts only (N, "
                       "image shape, classes, ε, δ, time budget, CPU kind); no hyperparameter was tuned on the private data"}
