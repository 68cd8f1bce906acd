"""Process and system figures from /proc, for /api/v1/summaries and /metrics."""

from __future__ import annotations

import os
import time

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_KB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) // 1024


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def rss_kbyte() -> int:
    fields = _read("/proc/self/statm").split()
    return int(fields[1]) * _PAGE_KB if len(fields) > 1 else 0


def meminfo_kbyte() -> dict[str, int]:
    """/proc/meminfo's fields, in KB."""
    found: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            found[name] = int(value[0])
    return found


def mem_total_kbyte() -> int:
    return meminfo_kbyte().get("MemTotal", 0)


def system_cpu_times() -> dict[str, int]:
    """The first line of /proc/stat, named as SRS's system_proc_stats names it."""
    line = _read("/proc/stat").splitlines()[0] if _read("/proc/stat") else "cpu 0 0 0 0"
    names = ("user", "nice", "sys", "idle", "iowait", "irq", "softirq", "steal", "guest")
    values = [int(v) for v in line.split()[1:]]
    return {name: values[i] if i < len(values) else 0 for i, name in enumerate(names)}


def loadavg() -> tuple[float, float, float]:
    parts = _read("/proc/loadavg").split()
    if len(parts) < 3:
        return 0.0, 0.0, 0.0
    return float(parts[0]), float(parts[1]), float(parts[2])


def _process_ticks() -> int:
    stat = _read("/proc/self/stat")
    if not stat:
        return 0
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _system_ticks() -> tuple[int, int]:
    line = _read("/proc/stat").splitlines()[0] if _read("/proc/stat") else "cpu 0 0 0 0"
    values = [int(v) for v in line.split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values), idle


class CpuSampler:
    """CPU% of this process and of the whole system since the previous sample."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._proc = _process_ticks()
        self._sys_total, self._sys_idle = _system_ticks()
        self.process_percent = 0.0
        self.system_percent = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        proc = _process_ticks()
        total, idle = _system_ticks()
        elapsed = now - self._t
        if elapsed > 0:
            self.process_percent = 100.0 * (proc - self._proc) / _CLK / elapsed
        if total > self._sys_total:
            self.system_percent = 100.0 * (1 - (idle - self._sys_idle) / (total - self._sys_total))
        self._t, self._proc, self._sys_total, self._sys_idle = now, proc, total, idle
