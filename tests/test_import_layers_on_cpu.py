"""The package's import graph, read from the sources (every import, function-local ones included, and every
``"verl_ext.module:attr"`` string a registry resolves later): no cycle, and no import across the documented layers.

Layers (README "Where a change goes"):
- kernels (``kernels/``, importable as ``verl_ext.kernels``) import only kernels;
- infrastructure (everything that is neither a paper nor an application: the platform, the rollout, scoring,
  config, the verl seams, test support) knows no paper;
- papers (``re2``, ``elastic_attention``, ``memrm``) never import each other, nor an application;
- applications (``plugin``: the one module that wires the papers into verl; ``doctor``; ``cpu_smoke``) may import
  anything; nothing imports them except through verl's entry point;
- the library never imports ``recipes``, ``benchmarks`` or ``experiments``;
- verl's v1 trainer and TransferQueue are imported only where docs/verl_upgrade.md says (so a verl without them
  breaks only those modules).
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("verl_ext.re2", "verl_ext.elastic_attention", "verl_ext.memrm")
APPS = ("verl_ext.plugin", "verl_ext.doctor", "verl_ext.cpu_smoke")
V1_OR_TQ = ("verl.trainer.ppo.v1", "transfer_queue")
V1_OR_TQ_ALLOWED = {  # docs/verl_upgrade.md: the modules a verl without the v1 trainer and TransferQueue breaks
    "verl_ext.trainer_mode", "verl_ext.re2.agent_loop", "verl_ext.replay_buffer", "verl_ext.data_plane",
    "verl_ext.seeded_agent_loop",
    "verl_ext.plugin",  # registers into the v1 trainer's registries when verl imports them
    "verl_ext.config_checks",  # looks a configured trainer mode up in the v1 registry (only with trainer.use_v1)
}
MODULE_STRING = re.compile(r"^(verl_ext(?:\.\w+)+):\w+$")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ((ROOT / "verl_ext", "verl_ext"), (ROOT / "kernels", "verl_ext.kernels")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(verl_ext modules ``module`` imports, every other imported module name)."""
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package(module, path)
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # ``from pkg import submodule`` imports the submodule (the package's own __init__ runs first, as for any
            # import of a submodule: not an edge); ``from module import name`` imports the module.
            names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES] or [base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            names = [MODULE_STRING.match(node.value).group(1)]
        for name in names:
            if name in MODULES:
                internal.add(name)
            elif name.startswith("verl_ext"):
                continue  # an attribute imported from a module (``from pkg import func``): the module is counted
            else:
                external.add(name)
    internal.discard(module)
    return internal, external


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> str:
    if module.startswith("verl_ext.kernels"):
        return "kernels"
    if any(module == p or module.startswith(p + ".") for p in PAPERS):
        return next(p for p in PAPERS if module == p or module.startswith(p + "."))
    if module in APPS:
        return "app"
    return "infrastructure"


def test_every_module_is_read():
    assert len(MODULES) > 60 and "verl_ext.kernels.elastic_attention.ops" in MODULES


def test_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node][0]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def test_no_import_crosses_the_layers():
    wrong = []
    for module, (internal, _) in GRAPH.items():
        mine = _layer(module)
        for target in internal:
            theirs = _layer(target)
            if mine == "app" or theirs == mine or theirs == "kernels" and mine != "kernels":
                continue
            if theirs == "infrastructure" and mine != "kernels":
                continue
            wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert wrong == []


def test_the_library_never_imports_recipes_benchmarks_or_experiments():
    wrong = [f"{m} imports {e}" for m, (_, external) in GRAPH.items() for e in external
             if e.split(".")[0] in ("recipes", "benchmarks", "experiments")]
    assert wrong == []


def test_verls_v1_trainer_and_transfer_queue_stay_in_their_modules():
    wrong = [f"{m} imports {e}" for m, (_, external) in GRAPH.items() for e in external
             if e.startswith(V1_OR_TQ) and m not in V1_OR_TQ_ALLOWED]
    assert wrong == []
