"""Flags made from the config fields: tfdp.train's command line as it was, each flag into its field."""

import dataclasses
import json
import os
from typing import Optional

from absl import flags
import pytest

from tfdp import config as config_lib
from tfdp import config_flags
from tfdp import names
from tfdp import train

# tfdp.train's flags before they were made from the config fields: name -> [repr(default), flag
# class, parser class, enum values]. A flag renamed, retyped or with another default or choice
# breaks every flagfile and script that uses it.
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "train_flags.json")


def _row(default, flag_class, parser_class, enum_values):
  # The order of the choices is the registry's, shown in --help only: not part of the contract.
  return [default, flag_class, parser_class, None if enum_values is None else sorted(enum_values)]


def test_the_command_line_is_the_one_before_flags_came_from_fields():
  with open(FIXTURE) as f:
    before = {name: _row(*row) for name, row in json.load(f).items()}
  now = {flag.name: _row(repr(flag.default), type(flag).__name__, type(flag.parser).__name__,
                         getattr(flag.parser, "enum_values", None))
         for flag in flags.FLAGS.get_flags_for_module(train.__name__)}
  assert now == before


def test_each_flag_default_is_its_field_default():
  for field, _ in config_flags.flag_fields(config_lib.Config):
    assert flags.FLAGS[config_flags.flag_name(field)].default == field.default, field.name


def _parsed(*argv):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfdp.train", *argv])


@pytest.fixture(name="parse")
def _parse():
  yield _parsed
  flags.FLAGS.unparse_flags()


def test_each_flag_reaches_its_field(parse):
  parse("--epsilon=2", "--linear_probe_steps=3", "--probe_learning_rate=0.5", "--model=resnet20",
        "--optimizer=dp_adam", "--learning_rate=0.01", "--clip_groups=4", "--noexport",
        "--model_kwargs=activation=tanh", "--groupnorm_groups=4", "--beta_1=0.8", "--dataset=synthetic")
  config = train.config_from_flags()
  assert (config.probe.steps, config.probe.learning_rate) == (3, 0.5)
  assert config.model.kwargs == {"activation": "tanh", "groupnorm_groups": 4}
  assert config.model.name == "resnet20"
  assert (config.optimizer.name, config.optimizer.learning_rate) == ("dp_adam", 0.01)
  assert config.optimizer.hyperparameters == (("beta_1", 0.8),)
  assert (config.privacy.epsilon, config.privacy.clip_groups) == (2.0, 4)
  assert (config.run.export, config.data.dataset) == (False, "synthetic")


def test_unset_flags_give_the_default_config(parse):
  parse("--epsilon=1")
  assert train.config_from_flags() == config_lib.Config(
      privacy=config_lib.PrivacyConfig(epsilon=1.0))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Inner:
  count: int = dataclasses.field(default=2, metadata={"help": "A count.", "flag_name": "n"})
  note: str = "kept"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Outer:
  inner: _Inner = _Inner()
  scale: Optional[float] = dataclasses.field(default=None, metadata={"help": "A scale."})
  kind: str = dataclasses.field(default="a", metadata={"help": "A kind.",
                                                       "choices": lambda: ("a", "b")})


def test_fields_make_typed_flags_and_build_back():
  made = {flag.name: flag for flag in config_flags.make_flags(_Outer)}
  assert sorted(made) == ["kind", "n", "scale"]
  assert isinstance(made["n"].parser, flags.IntegerParser) and made["n"].default == 2
  assert isinstance(made["scale"].parser, flags.FloatParser) and made["scale"].default is None
  assert made["kind"].parser.enum_values == ["a", "b"]
  values = flags.FlagValues()
  for flag in made.values():
    flags.DEFINE_flag(flag, flag_values=values)
  values(["prog", "--n=5", "--kind=b"])
  built = config_flags.build(_Outer, values, {"inner.note": "given"})
  assert built == _Outer(inner=_Inner(count=5, note="given"), kind="b")
  with pytest.raises(KeyError, match="inner.count"):  # A flag field is not `given`.
    config_flags.build(_Outer, values, {"inner.count": 1})


def test_a_field_no_flag_reads_needs_a_parse():
  @dataclasses.dataclass(frozen=True)
  class Odd:
    pair: tuple = dataclasses.field(default=(), metadata={"help": "A pair."})
  with pytest.raises(TypeError, match="pair"):
    config_flags.make_flags(Odd)


def test_an_unknown_name_is_refused_listing_the_valid_ones():
  with pytest.raises(ValueError, match=r"^unknown model 'resnet'; valid: cnn, resnet20$"):
    names.check("model", "resnet", ["cnn", "resnet20"])
  names.check("model", "cnn", ["cnn", "resnet20"])
