"""The directories a run will write, checked before it loads data or takes a step.

A run that finds out at its end that it cannot write its export has spent its privacy budget on
weights nobody can use; one that cannot write its run directory would take noisy steps it cannot
save. So every directory the run will write is tried first: created where it is missing (not
created: a temporary directory is made in its nearest existing parent, then removed, so a refused
run leaves nothing behind), or written where it exists.
"""

import os
import tempfile
from typing import List, Optional, Tuple

from tfdp import atomic
from tfdp import config as config_lib
from tfdp.data import feature_cache
from tfdp.models import scatter


def export_dir(config: config_lib.Config) -> str:
  """Where the export goes: --export_dir, else saved_models/<the run directory's name>."""
  if config.run.export_dir:
    return config.run.export_dir
  return os.path.join("saved_models", os.path.basename(os.path.normpath(config.run.output_dir)))


def written(config: config_lib.Config, chief: bool = True) -> List[Tuple[str, str]]:
  """(directory, how to choose another) for every directory the run writes; a worker other than
  the `chief` writes only the feature cache (when its model has one)."""
  paths = [(config.run.output_dir, "give --output_dir")] if chief else []
  if chief and config.run.export:
    paths.append((export_dir(config), "give --export_dir (or --noexport)"))
  if config.model.name in scatter.FRONT_MODELS or config.probe.steps:
    paths.append((feature_cache.cache_dir(), "set TFDP_CACHE_DIR to"))
  return paths


def problem(directory: str) -> Optional[str]:
  """Why `directory` cannot be written (one phrase), or None when it can (or can be made)."""
  existing = os.path.abspath(directory)
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = "is" if existing == os.path.abspath(directory) else f"is under {existing}, which is"
    return f"{what} a file, not a directory"
  try:
    atomic.remove(tempfile.mkdtemp(dir=existing, prefix=atomic.TEMPORARY_PREFIXES[0]))
  except OSError as error:
    if existing == os.path.abspath(directory):
      return f"cannot be written ({error.strerror})"
    return f"cannot be created in {existing} ({error.strerror})"
  return None


def check(config: config_lib.Config, chief: bool = True) -> None:
  """Raises ValueError '<directory>: <why>; <the fix>' for the first directory the run could not
  write; creates nothing."""
  for directory, fix in written(config, chief):
    why = problem(directory)
    if why is not None:
      raise ValueError(f"{directory}: {why}; {fix} a directory you can write")
