"""Plain helpers and data shared by the test modules (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

# Sentences used across tests beyond the export's own parity set.
TEST_TEXTS = [
    "花呗怎么还款",
    "我想查询一下我的订单状态，订单号是12345",
    "今天天气不错！",
    "",
    "   ",
    "混合 English 和中文 text 123",
    "😀表情符号测试😀",
    "这是一个非常长的句子，" * 40,
    "ＡＢＣ全角",
    "短",
]

# A small mixed set (empty, short, mixed-language, full-width, long) for file and dataset round trips.
SHORT_TEXTS = [
    "花呗怎么还款",
    "",
    "今天天气不错！",
    "混合 English 和中文 text 123",
    "短",
    "这是一个非常长的句子，" * 8,
    "ＡＢＣ全角",
]

#: The API key the test servers are started with.
API_KEY = "test-key"

#: Python prelude that makes importing ``BLOCKED`` (a set of top-level module names) fail.
_BLOCKER = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _Block())
"""


def run_cli(*args, env: dict[str, str] | None = None, input=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m embedrt.cli ARGS`` in a new process; text output unless ``input`` is bytes."""
    return subprocess.run(
        [sys.executable, "-m", "embedrt.cli", *map(str, args)],
        capture_output=True,
        text=not isinstance(input, bytes),
        input=input,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_python_blocking(blocked, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python where importing any of ``blocked`` raises ImportError."""
    script = f"BLOCKED = {set(blocked)!r}\n{_BLOCKER}\n{code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def run_cli_blocking(blocked, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``embedrt ARGS`` in a new Python where importing any of ``blocked`` raises ImportError.

    On success, standard error ends with ``LOADED [...]``: the blocked modules that got imported anyway.
    """
    code = f"""
from embedrt.cli import main
code = main({list(map(str, args))!r})
if code == 0:
    print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED), file=sys.stderr)
sys.exit(code)
"""
    return run_python_blocking(blocked, code, timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str | None = None) -> str:
    """The command failed with status 1 and one ``embedrt: error:`` line last (progress may precede it)."""
    err = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("embedrt: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    if pattern is not None:
        assert re.search(pattern, errors[0]), errors[0]
    return errors[0]
