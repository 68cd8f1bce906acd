"""Reload on config file changes, including Kubernetes ConfigMap updates.

The kubelet updates a mounted ConfigMap atomically: it writes a new timestamped
directory, points a `..data_tmp` symlink at it and renames that over `..data`.
The config file itself is a symlink through `..data`, so the file never changes
in place; the directory sees IN_MOVED_TO for `..data`. We watch the directory,
as SRS does, for that name or the config file's own name, and debounce.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidecast.config import Config

log = logging.getLogger("tidecast.config")

IN_MODIFY = 0x002
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")
DEBOUNCE_S = 0.5


def in_container(config: Config) -> bool:
    if config.in_docker:
        return True
    # SRS's rule (cgroup or `in_docker`, which the image sets via SRS_IN_DOCKER), plus
    # Kubernetes' own marker: cgroup v2 hides the container from /proc/1/cgroup.
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        with open("/proc/1/cgroup") as f:
            text = f.read()
    except OSError:
        return False
    return any(mark in text for mark in ("/docker", "/kubepods", "/containerd"))


def auto_reload_enabled(config: Config) -> bool:
    return config.inotify_auto_reload or (config.auto_reload_for_docker and in_container(config))


class ConfigWatcher:
    """Calls `on_change` (debounced) when the config file or `..data` changes."""

    def __init__(self, path: str, on_change: Callable[[], object]) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.names = {os.path.basename(self.path), "..data"}
        self.on_change = on_change
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        if libc is not None and hasattr(libc, "inotify_init1"):
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                wd = libc.inotify_add_watch(fd, self.directory.encode(), IN_MODIFY | IN_CREATE | IN_MOVED_TO)
                if wd >= 0:
                    self._fd = fd
                    loop.add_reader(fd, self._read)
                    log.info("watching %s for config changes (inotify)", self.directory)
                    return
                os.close(fd)
        # No inotify (another OS, or the watch limit is used up): poll instead.
        self._poll = loop.create_task(self._poll_loop())
        log.info("watching %s for config changes (polling)", self.path)

    def stop(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._poll is not None:
            self._poll.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        pos = 0
        fire = False
        while pos + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0").decode(errors="replace")
            pos += _EVENT.size + length
            if name in self.names and mask & (IN_MODIFY | IN_CREATE | IN_MOVED_TO):
                log.debug("config watcher: %s mask=%#x", name, mask)
                fire = True
        if fire and os.path.exists(self.path):
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(DEBOUNCE_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.on_change()

    def _signature(self) -> tuple[str, float, int]:
        try:
            st = os.stat(self.path)
            return os.path.realpath(self.path), st.st_mtime, st.st_size
        except OSError:
            return "", 0.0, 0

    async def _poll_loop(self) -> None:
        last = self._signature()
        while True:
            await asyncio.sleep(1.0)
            now = self._signature()
            if now != last and now[0]:
                last = now
                self._schedule()
