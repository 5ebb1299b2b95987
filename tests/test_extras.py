"""The extras table in ``embedrt.extras`` says what ``pyproject.toml`` installs, and every message reads it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import embedrt
from embedrt.errors import MissingExtraError
from embedrt.extras import EXTRAS, extra_for, install_command, missing_extra, needs
from embedrt.runtime.backends.select import ENGINE_PACKAGES
from embedrt.server import SERVER_PACKAGES

ROOT = Path(embedrt.__file__).parent
PYPROJECT = ROOT.parents[1] / "pyproject.toml"


def _optional_dependencies() -> dict[str, list[str]]:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    tomli = pytest.importorskip("tomli", reason="Python 3.10 reads pyproject.toml with tomli")
    return tomli.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def _distribution(requirement: str) -> str:
    """``onnxruntime-gpu[cuda,cudnn]>=1.31.1; python_version...`` -> ``onnxruntime-gpu``."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return match.group(0)


@pytest.mark.skipif(not PYPROJECT.is_file(), reason="pyproject.toml is not beside the sources (installed wheel)")
def test_the_table_lists_what_pyproject_installs():
    declared = {
        extra: sorted({_distribution(r) for r in requirements})
        for extra, requirements in _optional_dependencies().items()
    }
    table = {extra: sorted(row.packages) for extra, row in EXTRAS.items()}
    assert table == declared, "embedrt/extras.py EXTRAS and pyproject.toml's optional dependencies differ"


def _literal_calls(name: str) -> list[tuple[str, ast.Call]]:
    calls = []
    for path in ROOT.rglob("*.py"):
        if path.name == "extras.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name:
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_every_missing_extra_call_names_packages_the_table_knows():
    calls = _literal_calls("missing_extra")
    assert len(calls) >= 15
    for where, call in calls:
        packages = call.args[0]
        if not isinstance(packages, (ast.Constant, ast.Tuple)):  # names from a table: checked below
            continue
        for package in ast.literal_eval(packages) if isinstance(packages, ast.Tuple) else [ast.literal_eval(packages)]:
            assert extra_for(package), where
        for keyword in call.keywords:
            if keyword.arg == "also":
                install_command(*ast.literal_eval(keyword.value))

    for package in (*SERVER_PACKAGES, *ENGINE_PACKAGES.values()):
        assert extra_for(package)


def test_every_install_command_and_needs_names_a_known_extra():
    for name in ("install_command", "needs"):
        for where, call in _literal_calls(name):
            extras = [ast.literal_eval(arg) for arg in call.args]
            assert all(extra in EXTRAS for extra in extras), where


def test_no_message_spells_an_extra_by_hand():
    spelled = re.compile(r"embedrt\[[a-z0-9,-]+\]")
    allowed = {"extras.py", "cuda_arch.py", "ort_cuda.py"}  # cuda_arch/ort_cuda: docs prose naming gpu-cuda12/gpu
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and spelled.search(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "use embedrt.extras.install_command / needs / missing_extra"


def test_messages_name_the_extra_that_installs_the_package():
    assert str(missing_extra("pyarrow", "Parquet")) == 'Parquet needs pyarrow: pip install "embedrt[io]"'
    assert str(missing_extra("ray", "Ray")) == 'Ray needs ray: pip install "embedrt[ray]"'
    both = missing_extra(("onnx", "onnxruntime"), "the fp16 export")
    assert isinstance(both, MissingExtraError)
    assert str(both) == 'the fp16 export needs onnx and onnxruntime: pip install "embedrt[cpu,export]"'
    also = missing_extra("onnxruntime", "embedrt export", also=("export",))
    assert str(also).endswith('pip install "embedrt[cpu,export]"')
    assert str(missing_extra("prometheus_client", "embedrt serve")).endswith('"embedrt[server]"')
    assert needs("tensorrt") == "needs embedrt[tensorrt]"


def test_an_unknown_extra_or_package_is_a_bug_not_a_message():
    with pytest.raises(KeyError):
        install_command("gpus")
    with pytest.raises(KeyError):
        missing_extra("left-pad", "nothing")
