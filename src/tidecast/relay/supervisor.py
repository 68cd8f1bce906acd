"""Running external programs (ffmpeg, exec commands) for the life of a stream.

Each program runs in its own process group and session, so a stop reaches
everything it started; with PR_SET_PDEATHSIG the kernel SIGKILLs it when
tidecast dies, even by kill -9. The death signal fires when the *thread* that
forked exits, which is why processes are started from the event loop thread
(asyncio forks in the calling thread) and never from an executor.

A `Supervised` process is restarted when it exits while it is wanted, after an
exponential backoff; after `max_failures` quick deaths in a row it is given up
("failed"), so a broken command line cannot fork forever. stderr lines go to
tidecast's log under the process's name, rate limited, and the last few are
kept for the API.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("tidecast.relay")

PR_SET_PDEATHSIG = 1

_LINE_END = re.compile(rb"\r\n|\r|\n")
_PROGRESS = re.compile(r"\s*(frame=|size=)\s*\S")
_BANNER = re.compile(r"(ffmpeg|ffprobe) version |  (built with|configuration:|lib(av|sw|post)\w*\s+\d)")

STATE_STARTING = "starting"
STATE_RUNNING = "running"
STATE_BACKOFF = "backoff"
STATE_STOPPING = "stopping"
STATE_STOPPED = "stopped"
STATE_FAILED = "failed"

_libc: Any = None


def _child_setup(parent: int) -> None:
    """Runs in the forked child before exec: die with the parent, even on its SIGKILL."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group stop still applies
    # The parent may have died between fork and prctl; then nobody will ever
    # deliver the death signal, so do it now. (Compared with the parent's pid,
    # not with 1: in a container tidecast itself is often pid 1.)
    if os.getppid() != parent:
        os._exit(1)


def _load_libc() -> None:
    """Load libc in the parent, so the child's preexec hook only makes one call."""
    global _libc
    if _libc is None:
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial: float = 1.0  # seconds before the first restart
    factor: float = 2.0
    cap: float = 30.0
    stable_after: float = 10.0  # a run this long resets the backoff and the failure count
    max_failures: int | None = 10  # quick deaths in a row before giving up; None: never give up

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.initial * self.factor ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class Redirects:
    """Where stdout/stderr go: a file path, or None (stdout discarded, stderr to the log)."""

    stdout: str | None = None
    stderr: str | None = None


class _LineLimiter:
    """At most `burst` lines per `window` seconds reach the log; the rest are counted."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self.start = 0.0
        self.count = 0
        self.suppressed = 0

    def allow(self, now: float) -> tuple[bool, int]:
        """(log this line?, lines suppressed in the window that just ended)."""
        ended = 0
        if now - self.start >= self.window:
            ended, self.suppressed = self.suppressed, 0
            self.start, self.count = now, 0
        self.count += 1
        if self.count > self.burst:
            self.suppressed += 1
            return False, ended
        return True, ended


class Supervised:
    """One external program, kept running while wanted."""

    def __init__(
        self,
        kind: str,
        name: str,
        argv: list[str],
        *,
        labels: dict[str, str] | None = None,
        policy: RestartPolicy | None = None,
        redirects: Redirects | None = None,
        cwd: str | None = None,
        stop_timeout: float = 3.0,
        on_exit: Any = None,
    ) -> None:
        if not argv:
            raise ValueError(f"{kind} {name}: empty command line")
        self.kind = kind  # exec, transcode, ingest
        self.name = name  # e.g. "__defaultVhost__/live/livestream ld", used in log lines
        self.argv = list(argv)
        self.labels = dict(labels or {})
        self.policy = policy or RestartPolicy()
        self.redirects = redirects or Redirects()
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.on_exit = on_exit  # called with the return code after every exit
        self.state = STATE_STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.failures = 0
        self.started: float | None = None  # wall time of the current (or last) start
        self.last_exit: int | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.progress = ""  # ffmpeg's last progress line
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._wake = asyncio.Event()
        self._limiter = _LineLimiter()

    # ------------------------------------------------------------ control

    def start(self) -> None:
        """Start (and keep restarting) the program; call from the event loop thread."""
        if self._task is not None and not self._task.done():
            return
        self._wanted = True
        _load_libc()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.kind} {self.name}")

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after `stop_timeout`, and wait for the exit."""
        self._wanted = False
        self._wake.set()
        task = self._task
        if task is None:
            return
        if self.state in (STATE_RUNNING, STATE_STARTING):
            self.state = STATE_STOPPING
        await self._terminate()
        if not task.done():
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def kill_now(self) -> None:
        """SIGKILL the group at once: for the exit path where nothing may be awaited."""
        self._wanted = False
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._task is not None:
            self._task.cancel()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            while self._wanted:
                self.state = STATE_STARTING
                began = time.monotonic()
                try:
                    proc = await self._spawn()
                except OSError as exc:
                    rc: int | None = None
                    log.warning("%s %s: cannot start %s: %s", self.kind, self.name, self.argv[0], exc)
                else:
                    if not self._wanted:  # stopped while it was being forked
                        await self._terminate()
                        break
                    self.state = STATE_RUNNING
                    rc = await self._wait(proc)
                if not self._wanted:
                    break
                ran = time.monotonic() - began
                self.failures = 1 if ran >= self.policy.stable_after else self.failures + 1
                limit = self.policy.max_failures
                if limit is not None and self.failures >= limit and ran < self.policy.stable_after:
                    self.state = STATE_FAILED
                    log.error(
                        "%s %s: gave up after %d quick exits in a row (last: %s); last stderr: %s",
                        self.kind,
                        self.name,
                        self.failures,
                        _describe_rc(rc),
                        " | ".join(list(self.stderr_tail)[-3:]) or "(none)",
                    )
                    return
                delay = self.policy.delay(self.failures)
                self.state = STATE_BACKOFF
                log.warning(
                    "%s %s: %s after %.1fs, restart %d in %.1fs",
                    self.kind,
                    self.name,
                    _describe_rc(rc),
                    ran,
                    self.restarts + 1,
                    delay,
                )
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                if self._wanted:
                    self.restarts += 1
        finally:
            last = self._proc
            if last is not None and last.returncode is None:  # cancelled: never leave it running
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(last.pid, signal.SIGKILL)
            if self.state != STATE_FAILED:
                self.state = STATE_STOPPED
            self.pid = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        stdout: int | TextIO = asyncio.subprocess.DEVNULL
        stderr: int | TextIO = asyncio.subprocess.PIPE
        opened: list[TextIO] = []
        try:
            if self.redirects.stdout:
                stdout = open(self._path(self.redirects.stdout), "a")  # noqa: SIM115 -- handed to the child
                opened.append(stdout)
            if self.redirects.stderr:
                stderr = open(self._path(self.redirects.stderr), "a")  # noqa: SIM115 -- handed to the child
                opened.append(stderr)
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: a stop reaches its children too
                preexec_fn=functools.partial(_child_setup, os.getpid()),
            )
        finally:
            for f in opened:
                f.close()  # the child has its own copy
        self._proc = proc
        self.pid = proc.pid
        self.started = time.time()
        log.info("%s %s: started pid %d: %s", self.kind, self.name, proc.pid, " ".join(self.argv))
        return proc

    def _path(self, path: str) -> str:
        return path if os.path.isabs(path) or not self.cwd else os.path.join(self.cwd, path)

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        reader = None
        if proc.stderr is not None:
            reader = asyncio.get_running_loop().create_task(self._read_stderr(proc.stderr))
        try:
            rc = await proc.wait()
        finally:
            if reader is not None and not reader.done():
                # The last lines (why it died) are still in the pipe; read them, briefly.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(1.0):
                        await reader
        self.last_exit = rc
        if self.on_exit is not None:
            with contextlib.suppress(Exception):
                self.on_exit(rc)
        return rc

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        # ffmpeg ends its progress lines with "\r", not "\n": split on both.
        pending = b""
        while True:
            data = await stream.read(65536)
            if not data:
                if pending:
                    self._on_line(pending)
                return
            pending += data
            *lines, pending = _LINE_END.split(pending)
            for raw in lines:
                self._on_line(raw)
            if len(pending) > 65536:  # a line without an end: log what there is
                self._on_line(pending)
                pending = b""

    def _on_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if not line.strip():
            return
        if _PROGRESS.match(line):
            self.progress = line.strip()  # "frame= 353 fps= 16 …": for the API, not the log
            return
        if _BANNER.match(line):
            return  # ffmpeg's version banner, at every start
        self.stderr_tail.append(line)
        ok, suppressed = self._limiter.allow(time.monotonic())
        if suppressed:
            log.info("%s %s: (%d stderr lines not logged)", self.kind, self.name, suppressed)
        if ok:
            log.info("%s %s: %s", self.kind, self.name, line)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            log.warning(
                "%s %s: pid %d ignored SIGTERM for %.1fs, killing", self.kind, self.name, proc.pid, self.stop_timeout
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Whatever else the program left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------ reporting

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "pid": self.pid,
            "command": " ".join(self.argv),
            "state": self.state,
            "restarts": self.restarts,
            "started": int(self.started * 1000) if self.started else None,
            "last_exit": self.last_exit,
            "progress": self.progress,
            **self.labels,
        }


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "did not start"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with {rc}"


class Supervisor:
    """Every external process tidecast runs, for the API, the metrics and the exit."""

    def __init__(self) -> None:
        self.processes: list[Supervised] = []

    def add(self, process: Supervised) -> Supervised:
        self.processes.append(process)
        process.start()
        return process

    async def remove(self, process: Supervised) -> None:
        await process.stop()
        if process in self.processes:
            self.processes.remove(process)

    async def close(self) -> None:
        processes, self.processes = self.processes, []
        await asyncio.gather(*(p.stop() for p in processes), return_exceptions=True)

    def kill_all(self) -> None:
        for p in self.processes:
            p.kill_now()

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.processes]

    def metrics(self) -> Iterator[Metric]:
        labels = ["kind", "name", "state"]
        up = GaugeMetricFamily(
            "tidecast_relay_processes", "external processes (exec, transcode, ingest), 1 each, by state", labels=labels
        )
        restarts = CounterMetricFamily(
            "tidecast_relay_process_restarts", "restarts of an external process", labels=["kind", "name"]
        )
        for p in self.processes:
            up.add_metric([p.kind, p.name, p.state], 1)
            restarts.add_metric([p.kind, p.name], p.restarts)
        yield up
        yield restarts
