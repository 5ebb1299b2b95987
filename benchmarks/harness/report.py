"""Results files, each stamped with what the figures depend on.

:func:`stamp`: the git commit (and whether ``src/`` or ``benchmarks/`` had uncommitted changes), the date,
the CPU model and the instruction sets that decide int8 and bf16 speed, the core count, the load average
and the library versions. :func:`write` puts it in the JSON (key ``"stamp"``) and as the last line of the
Markdown. ``--quick`` runs (smoke runs at tiny sizes) write under ``benchmarks/.cache/quick-results``, never
over the committed results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.workload import BENCHMARKS, REPO, say, sts_file

RESULTS = BENCHMARKS / "results"
QUICK_RESULTS = BENCHMARKS / ".cache" / "quick-results"
LIBRARIES = (
    "embedrt",
    "onnxruntime",
    "openvino",
    "tokenizers",
    "numpy",
    "torch",
    "transformers",
    "sentence-transformers",
    "nncf",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "ray",
)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def commit() -> str:
    """Short commit of the checkout, `` (with uncommitted changes)`` when src/ or benchmarks/ differ from it."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results")
    return head + (" (with uncommitted changes)" if changed else "")


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def stamp() -> dict[str, Any]:
    """What a figure was measured on and with; also written by every scenario at its start and end."""
    from embedrt.tools.bench import machine_facts

    facts = machine_facts()
    return {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": facts["cpu"],
        "cpu_flags": facts["isa"],
        "cores": os.cpu_count(),
        "usable_cores": facts["usable_cores"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def stamp_line(record: dict[str, Any]) -> str:
    """The stamp as one Markdown line."""
    libraries = ", ".join(f"{k} {v}" for k, v in record["libraries"].items() if v != "not installed")
    return (
        f"Stamp: commit {record['commit']}, {record['date']}, {record['cpu']} ({record['cpu_flags']}), "
        f"{record['cores']} cores ({record['usable_cores']} usable), load average {record['load_average']}, "
        f"Python {record['python']}; {libraries}."
    )


def add_quick(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smoke run at tiny sizes; results go to benchmarks/.cache/quick-results"
    )


def one_process_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The flags of the one-process A/B scenarios on the stand-in (``int8_ab``, ``ov_overhead``): artefact cache,
    data, threads, rounds, batch size, results folder and ``--quick``; a scenario adds its own to the result."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--data", type=Path, default=sts_file())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    add_quick(parser)
    return parser


def quick(args: argparse.Namespace, **small: Any) -> None:
    """With ``--quick``: set each named option to its tiny value, and results to :data:`QUICK_RESULTS`."""
    if not args.quick:
        return
    for name, value in small.items():
        setattr(args, name, value)
    if hasattr(args, "out"):
        args.out = QUICK_RESULTS


def results_dir(args: argparse.Namespace) -> Path:
    """Where this run's results go: ``args.out`` when the scenario has it, else results/ (quick: elsewhere)."""
    out = getattr(args, "out", None) or (QUICK_RESULTS if getattr(args, "quick", False) else RESULTS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write(out: Path, stem: str, record: dict[str, Any], markdown: str | None = None) -> dict[str, Any]:
    """``out/STEM.json`` (``record`` with the stamp) and, when given, ``out/STEM.md`` (the stamp as last line)."""
    stamped = {**record, "stamp": stamp()}
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stamped, indent=2, ensure_ascii=False) + "\n"
    (out / f"{stem}.json").write_text(text, encoding="utf-8")
    if markdown is not None:
        (out / f"{stem}.md").write_text(markdown.rstrip("\n") + "\n\n" + stamp_line(stamped["stamp"]) + "\n", "utf-8")
    say(f"wrote {out / stem}.json" + (" and .md" if markdown is not None else ""))
    return stamped
