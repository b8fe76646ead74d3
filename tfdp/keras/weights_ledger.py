"""Which ledger produced which weights: the privacy spent travels with a Keras model's weights.

`make_private(model)` asks this register, before it calibrates σ, whether `model`'s weights came
out of private training; if so, the earlier ledger's phases become the new ledger's
`prior_phases`, composed ahead of the new steps, and a target ε covers both.

The register has two halves:
- by identity: every variable of a live PrivateModel maps (weakly) to it, and its ledger is read
  live, so wrapping the same in-memory model again, or a new model built on some of its layers,
  sees every step taken so far, mid-fit too;
- by fingerprint: sha256 over the sorted digests of each trainable variable's shape and float32
  bytes (names and order play no part) -> the ledger's JSON, kept in memory and on disk under
  $TFDP_LEDGER_DIR (default ~/.cache/tfdp/ledgers), one file per fingerprint, written atomically.
  A PrivateModel records its weights at the end of every epoch and of `fit`, and in
  `save_weights` (which also writes the ledger beside the file, `<filepath>.tfdp-ledger.json`),
  `save` and `tfdp.export.export_saved_model`.

Why a found ledger never under-counts. A PrivateModel's weights change only in its private step,
and Keras runs callbacks and saves between steps, so the ledger recorded with a fingerprint counts
every step that produced those exact weights, plus its own earlier phases. Keras's own routes out
(ModelCheckpoint calls save_weights or save; load_weights, tf.train.Checkpoint restores and h5
files carry the bytes unchanged) bring back bit-identical weights, whose fingerprint finds that
ledger. The new phase starts from weights that are post-processing of the earlier releases, on the
same data, so the phases compose adaptively, as the steps of one run do. Every record found (each
live wrapper of the variables, the fingerprint's ledger, a given prior_ledger) is merged phase by
phase: a phase (its ledger's run_id) seen several times, as a snapshot and live, counts once with
the most steps any record saw, and phases of different runs all count, which can only over-count.

Limits: what is not found is counted as fresh weights, so these under-count.
- Weights changed after they left a PrivateModel (non-private fine-tuning, a cast or quantization,
  a layer replaced, a subset copied into another model) or that left it between the recorded
  points (get_weights or a raw tf.train.Checkpoint in the middle of an epoch) have no record:
  pass `make_private(..., prior_ledger=...)` with the ledger they came from.
- The register is per machine: for weights trained elsewhere, pass the sidecar file.
- Weights loaded into a model after make_private wrapped it are not looked up.
- A BackupAndRestore resume restores the new phase's steps; its earlier phases come from the
  starting weights, so re-make the model from the same weights (the same script does).
- Training outside tfdp (TF Privacy, plain Keras) leaves no record.
If the directory cannot be written, a warning says so and only this process remembers.
"""

import hashlib
import json
import os
import warnings
import weakref
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from tfdp import atomic
from tfdp.privacy import accounting
from tfdp.privacy import ledger as ledger_lib

LEDGER_DIR_ENV = "TFDP_LEDGER_DIR"
SIDECAR_SUFFIX = ".tfdp-ledger.json"  # Beside a saved file: <filepath>.tfdp-ledger.json.

_RECORDED: Dict[str, str] = {}  # Fingerprint -> ledger JSON, what this process recorded.
_LIVE: Dict[int, Tuple[weakref.ref, List[weakref.ref]]] = {}  # id(variable) -> (it, its wrappers).


def ledger_dir() -> str:
  """Where the register keeps its files: $TFDP_LEDGER_DIR, default ~/.cache/tfdp/ledgers."""
  return os.environ.get(LEDGER_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "tfdp", "ledgers")


def trained_variables(model) -> list:
  """The variables private training changes: those created trainable, frozen layers' included
  (a frozen layer keeps the weights an earlier phase trained)."""
  return [variable for variable in model.weights if variable.trainable]


def fingerprint(model) -> str:
  """sha256 (hex) of the model's trained variables: each one's shape and float32 bytes, hashed
  alone, the digests sorted, so neither names nor order (which freezing changes) matter."""
  digests = []
  for variable in trained_variables(model):
    values = np.ascontiguousarray(np.asarray(variable.numpy(), dtype=np.float32))
    digest = hashlib.sha256(repr(tuple(values.shape)).encode())
    digest.update(values.tobytes())
    digests.append(digest.digest())
  return hashlib.sha256(b"".join(sorted(digests))).hexdigest()


def spends_privacy(ledger: ledger_lib.PrivacyLedger) -> bool:
  """Whether any release of the ledger touched the data (a step, an earlier phase, the probe or
  the feature statistics); a ledger that spent nothing says nothing about the weights."""
  return bool(ledger.steps or ledger.prior_phases or ledger.probe_steps
              or ledger.normalization_released)


def register(model, ledger: ledger_lib.PrivacyLedger) -> Optional[str]:
  """Records that `model`'s current weights came from `ledger` (as it is now); returns their
  fingerprint, or None when the ledger spent nothing (fresh weights stay unrecorded)."""
  if not spends_privacy(ledger):
    return None
  key = fingerprint(model)
  text = ledger.to_json()
  _RECORDED[key] = text
  path = os.path.join(ledger_dir(), key + ".json")
  try:
    atomic.write_text(path, text)
  except OSError as error:
    warnings.warn(f"could not record the ledger of these weights in {path} ({error}): only this "
                  f"process will know they were trained privately. Set {LEDGER_DIR_ENV} to a "
                  "writable directory, or keep the sidecar of save_weights for "
                  "make_private(prior_ledger=...)", RuntimeWarning)
  return key


def track(private) -> None:
  """Adds `private` (a live PrivateModel) to the wrappers of each of its trained variables,
  weakly: neither the variables nor the model are kept alive by the register."""
  for key in list(_LIVE):
    variable, owners = _LIVE[key]
    owners[:] = [owner for owner in owners if owner() is not None]
    if variable() is None or not owners:
      del _LIVE[key]
  for variable in trained_variables(private):
    entry = _LIVE.get(id(variable))
    if entry is None or entry[0]() is not variable:  # A new variable, or an id reused.
      entry = _LIVE[id(variable)] = (weakref.ref(variable), [])
    entry[1].append(weakref.ref(private))


def lookup(model) -> List[ledger_lib.PrivacyLedger]:
  """Every record of `model`'s weights that spent privacy: the ledgers (as they are now) of the
  live PrivateModels sharing any of its variables, and the ledger recorded for its fingerprint."""
  owners = {}
  for variable in trained_variables(model):
    entry = _LIVE.get(id(variable))
    if entry is not None and entry[0]() is variable:
      for owner in filter(None, (ref() for ref in entry[1])):
        owners.setdefault(id(owner), owner)
  found = [owner.privacy_ledger for owner in owners.values()]
  found.append(_recorded(fingerprint(model)))
  return [ledger for ledger in found if ledger is not None and spends_privacy(ledger)]


def _recorded(key: str) -> Optional[ledger_lib.PrivacyLedger]:
  text = _RECORDED.get(key)
  path = os.path.join(ledger_dir(), key + ".json")
  if text is None and os.path.exists(path):
    with open(path) as f:
      text = f.read()
  if text is None:
    return None
  try:
    return ledger_lib.PrivacyLedger.from_json(text)
  except (ValueError, TypeError) as error:
    raise ValueError(f"the register's record of these weights, {path}, is not a ledger "
                     f"({error}); restore it, or pass make_private(prior_ledger=...)") from error


def load_ledger(prior: Union[ledger_lib.PrivacyLedger, str, os.PathLike]
                ) -> ledger_lib.PrivacyLedger:
  """A PrivacyLedger as given, or read from a ledger JSON path (a save_weights sidecar)."""
  if isinstance(prior, ledger_lib.PrivacyLedger):
    return prior
  if isinstance(prior, (str, os.PathLike)):
    return ledger_lib.PrivacyLedger.load(os.fspath(prior))
  raise ValueError(f"prior_ledger must be a PrivacyLedger or the path of a ledger JSON (the "
                   f"{SIDECAR_SUFFIX} file save_weights writes), got {type(prior).__name__}")


def sidecar_path(filepath) -> str:
  """The ledger file written beside a saved file: <filepath>.tfdp-ledger.json."""
  return os.fspath(filepath) + SIDECAR_SUFFIX


def write_sidecar(filepath, ledger: ledger_lib.PrivacyLedger) -> str:
  """Writes `ledger` beside `filepath` atomically; returns the sidecar's path."""
  path = sidecar_path(filepath)
  ledger.save(path)
  return path


def earlier_phases(model, prior_ledger=None) -> List[dict]:
  """The private phases that produced `model`'s weights, in order ([] for fresh weights).

  Args:
    model: the Keras model about to be made private.
    prior_ledger: a PrivacyLedger or a ledger JSON path saying where the weights came from
      (weights from another machine), merged with what the register knows of them.

  Raises:
    ValueError: when a ledger found cannot be expressed as DP-SGD phases.
  """
  phases = _phases_of(lookup(model), "as the register records")
  if prior_ledger is not None:
    phases += _phases_of([load_ledger(prior_ledger)], "as prior_ledger says")
  return merge_phases(phases)


def _phases_of(ledgers: List[ledger_lib.PrivacyLedger], source: str) -> List[dict]:
  try:
    return [phase for ledger in ledgers for phase in ledger.phases()]
  except ValueError as error:
    raise ValueError(f"these weights were trained privately before ({source}), but {error}") \
        from error


def merge_phases(phases: List[dict]) -> List[dict]:
  """One entry per phase, in order of first sight: a phase named by its run_id (else by all its
  fields) seen several times, as a snapshot and live, keeps the most steps any record saw."""
  merged: Dict[str, dict] = {}
  for phase in phases:
    key = phase.get("run_id") or json.dumps(phase, sort_keys=True)
    if key not in merged or int(phase["steps"]) > int(merged[key]["steps"]):
      merged[key] = phase  # The fuller record; an existing key keeps its place.
  return list(merged.values())


def phases_epsilon(phases: List[dict], delta: float) -> float:
  """ε (RDP) of `phases` composed, at `delta`; 0 for none."""
  return accounting.composed_epsilon(ledger_lib.phase_segments(phases), 1.0, delta)


def forget() -> None:
  """Drops this process's memory of the register (the disk keeps its files): what a new
  process sees. For tests."""
  _RECORDED.clear()
  _LIVE.clear()
