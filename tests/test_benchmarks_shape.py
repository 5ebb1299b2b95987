"""The benchmarks' shape, checked statically: scenarios on one harness, short functions, no machine paths.

Nothing here runs a benchmark (they take minutes and tests never assert on timing); each scenario's
``--quick`` smoke run is how to check one still runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(path for path in BENCHMARKS.rglob("*.py") if ".cache" not in path.parts)
#: Scenarios: every script in benchmarks/ but the child runner that compare_cpu.py spawns per engine.
SCENARIOS = [path for path in BENCHMARKS.glob("*.py") if path.name != "engines.py"]
MAX_FUNCTION_LINES = 60


def _name(path: Path) -> str:
    return str(path.relative_to(BENCHMARKS))


def test_the_harness_and_the_scenarios_are_there():
    assert (BENCHMARKS / "harness" / "__init__.py").is_file()
    assert len(SCENARIOS) >= 10, [path.name for path in SCENARIOS]


@pytest.mark.parametrize("path", SCRIPTS, ids=_name)
def test_no_function_is_longer_than_60_lines(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", SCRIPTS, ids=_name)
def test_no_script_edits_sys_path(path: Path):
    """Scenarios import embedrt as installed and the harness from their own folder, never by editing the path."""
    edits = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not edits, f"{_name(path)} uses sys.path on lines {edits}"


def test_no_machine_paths_in_benchmarks():
    """Data and caches are found relative to the clone (or by flag / EMBEDRT_DATA), never at a machine path."""
    files = [
        path
        for path in BENCHMARKS.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".sh", ".txt"}
        and not {".cache", "results"} & set(path.parts)
    ]
    named = [_name(path) for path in files if "/work/" in path.read_text(encoding="utf-8")]
    assert not named, f"machine paths (/work/...) in {named}"


@pytest.mark.parametrize("path", SCENARIOS, ids=_name)
def test_every_scenario_runs_on_the_harness_and_has_a_smoke_flag(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        node.module.split(".")[0] if isinstance(node, ast.ImportFrom) and node.module else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert "harness" in imported, f"{_name(path)} does not use benchmarks/harness"
    assert "--quick" in path.read_text(encoding="utf-8") or "add_quick" in path.read_text(encoding="utf-8"), (
        f"{_name(path)} has no --quick smoke flag"
    )


@pytest.mark.parametrize("name", ["engines.py", "harness/peers.py", "harness/timing.py", "harness/offline.py"])
def test_what_the_peers_venv_loads_imports_no_embedrt_at_import_time(name: str):
    """The peers' venv (setup_peers.sh) has no embedrt: engines.py and what it imports load without it."""
    tree = ast.parse((BENCHMARKS / name).read_text(encoding="utf-8"))
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name for node in top for alias in node.names
    }
    assert not {m for m in modules if m.split(".")[0] in {"embedrt", "numpy", "onnxruntime", "openvino"}}, modules
