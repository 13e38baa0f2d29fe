"""The top-level folders are the architecture: who may import whom, and no import cycle anywhere.

Read from the source (every ``import`` statement, also those inside functions; not those under
``if TYPE_CHECKING:``, which never run), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("balancebench", "workloads", "loadtests", "analysis")

ALLOWED: dict[str, tuple[str, ...]] = {
    "analysis": ("analysis",),  # records → metrics → reports, usable on its own
    "workloads": ("workloads",),  # the echo target ships alone in an image
    "loadtests": ("loadtests", "analysis.records"),  # knows nothing of clusters; writes the record schema
    "balancebench": PRODUCT,  # wires it all
}
"""What each product folder may import of the repository (a module, or everything under it)."""


def _modules() -> dict[str, Path]:
    found = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The repository modules ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                names.add(name if name in MODULES else base)
    return {name for name in names if name.split(".")[0] in PRODUCT}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _allowed(importer: str, imported: str) -> bool:
    return any(
        imported == allowed or imported.startswith(allowed + ".")
        for allowed in ALLOWED[importer.split(".")[0]]
    )


@pytest.mark.parametrize("folder", PRODUCT)
def test_each_folder_imports_only_what_the_layout_allows(folder: str) -> None:
    wrong = sorted(
        f"{module} imports {imported}"
        for module, imported_set in GRAPH.items()
        if module.split(".")[0] == folder
        for imported in imported_set
        if not _allowed(module, imported)
    )
    assert not wrong, f"{folder}/ may import only {', '.join(ALLOWED[folder])}: " + "; ".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in graph:
                continue
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_product() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    # The checker itself must be able to fail: a three-module ring and a self-import are cycles.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d"]]


def test_the_graph_sees_lazy_imports() -> None:
    # balancebench.scenario imports loadtests.policy inside a function: it must still count.
    assert "loadtests.policy" in GRAPH["balancebench.scenario"]
    assert len(GRAPH) > 50
