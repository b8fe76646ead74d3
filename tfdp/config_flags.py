"""absl flags made from config dataclasses, and configs built back from the parsed flags.

A field is a flag when its metadata has "help" (tfdp.config's fields say so): the flag takes the
field's name (or the metadata's "flag_name"), default and help, so the default is written once, on
the field. Its type follows the field's annotation (str, int, float, bool, each maybe Optional); an
enum flag when the metadata's "choices" returns the valid values; a string flag that the metadata's
"parse" turns into the field's value otherwise. A field that holds a config is walked into.

    for flag in config_flags.make_flags(config.Config):
      flags.DEFINE_flag(flag)  # In the entry point: absl files the flags under their definer.
    ...
    run = config_flags.build(config.Config, flags.FLAGS, {"model.options": options})
"""

import dataclasses
import typing
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from absl import flags

_PARSERS = {str: flags.ArgumentParser, int: flags.IntegerParser, float: flags.FloatParser}


def flag_name(field: dataclasses.Field) -> str:
  """The flag's name of a flag field: the metadata's "flag_name", else the field's."""
  return field.metadata.get("flag_name") or field.name


def _fields(config_class) -> Iterator[Tuple[dataclasses.Field, Any]]:
  """(field, annotation) for every field of `config_class`, in order."""
  hints = typing.get_type_hints(config_class)
  return ((field, hints[field.name]) for field in dataclasses.fields(config_class))


def flag_fields(config_class) -> Iterator[Tuple[dataclasses.Field, Any]]:
  """(field, annotation) for every flag field of `config_class` and of the configs it holds."""
  for field, annotation in _fields(config_class):
    if dataclasses.is_dataclass(annotation):
      yield from flag_fields(annotation)
    elif "help" in field.metadata:
      yield field, annotation


def _value_type(annotation) -> Any:
  """int for int and Optional[int]; the annotation itself when it is not an Optional."""
  if typing.get_origin(annotation) is typing.Union:
    given = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return given[0] if len(given) == 1 else annotation
  return annotation


def make_flag(field: dataclasses.Field, annotation: Any) -> flags.Flag:
  """The absl flag of one flag field (its metadata has "help"), not yet defined.

  Args:
    field: A field of a config dataclass whose metadata has "help".
    annotation: The field's resolved type annotation.

  Returns:
    The flag: its name, default and help from the field, its parser from the annotation.

  Raises:
    TypeError: If no flag type reads the field's annotation and its metadata has no "parse".
  """
  name, default, help_text = flag_name(field), field.default, field.metadata["help"]
  if field.metadata.get("choices"):
    return flags.EnumFlag(name, default, help_text, list(field.metadata["choices"]()))
  value_type = str if field.metadata.get("parse") else _value_type(annotation)
  if value_type is bool:
    return flags.BooleanFlag(name, default, help_text)
  if value_type not in _PARSERS:
    raise TypeError(f"field {field.name}: no flag reads {annotation}; give its metadata a parse")
  return flags.Flag(_PARSERS[value_type](), flags.ArgumentSerializer(), name, default, help_text)


def make_flags(config_class) -> List[flags.Flag]:
  """The flags of every flag field of `config_class` and of the configs it holds.

  The caller defines them (flags.DEFINE_flag), so that absl lists them under the caller's module
  (its --helpshort, FLAGS.get_flags_for_module).
  """
  return [make_flag(field, annotation) for field, annotation in flag_fields(config_class)]


def topics(config_class) -> List[Tuple[str, List[str]]]:
  """(the field's name, its flags' names) for each config that `config_class` holds, in field
  order: the flags by topic, for a command's --help."""
  return [(field.name, [flag_name(inner) for inner, _ in flag_fields(annotation)])
          for field, annotation in _fields(config_class) if dataclasses.is_dataclass(annotation)]


def build(config_class, flag_values: flags.FlagValues,
          given: Optional[Mapping[str, Any]] = None) -> Any:
  """A `config_class` from parsed flags.

  Args:
    config_class: A dataclass whose flag fields' flags are defined in `flag_values`.
    flag_values: Parsed flags (flags.FLAGS).
    given: Values of fields that have no flag, by dotted path from `config_class`
      ({"model.options": ...}); fields neither in it nor flags keep their defaults.

  Returns:
    The config, each flag field set to its flag's value (read by the metadata's "parse" if any),
    which validates itself.

  Raises:
    KeyError: If a path of `given` names no field without a flag.
  """
  remaining = dict(given or {})
  config = _build(config_class, flag_values, remaining, "")
  if remaining:
    raise KeyError(f"{sorted(remaining)}: not fields without a flag of {config_class.__name__}")
  return config


def _build(config_class, flag_values: flags.FlagValues, remaining: Dict[str, Any], prefix: str):
  values = {}
  for field, annotation in _fields(config_class):
    path = prefix + field.name
    if dataclasses.is_dataclass(annotation):
      values[field.name] = _build(annotation, flag_values, remaining, path + ".")
    elif "help" in field.metadata:
      value = flag_values[flag_name(field)].value
      parse = field.metadata.get("parse")
      values[field.name] = parse(value) if parse else value
    elif path in remaining:
      values[field.name] = remaining.pop(path)
  return config_class(**values)
