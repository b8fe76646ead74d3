"""The package's layout: public names where the docs say, commands that run, no import cycles,
layers that only import down."""

import ast
import io
import pathlib
import subprocess
import sys
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tfdp"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
  return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: pathlib.Path, modules: dict) -> set:
  """Every tfdp module `path` imports, at any depth of its code (a function's import counts)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfdp"):
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in modules else node.module)
  return found


def _cycle(graph: dict):
  """One import cycle as a list of modules, or None."""
  state = {}

  def visit(module, trail):
    state[module] = "open"
    for imported in sorted(graph.get(module, ())):
      if state.get(imported) == "open":
        return trail[trail.index(imported):] + [imported]
      if imported not in state:
        found = visit(imported, trail + [imported])
        if found:
          return found
    state[module] = "done"
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module, [module])
      if found:
        return found
  return None


def test_no_module_imports_itself_through_others():
  modules = _modules()
  graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
  graph = {name: {m for m in imported if m != "tfdp"} for name, imported in graph.items()}
  assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


# The package's layers, bottom to top, each with the modules it holds: a name ending in "." is a
# package and all under it, any other name is that one module; the longest matching name decides.
LAYERS = [
    ("base", ("tfdp", "tfdp.atomic", "tfdp.cpu", "tfdp.names", "tfdp.run_lock", "tfdp.stack")),
    ("privacy", ("tfdp.privacy.",)),  # Accounting imports no TensorFlow, so nothing above it.
    ("compat", ("tfdp.compat.",)),  # Dependencies' modules on every TensorFlow (TF Privacy's).
    ("precision", ("tfdp.precision",)),  # The dtype policy: models are built under it, dp casts.
    ("models", ("tfdp.models.",)),
    ("dp", ("tfdp.dp.",)),
    ("data", ("tfdp.data.",)),
    ("optimizers", ("tfdp.optimizers.",)),
    # The configs, flags made from them, and the recipe that fills them from public facts.
    ("config", ("tfdp.config", "tfdp.config_flags", "tfdp.recipes")),
    ("serving", ("tfdp.serving.",)),
    ("priors", ("tfdp.priors.",)),
    ("training", ("tfdp.training.",)),
    ("keras", ("tfdp.keras.",)),
    ("experiments", ("tfdp.experiments.",)),
    ("entry points", ("tfdp.train", "tfdp.export", "tfdp.pretrain", "tfdp.audit", "tfdp.evaluate",
                      "tfdp.predict", "tfdp.sweep", "tfdp.bench", "tfdp.baselines",
                      "tfdp.privacy.__main__", "tfdp.cli_reference")),
]

# (importer, imported) pairs that may point up, each with the reason; at most one.
ALLOWED_UPWARD = {
    # The sweep's grid is over tfdp.train's flags: it reads them by train's module name to write
    # each run's flagfile, so it needs train's flag definitions, not a copy of them.
    ("tfdp.experiments.sweep", "tfdp.train"),
}


def _matches(module: str, name: str) -> bool:
  if name.endswith("."):
    return module.startswith(name) or module == name[:-1]
  return module == name


def _layers_of(module: str, layers=None) -> set:
  """The indices in `layers` (default LAYERS) of the layers whose longest matching name holds it."""
  layers = LAYERS if layers is None else layers
  matched = [(len(name), index) for index, (_, names) in enumerate(layers)
             for name in names if _matches(module, name)]
  longest = max((length for length, _ in matched), default=0)
  return {index for length, index in matched if length == longest}


def _layer(module: str, layers=None) -> int:
  """The index in `layers` (default LAYERS) of `module`'s layer; 0 is the bottom."""
  (index,) = _layers_of(module, layers)
  return index


def _upward(graph: dict, layers=None) -> set:
  """The (importer, imported) pairs of `graph` whose imported module sits in a higher layer."""
  return {(module, imported) for module, imports in graph.items() for imported in imports
          if _layer(imported, layers) > _layer(module, layers)}


def _graph() -> dict:
  modules = _modules()
  return {name: _imports(path, modules) - {name, "tfdp"} for name, path in modules.items()}


def test_every_module_is_in_exactly_one_layer():
  strays = {module: sorted(LAYERS[i][0] for i in found)
            for module in _modules() if len(found := _layers_of(module)) != 1}
  assert not strays, strays


def test_imports_only_point_down_the_layers():
  assert len(ALLOWED_UPWARD) <= 1
  assert _upward(_graph()) - ALLOWED_UPWARD == set()


def test_the_layer_check_sees_an_upward_import():
  layers = [("low", ("p.low.",)), ("high", ("p.high.", "p.main")), ("top", ("p.low.__main__",))]
  graph = {"p.low.a": {"p.low.b"}, "p.low.b": {"p.high.c"}, "p.high.c": {"p.low.a"},
           "p.main": {"p.high.c"}, "p.low.__main__": {"p.main"}}
  assert _layer("p.low.__main__", layers) == 2
  assert _upward(graph, layers) == {("p.low.b", "p.high.c")}
  assert _layers_of("p.elsewhere", layers) == set()


# Every `python -m tfdp.<command>`, with a flag of its own (tests/test_docs.py checks that the docs
# name no other command).
COMMANDS = [
    ("train", "--epsilon"), ("export", "--checkpoint_dir"), ("predict", "--top"),
    ("evaluate", "--model_dir"), ("sweep", "--grid"), ("bench", "--modes"),
    ("pretrain", "--model_kwargs"), ("privacy", "--num_examples"), ("audit", "--run_dir"),
    ("baselines", "--epsilons"), ("cli_reference", "--out")]


@pytest.mark.parametrize("command, own_flag", COMMANDS)
def test_every_command_still_runs_by_its_name(command, own_flag):
  result = subprocess.run([sys.executable, "-m", f"tfdp.{command}", "--helpshort"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert own_flag in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def _indent_steps(path: pathlib.Path) -> set:
  """The widths by which `path`'s code blocks indent (INDENT tokens over their enclosing block)."""
  steps, stack = set(), [0]
  for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
    if token.type == tokenize.INDENT:
      steps.add(len(token.string) - stack[-1])
      stack.append(len(token.string))
    elif token.type == tokenize.DEDENT:
      stack.pop()
  return steps


def test_the_package_indents_by_two_spaces():
  offenders = {str(path.relative_to(ROOT)): sorted(steps) for path in PACKAGE.rglob("*.py")
               if (steps := _indent_steps(path)) - {2}}
  assert not offenders, offenders


def test_the_indent_check_sees_four_spaces(tmp_path):
  four = tmp_path / "four.py"
  four.write_text("def f():\n    return 1\n")
  assert _indent_steps(four) == {4}
