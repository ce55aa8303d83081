"""The layout of docs/architecture.md, enforced: imports parsed with ``ast`` (top-level and inside functions
alike), no import cycle in ``harness/`` or ``plugins/``, and imports pointing one way between the layers."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from tests.conftest import REPO

ROOTS = ("harness", "plugins")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.lru_cache(maxsize=1)
def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """``{module: {module it imports}}`` over the project's own modules (``harness.*``, ``plugins.*``). An import
    of a name from a package counts as an import of that submodule when one exists."""
    files = {_module_name(p): p for top in ROOTS for p in sorted((root / top).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a non-module attribute: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# Known when this test was written, in a package being rewritten on another branch (issue 13): tolerated until
# it lands, then delete the entry. Nothing may be added here.
KNOWN_BACK_IMPORTS: dict[str, list[str]] = {}  # none left: every package imports its own modules, never its __init__


def test_no_import_cycle_in_harness_or_plugins():
    graph = import_graph()
    assert len(graph) > 50 and "harness.run.runner" in graph
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "plugins":
        return "plugins"
    if len(parts) == 1:
        return "harness"
    return parts[1]  # contract, registry, run, store, results, report, toolkit, conformance, cli, errors


# Which layers each layer may import (docs/architecture.md, "Who may import whom").
ALLOWED = {
    "errors": set(),
    "contract": {"errors"},
    "harness": {"contract", "errors"},  # harness/__init__.py re-exports the contract
    "toolkit": {"contract", "errors", "harness"},
    "registry": {"contract", "errors"},
    "store": {"contract", "errors"},
    "results": {"store", "contract", "errors"},
    "report": {"results", "store", "contract", "errors"},
    "run": {"contract", "errors", "harness", "registry", "store"},
    "conformance": {"run", "registry", "contract", "errors", "store"},
    "cli": {"run", "results", "report", "store", "registry", "contract", "errors", "conformance"},
    "plugins": {"harness", "contract", "toolkit", "errors"},
}


def test_imports_point_one_way():
    wrong = []
    for module, targets in import_graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if other == layer:
                if layer == "plugins" and module.split(".")[1] != target.split(".")[1]:
                    wrong.append(f"{module} -> {target} (a plugin package imports another)")
                continue
            if other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target} ({layer} may import {', '.join(sorted(ALLOWED[layer])) or 'nothing'})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted({".".join(m.split(".")[:2]) for m in import_graph()
                                            if m.startswith("plugins.") and m.count(".") >= 2}))
def test_a_plugin_package_never_imports_its_own_registration(package):
    """A method family's model / train / explain modules do not import its ``__init__`` back."""
    graph = import_graph()
    back = [m for m, targets in graph.items() if m.startswith(package + ".") and package in targets
            and m not in KNOWN_BACK_IMPORTS.get(package, [])]
    assert not back, f"{', '.join(back)} import {package} (its registration) back"


def test_every_benchmark_script_imports_names_that_exist():
    """The scripts in benchmarks/ are run by hand, long after they were written: every name they import from
    ``harness`` or ``plugins`` (at the top or inside a function) must still exist, or an API move breaks the
    figures' commands silently (``bench_protodiff.py`` imported a ``compare`` that had moved)."""
    import ast
    import importlib

    missing = []
    for path in sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "benchmarks" / "suite").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.split(".")[0] in ("harness", "plugins")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.name}: from {node.module} import {alias.name}")
    assert not missing, missing
