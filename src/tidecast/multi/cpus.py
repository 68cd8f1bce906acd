"""How many CPUs this process may use: affinity mask and cgroup quota (`workers auto`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_v2_quota(root: Path, proc_cgroup: str) -> float | None:
    """CPUs allowed by cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"), the tightest up the tree."""
    relative = ""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            relative = line[3:].strip().lstrip("/")
    best: float | None = None
    path = root / relative if relative else root
    while True:
        try:
            quota, _, period = (path / "cpu.max").read_text().strip().partition(" ")
            if quota != "max" and period:
                cpus = int(quota) / int(period)
                best = cpus if best is None else min(best, cpus)
        except (OSError, ValueError):
            pass
        if path == root or root not in path.parents:
            return best
        path = path.parent


def _cgroup_v1_quota(root: Path) -> float | None:
    for directory in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = int((root / directory / "cpu.cfs_quota_us").read_text())
            period = int((root / directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int:
    """CPUs this process can run on (sched_getaffinity), capped by a container's CPU quota, at least 1.

    A quota of 1.5 CPUs counts as 2: the second process still gets half a core,
    and a worker idling at the quota costs little, while one fewer worker would
    leave that half unused.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    quota = _cgroup_v2_quota(root, proc_cgroup) if (root / "cgroup.controllers").exists() else None
    if quota is None:
        quota = _cgroup_v1_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def worker_count(setting: int | str) -> int:
    """The `workers` directive as a number of processes."""
    if setting == "auto":
        return available_cpus()
    return max(1, int(setting))
