"""The one refusal every registry gives for a name it does not hold.

Each registry (models, optimizers, datasets, losses, ...) has a `check_name` built on `check`, so
that a config, a flag and the registry's own lookup refuse a bad name in the same words:

    >>> check("model", "resnet", ["cnn", "resnet20"])
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'resnet'; valid: cnn, resnet20
"""

from typing import Any, Iterable


def check(kind: str, name: Any, valid: Iterable[str]) -> None:
  """Raises ValueError naming `name` and every valid name, unless `name` is one of them.

  Args:
    kind: What the name names, spelled as its flag or config field ('model', 'lr_schedule').
    name: The name to check.
    valid: The valid names, in the order the message lists them.

  Raises:
    ValueError: If `name` is not in `valid`.
  """
  valid = list(valid)
  if name not in valid:
    raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
