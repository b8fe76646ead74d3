"""The README and docs/ against the code, so that they cannot drift from it.

Every flag they name is a flag of the command it is given to (or, in prose, of some command), every
model and dataset name is in its registry, every `python -m` command exists, every file and link
resolves, docs/cli.md is what tfdp.cli_reference writes now, and every code block of the README is
either run here or says what it needs.
"""

import ast
import glob
import itertools
import os
import pathlib
import re
import runpy
import subprocess
import sys

from absl import flags
import pytest
import tensorflow as tf

import tfdp
from tfdp import cli_reference
from tfdp import data
from tfdp import models
from tfdp import train
from tests import test_layout

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))

# What a README code block that no test runs may need, written `<!-- needs: ... -->` above it.
NEEDS = {"long": "an install or a run of minutes", "data": "a dataset outside the repository"}
# absl's own flags, which every command takes.
ABSL_FLAGS = {"flagfile", "undefok", "help", "helpshort", "helpfull", "helpxml", "verbosity"}
# Where a path that the docs name may start; a path after "/", "." or "~" is not the repository's.
PATH = re.compile(r"(?<![\w./~$-])((?:flags|examples|benchmarks|tfdp|tests|docs|priors)/"
                  r"[\w./{},*-]*[\w/*}])")
FLAG = re.compile(r"(?<![\w-])--(\[no\])?([a-z][a-z0-9_]*\*?)(?![<\w])")  # Not --no<name>.
INVOCATION = re.compile(r"python(?:3\.11)?\s+(?:-m\s+(\w+(?:\.\w+)*)|"
                        r"((?:examples|benchmarks)/[\w.]+\.py))")


def _text(page: pathlib.Path) -> str:
  return page.read_text()


def _blocks(text: str):
  """(language, code, the line above the block) for every fenced code block of `text`."""
  for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
    above = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
    yield match.group(1), match.group(2), above


def _spans(text: str):
  """The inline code spans of `text`, fenced blocks left out."""
  prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  return re.findall(r"`([^`\n]+)`", prose)


def _prose(text: str) -> str:
  """`text` without its code blocks and code spans."""
  prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  return re.sub(r"`[^`\n]+`", "", prose)


def _commands(code: str):
  """Every shell command of a block: its lines joined at trailing backslashes, split at && and ;."""
  for line in re.sub(r"\\\n", " ", code).splitlines():
    yield from (part for part in re.split(r"&&|;|\|", line) if part.strip())


# The flags of each command, from its source (its DEFINE_* calls and argparse arguments), so that
# no command has to be imported or started to list them.
def _module_path(module: str) -> pathlib.Path:
  path = ROOT / (module.replace(".", "/") + ".py")
  return path if path.exists() else ROOT / module.replace(".", "/") / "__main__.py"


def _defined_in(path: pathlib.Path, seen=None) -> set:
  seen = set() if seen is None else seen
  if path in seen or not path.exists():
    return set()
  seen.add(path)
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
      continue
    function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
        node.func, "id", "")
    value = node.args[0].value
    if function.startswith("DEFINE_"):
      names.add(value)
    elif function == "add_argument" and value.startswith("--"):
      names.add(value[2:])
    elif function == "run_module":  # A command that runs another module: its flags.
      names |= _defined_in(_module_path(value), seen)
  return names


TRAIN_FLAGS = {flag.name for flag in flags.FLAGS.get_flags_for_module(train.__name__)}


def _flags_of(command: str) -> set:
  """The flags that `command` (a module after `python -m`, or a script's path) takes."""
  if command == "tfdp.train":
    return TRAIN_FLAGS | ABSL_FLAGS
  path = ROOT / command if command.endswith(".py") else _module_path(command)
  if not path.exists():
    return set()  # Not a command: test_every_command_named_exists says so.
  own = _defined_in(path) | ABSL_FLAGS
  if "from tfdp import train" in path.read_text():  # tfdp.sweep passes train's flags on.
    own |= TRAIN_FLAGS
  return own


COMMANDS = {f"tfdp.{name}" for name, _ in test_layout.COMMANDS}
ANY_FLAG = set().union(*(_flags_of(command) for command in COMMANDS))
ANY_FLAG |= set().union(*(_flags_of(str(path.relative_to(ROOT)))
                          for path in itertools.chain(ROOT.glob("examples/*.py"),
                                                      ROOT.glob("benchmarks/*.py"))))


def _known(name: str, negated: bool, known: set) -> bool:
  if name.endswith("*"):  # --adaptive_clip_*: a family of flags.
    return any(flag.startswith(name[:-1]) for flag in known)
  if negated or (name.startswith("no") and name[2:] in known and name not in known):
    name = name if negated else name[2:]
  return name in known


def _flag_uses(page: pathlib.Path):
  """(where, flag, the flags it must be one of) for every flag that `page` names."""
  text = _text(page)
  shell = [command for language, code, _ in _blocks(text) if language == "bash"
           for command in _commands(code)]
  for piece in shell + _spans(text):
    invoked = INVOCATION.search(piece)
    if invoked and (invoked.group(1) or "").split(".")[0] not in ("tfdp", ""):
      continue  # python -m pytest, venv: not ours.
    if piece.lstrip().startswith("docker"):
      if " tfdp " not in piece + " ":
        continue  # Another image's flags.
      piece, invoked = piece.split(" tfdp ", 1)[1], None
      known = _flags_of("tfdp.train")
    else:
      known = _flags_of(invoked.group(1) or invoked.group(2)) if invoked else ANY_FLAG
    for negated, name in FLAG.findall(piece[invoked.end():] if invoked else piece):
      yield piece.strip()[:80], (negated, name), known
  other_blocks = "".join(code for language, code, _ in _blocks(text) if language != "bash")
  for negated, name in FLAG.findall(_prose(text) + other_blocks):
    yield "prose", (negated, name), ANY_FLAG


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_flag_named_is_a_flag_of_its_command(page):
  unknown = {(where, "--" + name) for where, (negated, name), known in _flag_uses(page)
             if not _known(name, bool(negated), known)}
  assert not unknown, f"{page.name} names flags its commands do not define: {sorted(unknown)}"


def test_the_flag_check_sees_a_wrong_flag(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("Run `.venv/bin/python -m tfdp.predict --epsilon=3` or `--no_such_flag`.\n"
                  "```bash\n.venv/bin/python -m tfdp.train --flagfile=f \\\n    --top=2\n```\n"
                  "`--noexport` and `--adaptive_clip_*` are fine.\n")
  unknown = {name for _, (negated, name), known in _flag_uses(page)
             if not _known(name, bool(negated), known)}
  assert unknown == {"epsilon", "no_such_flag", "top"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_model_and_dataset_named_is_registered(page):
  text = _text(page)
  named_models = set(re.findall(r"--model=(\w+)", text))
  named_datasets = set(re.findall(r"--dataset=(\w+)", text))
  assert named_models <= set(models.MODELS), sorted(named_models - set(models.MODELS))
  assert named_datasets <= set(data.DATASETS), sorted(named_datasets - set(data.DATASETS))


def test_the_model_table_lists_every_registered_model():
  rows = re.findall(r"^\| (\w+) \| `tfdp/models/", _text(ROOT / "docs" / "models.md"), re.M)
  assert sorted(rows) == sorted(models.MODELS)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_named_exists(page):
  """Each `python -m tfdp.<name>` is one that tests/test_layout.py runs by its name."""
  text = _text(page)
  named = set(re.findall(r"python -m (tfdp\.\w+)\b(?!\.\w)", text))
  assert named <= COMMANDS, sorted(named - COMMANDS)
  for module in re.findall(r"python -m (tests\.\w+)", text):
    assert _module_path(module).exists(), module


def _expand(path: str):
  """`path` with each {a,b} alternative spelled out."""
  match = re.search(r"\{([^{}]*)\}", path)
  if not match:
    return [path]
  return [expanded for option in match.group(1).split(",")
          for expanded in _expand(path[:match.start()] + option + path[match.end():])]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_file_named_exists(page):
  text = _text(page)
  named = {path.rstrip(".,:;)") for path in PATH.findall(text)}
  # A file has an extension, a folder a final "/"; a prior is a folder by its name ("examples/s"
  # is a unit).
  named = {path for path in named if re.search(r"\.\w+$|/$", path) or path.startswith("priors/")}
  named |= {"flags/" + name for name in re.findall(r"(?<![\w/{},<>-])([\w{},]+\.flags)\b", text)}
  missing = [path for pattern in named for path in _expand(pattern)
             if not glob.glob(str(ROOT / path))]
  assert not missing, f"{page.name} names files that do not exist: {sorted(missing)}"


def _anchors(page: pathlib.Path) -> set:
  """The anchors GitHub gives `page`'s headings."""
  headings = re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", _text(page), flags=re.M | re.S),
                        re.M)
  return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_resolves(page):
  broken = []
  for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
    if re.match(r"\w+://", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists() or (anchor and resolved.suffix == ".md"
                                 and anchor not in _anchors(resolved)):
      broken.append(target)
  assert not broken, f"{page.name}: {broken}"


def test_every_flagfile_and_mechanism_is_documented():
  text = " ".join(_text(page) for page in PAGES)
  named = {path for pattern in re.findall(r"[\w{},]+\.flags", text) for path in _expand(pattern)}
  undocumented = [path.name for path in (ROOT / "flags").glob("*.flags") if path.name not in named]
  assert not undocumented, undocumented
  mechanisms = _text(ROOT / "docs" / "mechanisms.md")
  modules = [path for path in (ROOT / "tfdp" / "privacy" / "mechanisms").glob("*.py")
             if path.stem not in ("__init__", "base")]
  assert all(str(path.relative_to(ROOT)) in mechanisms for path in modules)


def test_the_architecture_page_lists_the_package_as_it_is():
  text = _text(ROOT / "docs" / "architecture.md")
  package = ROOT / "tfdp"
  missing = [str(path.relative_to(ROOT)) for path in package.glob("*.py")
             if path.stem != "__init__" and str(path.relative_to(ROOT)) not in text]
  subpackages = [path for path in package.rglob("*") if (path / "__init__.py").exists()]
  for sub in subpackages:  # tfdp/privacy/mechanisms/: docs/mechanisms.md, checked above.
    if f"{sub.relative_to(ROOT)}/" not in text and sub.name + "/" not in text:
      missing.append(f"{sub.relative_to(ROOT)}/")
    missing += [str(path.relative_to(ROOT)) for path in sub.glob("*.py")
                if path.stem not in ("__init__", "__main__") and sub.name != "mechanisms"
                and not re.search(rf"\b{path.stem}\b", text)]
  assert not missing, missing


def test_cli_reference_is_up_to_date():
  assert (ROOT / "docs" / "cli.md").read_text() == cli_reference.render(), (
      f"docs/cli.md is stale: run `{cli_reference.COMMAND}`")


def test_every_python_command_uses_the_virtual_environment():
  """A command as written runs from a fresh clone after the set-up command: .venv/bin/python."""
  bare = []
  for page in PAGES:
    text = _text(page)
    lines = [command for language, code, _ in _blocks(text) if language == "bash"
             for command in _commands(code)]
    # A span that runs something (a module with arguments, a script, -c), not one that names it.
    spans = [span for span in _spans(text)
             if re.match(r"python\s+(-m\s+\S+\s+\S|-c\s|\S+\.py\b)", span)]
    for command in lines + spans:
      for match in re.finditer(r"(?<![\w/.])python(?:3\.11)?\b", command):
        if not command[match.start():].startswith("python3.11 -m venv"):
          bare.append(f"{page.name}: {command.strip()[:80]}")
  assert not bare, bare


# The README's code blocks: each is run below, or says what it needs.
def _readme_blocks() -> dict:
  """{marker: code} for the README's blocks; marker is 'test: <name>' or 'needs: <what>'."""
  marked, unmarked = {}, []
  for index, (_, code, above) in enumerate(_blocks(_text(README))):
    match = re.fullmatch(r"<!-- (test|needs): ([\w-]+) -->", above.strip())
    if not match:
      unmarked.append(code.strip().splitlines()[0])
      continue
    marked[f"{match.group(1)}: {match.group(2)}#{index}"] = code
  assert not unmarked, f"README blocks with neither <!-- test: --> nor <!-- needs: -->: {unmarked}"
  return marked


def _readme_test(name: str) -> str:
  (code,) = [code for marker, code in _readme_blocks().items()
             if marker.split("#")[0] == f"test: {name}"]
  return code


def test_every_readme_block_is_run_here_or_says_what_it_needs():
  markers = [marker.split("#")[0] for marker in _readme_blocks()]
  tested = sorted(marker[len("test: "):] for marker in markers if marker.startswith("test: "))
  needs = {marker[len("needs: "):] for marker in markers if marker.startswith("needs: ")}
  assert tested == ["keras", "predict"]  # The tests below, one block each.
  assert needs <= set(NEEDS), sorted(needs - set(NEEDS))


def test_readme_setup_commands_are_what_ci_runs():
  ci = (ROOT / ".ci" / "run").read_text()
  setup = [code.strip() for marker, code in _readme_blocks().items() if "needs: long" in marker]
  pinned = "python3.11 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[test]'"
  newest = ("python3.11 -m venv .venv-tf2.21 && .venv-tf2.21/bin/pip install "
            "-c constraints-tf2.21.txt -e '.[test]'")
  assert [command.startswith(pinned) for command in setup] == [True, True, False]
  assert setup[2].startswith(newest)
  for venv, constraints in ((".venv", "constraints.txt"), (".venv-tf2.21", "constraints-tf2.21.txt")):
    assert f"python3.11 -m venv {venv}\n" in ci
    assert f"{venv}/bin/pip install -q -c {constraints} -e '.[test]'" in ci
  for command in setup[1:]:  # The test commands, as CI runs them.
    assert command.rsplit(" && ", 1)[1] in ci, command
  assert setup[0].endswith(".venv/bin/python -m tfdp.train --flagfile=flags/quickstart.flags")


def test_readme_keras_lines_train_privately():
  code = _readme_test("keras")
  assert code.count("epochs=5") == 2  # Run here for one epoch: make_private plans, fit runs it.
  digits = data.load_dataset("digits")
  x, y = digits.train_images[:400].astype("float32") / 255.0, digits.train_labels[:400]
  model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(10, activation="softmax")])
  namespace = {"tfdp": tfdp, "model": model, "x": x, "y": y}
  exec(code.replace("epochs=5", "epochs=1"), namespace)  # pylint: disable=exec-used
  epsilons = namespace["history"].history["epsilon"]
  assert len(epsilons) == 1 and 2.5 < epsilons[0] <= 3.0  # Calibrated to spend the budget.
  assert namespace["private"].privacy_ledger.steps == 4  # ceil(400 / 100) Poisson steps.


def test_readme_predict_commands_run_as_written(tmp_path):
  """Sample images from the example script, classified by tfdp.predict as the README says."""
  samples, predict = [command.split() for command in _readme_test("predict").strip().splitlines()]
  assert samples[:2] == [".venv/bin/python", "examples/make_sample_images.py"]
  (out_dir,) = [arg.split("=", 1)[1] for arg in samples[2:] if arg.startswith("--out_dir=")]
  script = runpy.run_path(str(ROOT / samples[1]), run_name="example")
  written = script["write_samples"](str(tmp_path / out_dir))
  # The quickstart's export: its output_dir's name under saved_models/, a model of its input.
  quickstart = (ROOT / "flags" / "quickstart.flags").read_text()
  run_name = os.path.basename(re.search(r"^--output_dir=(\S+)", quickstart, re.M).group(1))
  assert predict[:3] == [".venv/bin/python", "-m", "tfdp.predict"]
  assert predict[3] == f"--model_dir=saved_models/{run_name}"
  model = models.build_model("linear", 10, (8, 8, 1))
  tfdp.export.export_saved_model(model, str(tmp_path / "saved_models" / run_name / "1"))
  paths = sorted(glob.glob(predict[4], root_dir=tmp_path))  # The shell's glob.
  assert paths == sorted(os.path.relpath(path, tmp_path) for path in written)
  result = subprocess.run([sys.executable] + predict[1:4] + paths, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert [line.split(":")[0] for line in result.stdout.splitlines()] == paths
