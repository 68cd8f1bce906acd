"""The process `tidecast serve` becomes with `workers N` (N > 1): it starts N workers and keeps them running.

Workers are `python -m tidecast serve --worker-role ROLE` children bound to the
same public ports (SO_REUSEPORT). The supervisor owns the pid file, so
`tidecast grace/reload/stop` and preStop hooks signal it; it passes every
signal on to every worker, restarts a worker that dies (with a backoff, so a
worker that crashes at once does not spin), and exits when all workers have
exited after a quit signal: a SIGQUIT is a graceful drain of every worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from tidecast.multi.role import ROLE_ENV, Sibling, WorkerRole

log = logging.getLogger("tidecast.workers")

FORWARDED = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
QUIT_SIGNALS = (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT)
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
STABLE_S = 30.0  # a worker that ran this long starts its next crash at the first backoff step again
START_FAILURE_S = 5.0  # a first start that exits 1 this quickly is a config or port problem: give up
POLL_S = 0.1


def _private_ports(count: int) -> list[int]:
    """Free loopback ports, all held open together so none is handed out twice."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


class _Worker:
    __slots__ = ("crashes", "due", "exit_code", "index", "proc", "started", "starts")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.starts = 0
        self.crashes = 0
        self.due = 0.0  # when a restart is due (monotonic), after a crash
        self.exit_code: int | None = None


class Supervisor:
    def __init__(self, count: int, serve_args: list[str]) -> None:
        """`serve_args`: what follows `tidecast serve` for each worker (the config options)."""
        ports = _private_ports(2 * count)
        siblings = tuple(Sibling(i, ports[2 * i], ports[2 * i + 1]) for i in range(count))
        self.roles = [WorkerRole(i, siblings, secrets.token_hex(16), os.getpid()) for i in range(count)]
        token = self.roles[0].token
        self.roles = [WorkerRole(r.index, siblings, token, r.supervisor_pid) for r in self.roles]
        self.serve_args = serve_args
        self.workers = [_Worker(i) for i in range(count)]
        self.quitting = False
        self.restarts = 0

    # ------------------------------------------------------------ children

    def _spawn(self, worker: _Worker) -> None:
        role = self.roles[worker.index]
        argv = [sys.executable, "-m", "tidecast", "serve", *self.serve_args, "--worker", str(worker.index)]
        env = {**os.environ, ROLE_ENV: role.to_json()}
        worker.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)
        worker.started = time.monotonic()
        worker.starts += 1
        worker.exit_code = None
        log.info("worker %d started, pid %d", worker.index, worker.proc.pid)

    def _forward(self, signo: int, _frame: FrameType | None) -> None:
        if signo in QUIT_SIGNALS:
            self.quitting = True
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                try:
                    worker.proc.send_signal(signo)
                except ProcessLookupError:
                    pass

    def _reap(self, worker: _Worker, now: float) -> bool:
        """Handle a worker that exited; False means the server cannot start at all."""
        assert worker.proc is not None
        code = worker.proc.returncode
        worker.exit_code = code
        pid = worker.proc.pid
        worker.proc = None
        if self.quitting:
            log.info("worker %d (pid %d) exited with %d", worker.index, pid, code)
            return True
        ran = now - worker.started
        if worker.starts == 1 and code == 1 and ran < START_FAILURE_S:
            log.error("worker %d could not start (exit 1, see its log above); stopping the server", worker.index)
            return False
        if ran >= STABLE_S:
            worker.crashes = 0
        delay = BACKOFF_S[min(worker.crashes, len(BACKOFF_S) - 1)]
        worker.crashes += 1
        worker.due = now + delay
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        log.warning(
            "worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s (its players reconnect)",
            worker.index, pid, how, ran, delay,
        )  # fmt: skip
        return True

    # ------------------------------------------------------------ main loop

    def run(self) -> int:
        for signo in FORWARDED:
            signal.signal(signo, self._forward)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), len(self.workers))
        for worker in self.workers:
            self._spawn(worker)
        failed = False
        while True:
            now = time.monotonic()
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is not None and not self._reap(worker, now):
                    failed = True
                    self.quitting = True
                    self._forward(signal.SIGTERM, None)
            alive = [w for w in self.workers if w.proc is not None]
            if self.quitting and not alive:
                break
            if not self.quitting:
                for worker in self.workers:
                    if worker.proc is None and now >= worker.due:
                        self.restarts += 1
                        self._spawn(worker)
            time.sleep(POLL_S)
        if failed:
            return 1
        codes = [w.exit_code or 0 for w in self.workers]
        code = next((c for c in codes if c > 0), 0)
        log.info("all workers exited; supervisor exits %d", code)
        return code
