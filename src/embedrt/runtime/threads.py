"""How many threads an engine uses when the caller does not say: the CPUs this process may really use.

Two limits apply. The affinity mask (``taskset``, ``cpuset.cpus``, Kubernetes' static CPU manager)
shows in ``os.sched_getaffinity``. A CPU quota (``docker run --cpus 2``, Kubernetes ``limits.cpu``) does
not: it is a cgroup CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), and a
pool sized to every host core under it is throttled each period, stalling batches midway. The default
is the smaller of the two, the quota rounded down (a thread for half a CPU would be throttled half the
time), and never less than one. Standard library only; any unreadable cgroup file means "no quota".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use: its affinity mask, and the tightest cgroup quota (CPUs, or None)."""

    affinity: int
    quota: float | None

    @property
    def threads(self) -> int:
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.floor(self.quota)))

    def describe(self) -> str:
        """``2 threads (cgroup CPU quota 2.5, 16 cores in the affinity mask)``, for logs."""
        limit = f"cgroup CPU quota {self.quota:g}" if self.quota is not None else "no cgroup CPU quota"
        return f"{self.threads} threads ({limit}, {self.affinity} cores in the affinity mask)"


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root inside the hierarchy, mount point, super options) of every cgroup mount."""
    mounts = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) > 4 and tail and tail[0] in ("cgroup", "cgroup2"):
            options = set(tail[2].split(",")) if len(tail) > 2 else set()
            mounts.append((tail[0], fields[3], fields[4], options))
    return mounts


def _own_cgroups(text: str) -> dict[str, str]:
    """``{"": v2 path, "cpu": v1 path, ...}`` from ``/proc/self/cgroup`` (``id:controllers:path`` lines)."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2]
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _up_to_mount(mount_point: Path, mount_root: str, path: str) -> list[Path]:
    """The cgroup's directory under ``mount_point``, then each parent up to the mount point itself.

    In a container with its own cgroup namespace the path is ``/`` and the mount point is the cgroup.
    """
    relative = path[len(mount_root) :] if mount_root != "/" and path.startswith(mount_root) else path
    here = mount_point / relative.lstrip("/")
    if not here.is_dir():
        here = mount_point
    chain = [here]
    while here != mount_point and here.parent != here:
        here = here.parent
        chain.append(here)
    return chain


def _quota_v2(directory: Path) -> float | None:
    fields = (directory / "cpu.max").read_text().split()  # "max 100000" or "150000 100000"
    if not fields or fields[0] == "max":
        return None
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return int(fields[0]) / period


def _quota_v1(directory: Path) -> float | None:
    quota = int((directory / "cpu.cfs_quota_us").read_text())
    period = int((directory / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CFS quota, in CPUs, over this process's cgroup and its ancestors; ``None`` if none.

    ``root`` prefixes every path read (``proc/self/...`` and the mount points), for tests.
    """
    try:
        mounts = _cgroup_mounts((root / "proc/self/mountinfo").read_text())
        own = _own_cgroups((root / "proc/self/cgroup").read_text())
    except OSError:
        return None
    quotas = []
    for fstype, mount_root, mount_point, options in mounts:
        if fstype == "cgroup2":
            key, read = "", _quota_v2
        elif "cpu" in options:
            key, read = "cpu", _quota_v1
        else:
            continue
        if key not in own:
            continue
        for directory in _up_to_mount(root / mount_point.lstrip("/"), mount_root, own[key]):
            try:
                quota = read(directory)
            except (OSError, ValueError, IndexError):
                continue  # no such file at this level (or not a CPU controller here)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def cpu_budget() -> CpuBudget:
    return CpuBudget(affinity=_affinity(), quota=cgroup_cpu_quota())


def default_threads() -> int:
    """Engine threads when the caller gives none: the affinity mask, capped by a cgroup CPU quota."""
    return cpu_budget().threads
