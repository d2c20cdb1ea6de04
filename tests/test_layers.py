"""The import structure stays as designed: layers whose imports only go down, no circle.

Every ``import`` in ``pipelines/``, ``workbench/`` and ``screens/`` counts, including the
ones inside functions (lazy imports are still dependencies). A new module must be given
a layer here: an unplaced module fails the test rather than slipping through.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipelines", "workbench", "screens")

# Bottom to top. Modules of one rank may import each other only within their own group:
# compile and training are siblings, neither imports the other.
LAYERS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "base", ("pipelines", "pipelines.config", "pipelines.vendor_config", "pipelines.events", "pipelines.files",
                 "pipelines.cpu", "pipelines.resources", "pipelines.isolate", "pipelines.layout", "pipelines.faults")),
    (1, "data", ("pipelines.data",)),
    (2, "modeling", ("pipelines.modeling",)),
    (3, "runtime", ("pipelines.runtime",)),
    (4, "evaluate", ("pipelines.evaluate",)),
    (5, "compile", ("pipelines.compile",)),
    (5, "training", ("pipelines.training",)),
    (6, "stages", ("pipelines.stages",)),
    (7, "workbench logic", ("workbench",)),
    (8, "screens", ("screens",)),
    (9, "app", ("workbench.app",)),
    (10, "cli", ("workbench.cli",)),
)


def module_files(root: str = ROOT) -> dict[str, str]:
    """Dotted module name -> file, for every module of the three packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), root)[: -len(".py")]
                    dotted = rel.replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")
                    anchor = parts if is_package else parts[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def layer_of(module: str) -> tuple[int, str] | None:
    best = None
    for rank, group, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank, group)
    return None if best is None else best[1:]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a layer or sideways into a sibling group."""
    problems = []
    for source, targets in sorted(graph.items()):
        src = layer_of(source)
        for target in sorted(targets):
            dst = layer_of(target)
            if src is None or dst is None:
                continue
            if dst[1] != src[1] and dst[0] >= src[0]:
                problems.append(f"{source} ({src[1]}, layer {src[0]}) imports {target} ({dst[1]}, layer {dst[0]})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
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


def layer_listing() -> str:
    return "\n".join(f"  {rank:2d} {group:16s} {', '.join(prefixes)}" for rank, group, prefixes in LAYERS)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: {unplaced}"


def test_no_import_circle(graph):
    assert cycles(graph) == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles(graph))


def test_imports_only_go_down(graph):
    problems = upward_imports(graph)
    assert problems == [], "imports against the layers (bottom to top):\n" + layer_listing() + "\n" + "\n".join(problems)


def test_pipelines_import_no_ui_and_screens_no_pipelines():
    """pipelines/ renders nothing (neither Textual nor Rich); screens reach the work only
    through the workbench layer (the backend adapter), never pipelines directly."""
    files = module_files()
    offenders = []
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        tops = {n.split(".")[0] for n in names}
        if module.startswith("pipelines") and tops & {"textual", "rich"}:
            offenders.append(f"{module} imports {sorted(tops & {'textual', 'rich'})}")
        if module.startswith("screens") and "pipelines" in tops:
            offenders.append(f"{module} imports pipelines")
    assert offenders == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The checker itself: a planted circle and a planted upward import are both reported."""
    (tmp_path / "pipelines" / "data").mkdir(parents=True)
    (tmp_path / "pipelines" / "runtime").mkdir()
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "data" / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "runtime" / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "data" / "loaders.py").write_text(
        "def f():\n    from pipelines.runtime.engines import open_engine  # upward, inside a function\n"
    )
    (tmp_path / "pipelines" / "runtime" / "engines.py").write_text("from . import predict\n")
    (tmp_path / "pipelines" / "runtime" / "predict.py").write_text("from .engines import open_engine\n")
    planted = import_graph(module_files(str(tmp_path)))
    assert cycles(planted) == [["pipelines.runtime.engines", "pipelines.runtime.predict"]]
    assert upward_imports(planted) == [
        "pipelines.data.loaders (data, layer 1) imports pipelines.runtime.engines (runtime, layer 3)"
    ]
