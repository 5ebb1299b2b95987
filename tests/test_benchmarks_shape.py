"""The benchmarks' shape, checked statically: scenarios on one harness, short functions, no machine paths.

Nothing here runs a benchmark (they take minutes and tests never assert on timing); each scenario's
``--quick`` smoke run is how to check one still runs.
"""

from __future__ import annotations

import ast
import importlib.util
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


def _timing_module():
    """``benchmarks/harness/timing.py`` loaded from its file (it imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("bench_timing", BENCHMARKS / "harness" / "timing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("block", [1, 4, 40])
def test_latency_turns_give_every_participant_the_same_texts_once(block: int):
    """latency.py's one-client turns: each participant sends every text exactly once, in the same order."""
    names, texts = ["engine", "server", "before", "floor"], [f"text {i}" for i in range(100)]
    turns = list(_timing_module().turns(names, texts, block))
    for name in names:
        assert [text for who, text, _ in turns if who == name] == texts
    counted = {name: sum(1 for who, _, kept in turns if who == name and kept) for name in names}
    blocks = -(-len(texts) // block)
    assert counted == dict.fromkeys(names, len(texts) if block == 1 else len(texts) - blocks)


def test_latency_back_to_back_turns_are_blocks_whose_order_rotates():
    """Back to back: a participant's block is consecutive, the first of each block is not counted, and each
    participant leads in turn (so drift on a shared machine cancels)."""
    names, texts = ["a", "b", "c"], list(range(12))
    turns = list(_timing_module().turns(names, texts, 4))
    runs = [turns[i : i + 4] for i in range(0, len(turns), 4)]
    assert all(len({who for who, _, _ in run}) == 1 for run in runs)
    assert all([kept for _, _, kept in run] == [False, True, True, True] for run in runs)
    leaders = [runs[step * len(names)][0][0] for step in range(len(texts) // 4)]
    assert leaders == ["a", "b", "c"]
    assert [who for who, _, _ in turns[:3]] == ["a"] * 3


def test_latency_has_both_one_client_modes_as_flags():
    """The back-to-back mode is a command, not a script in /tmp: flags, both modes in the results table."""
    source = (BENCHMARKS / "latency.py").read_text(encoding="utf-8")
    for needed in ('"--modes"', '"--block"', 'INTERLEAVED = "interleaved"', 'BACK_TO_BACK = "back-to-back"'):
        assert needed in source, needed
    assert "| mode |" in source
