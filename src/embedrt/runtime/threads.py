"""How many threads an engine uses when the caller does not say: the cores this process may run on."""

from __future__ import annotations

import os


def default_threads() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
