"""Default thread counts follow a container's CPU quota, read from fake cgroup trees (v2, v1, namespaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrt.runtime.threads import CpuBudget, cgroup_cpu_quota

V2_MOUNT = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
)


def make_tree(root: Path, mountinfo: str, cgroup: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_v2_takes_the_tightest_quota_up_to_the_mount(tmp_path):
    """Kubernetes often sets the limit on the pod's cgroup, above the container's own ``max``."""
    root = make_tree(
        tmp_path,
        V2_MOUNT,
        "0::/kubepods/pod1/ctr\n",
        {
            "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n",
            "/sys/fs/cgroup/kubepods/pod1/cpu.max": "250000 100000\n",
            "/sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_quota(root) == 2.5


def test_v2_in_a_cgroup_namespace_reads_the_mount_point(tmp_path):
    root = make_tree(tmp_path, V2_MOUNT, "0::/\n", {"/sys/fs/cgroup/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_quota(root) == 1.5


def test_v1_quota_and_no_quota(tmp_path):
    files = {
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    root = make_tree(tmp_path / "a", V1_MOUNTS, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n", files)
    assert cgroup_cpu_quota(root) == 2.0
    unlimited = {name: "-1\n" if name.endswith("quota_us") else text for name, text in files.items()}
    root = make_tree(tmp_path / "b", V1_MOUNTS, "3:cpu,cpuacct:/docker/abc\n", unlimited)
    assert cgroup_cpu_quota(root) is None


def test_nothing_readable_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None  # no /proc at all (macOS, or a sandbox)
    root = make_tree(tmp_path / "x", V2_MOUNT, "0::/a\n", {"/sys/fs/cgroup/a/cpu.max": "garbage\n"})
    assert cgroup_cpu_quota(root) is None


@pytest.mark.parametrize(
    "affinity, quota, threads",
    [(16, None, 16), (16, 2.0, 2), (16, 2.5, 2), (16, 0.5, 1), (2, 8.0, 2), (1, None, 1)],
)
def test_threads_follow_the_smaller_limit_rounded_down(affinity, quota, threads):
    budget = CpuBudget(affinity=affinity, quota=quota)
    assert budget.threads == threads
    assert budget.describe().startswith(f"{threads} threads (")


def test_this_machine_reads_without_error():
    from embedrt.runtime.threads import cpu_budget, default_threads

    assert default_threads() == cpu_budget().threads >= 1
