"""What commands print besides their results: progress and summaries, on standard error."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
