"""The house: three rooms, imports pointing one way (dashboard -> runs -> engine), no cycle, Streamlit in one room.

Walks every module's imports, the ones inside functions too (a lazy import is still an arrow), with ``ast``: no
module is imported, so the test sees the code as written.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sslviz"
ROOMS = ("engine", "runs", "dashboard")  # each may import the rooms before it, never one after it


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The sslviz modules (or packages) ``name`` imports, and the outside top-level packages."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:  # "from . import trainer" imports the module sslviz.engine.trainer
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "sslviz" and parts[1] in ROOMS else None


def test_the_walk_sees_the_rooms_and_their_arrows():
    assert {_room(m) for m in MODULES} >= set(ROOMS)
    assert "sslviz.engine.trainer" in GRAPH["sslviz.runs.worker"]  # a lazy import inside a function counts
    assert "sslviz.engine.registry" in GRAPH["sslviz.engine.trainer"]


@pytest.mark.parametrize("room", ROOMS)
def test_imports_point_one_way(room):
    later = set(ROOMS[ROOMS.index(room) + 1:])
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if _room(m) == room
                   for t in targets if _room(t) in later)
    assert not wrong, f"{room} may import only {ROOMS[:ROOMS.index(room)]} and itself: {wrong}"


def test_the_import_graph_has_no_cycle():
    edges = {m: {t for t in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    state, stack = {}, []

    def visit(m):  # depth-first; a grey node met again closes a cycle
        state[m] = "grey"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "grey":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "black"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_only_the_dashboard_imports_streamlit():
    users = sorted(m for m, targets in GRAPH.items() if any(t.split(".")[0] == "streamlit" for t in targets))
    assert users and all(_room(m) == "dashboard" for m in users), users
