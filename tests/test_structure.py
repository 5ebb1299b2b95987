"""The package's shape, checked statically: no import cycles, and the runtime only ever reads bundles."""

from __future__ import annotations

import ast
from pathlib import Path

import embedrt

ROOT = Path(embedrt.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("embedrt", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ROOT.rglob("*.py")}


def _top_level_imports(path: Path, known: set[str]) -> set[str]:
    """embedrt modules imported when ``path`` is imported (not inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name in known)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.add(submodule if submodule in known else child.module)
    return {name for name in found if name in known}


def test_no_module_imports_itself_in_a_circle():
    modules = _modules()
    graph = {name: _top_level_imports(path, set(modules)) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_runtime_reads_bundles_and_never_writes_one():
    writers = ("write_manifest", "update_manifest", "atomic_write", "PartialFile")
    elsewhere = ("embedrt.tools", "embedrt.export", "embedrt.server", "embedrt.cli")
    offenders = []
    for path in (ROOT / "runtime").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in writers:
                offenders.append(f"{path.name}: {node.id}")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(elsewhere):
                offenders.append(f"{path.name}: imports {node.module}")
            elif isinstance(node, ast.ImportFrom) and any(alias.name in writers for alias in node.names):
                offenders.append(f"{path.name}: imports {[alias.name for alias in node.names]}")
    assert offenders == []
