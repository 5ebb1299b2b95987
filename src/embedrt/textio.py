"""Small, shared file helpers: reading text lines with located errors, writing outputs atomically."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from embedrt.errors import InputError


def read_lines(path: str) -> list[str]:
    """Texts of a UTF-8 file, one per line (``-`` reads standard input); errors name the line."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from err
    texts = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InputError(f"{path}:{number}: not valid UTF-8 ({err.reason}); convert the file to UTF-8") from err
    return texts


def write_npy_atomic(path: Path, array) -> None:
    """Save ``array`` to ``path`` through a temporary file, so an interrupted run leaves no bad file."""
    import numpy as np

    if path.suffix != ".npy":
        raise InputError(f"--output {path} must end in .npy")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {err.strerror}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
