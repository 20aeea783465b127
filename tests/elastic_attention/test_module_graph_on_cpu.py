"""The shape of ``verl_ext/elastic_attention``: imports run one way (no cycle, counting function-local imports and the
``"module:attr"`` strings registrations resolve later), and no module names a particular mode of the kernels'
registry (mode knowledge is read from ``Mode`` attributes: ``dense``, ``needs_block_mask``, ``decode``, ...)."""

import ast
import pathlib
import re

import verl_ext.elastic_attention

PACKAGE = "verl_ext.elastic_attention"
ROOT = pathlib.Path(verl_ext.elastic_attention.__file__).resolve().parent
_REFERENCE = re.compile(rf"^{re.escape(PACKAGE)}\.(\w+)(?::[\w.]*)?$")  # an f-string's head: "...:"


def _edges(path: pathlib.Path) -> set[str]:
    """The package modules ``path`` imports anywhere (module level or inside a function) or names as
    ``"verl_ext.elastic_attention.<module>:<attr>"`` / ``"verl_ext.elastic_attention.<module>"`` strings."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value.split(":")[0]] if _REFERENCE.match(node.value) else []
        for name in names:
            if name.startswith(PACKAGE + "."):
                module = name[len(PACKAGE) + 1:].split(".")[0]
                if (ROOT / f"{module}.py").exists():
                    targets.add(module)
    targets.discard(path.stem)
    return targets


def _cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, stack + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_in_the_package():
    graph = {p.stem: _edges(p) for p in sorted(ROOT.glob("*.py"))}
    assert "vllm_models" in graph["vllm_plugin"]  # the registration string counts
    assert "hf" in graph["verl_actor"]  # and function-local imports do
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


_MODE_CONSTANT = re.compile(r"\b(?:M|modes)\s*\.\s*(FULL|STREAMING|STREAMING_BLOCKS|BLOCK_SPARSE)\b")


def test_no_module_names_a_particular_mode_constant():
    offending = [f"{p.name}: {m.group(0)}" for p in sorted(ROOT.glob("*.py"))
                 for m in _MODE_CONSTANT.finditer(p.read_text())]
    assert not offending, f"read the registry's Mode attributes instead of naming a mode: {offending}"
