"""The Service: HAProxy in front of the pods, its backends following the pods' readiness like endpoints.

HAProxy gets fixed server slots per backend (all in maintenance at first); the
endpoints controller here fills a slot with a pod's address once the pod is
ready and puts it back in maintenance when the pod stops being ready or starts
terminating, through HAProxy's runtime API (`set server ... addr`, `state
ready|maint`). Maintenance never cuts established connections, as removing an
endpoint leaves conntrack entries alone. Each change lands `lag` seconds after
the pod's state changed: Kubernetes takes 1-2 s to take a deleted pod out of
every node's rules, so new connections keep arriving during grace_start_wait.

There are no health checks and no retries in HAProxy (`retries 0`, no
`option redispatch`): kube-proxy has neither, so what a pod does to a new
connection is what the client gets. HTTP is balanced per request. With edges
that fetch their HLS from the origins (`hls_fetch on`, the default) every edge
serves the same names and bytes, so nothing keeps a player on one pod; with
edges that cut their own segments (`--edge-hls local`) a cookie keeps one HLS
player on one pod (its playlist and segments must come from the same pod:
sessionAffinity, per player rather than per client IP since every bed player
has one IP).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from clusterbed.pods import Pod

log = logging.getLogger("clusterbed.service")

SLOTS = 24


@dataclass
class Frontend:
    name: str  # haproxy backend name prefix
    port: int  # on the service IP
    target_port: int
    mode: str  # tcp | http
    selector: str  # pod role it selects
    sticky: bool = False  # http: a cookie keeps a client on one pod


@dataclass
class Backend:
    frontend: Frontend
    slots: dict[int, str | None] = field(default_factory=dict)  # slot -> pod name

    @property
    def name(self) -> str:
        return f"{self.frontend.name}_be"


class HAProxy:
    def __init__(self, workdir: Path, service_ip: str, frontends: list[Frontend]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise SystemExit("clusterbed: haproxy is not installed (apt-get install -y haproxy; scripts/test.sh does)")
        self.binary = binary
        self.workdir = workdir
        self.service_ip = service_ip
        self.frontends = frontends
        self.backends = {f.name: Backend(f, {i: None for i in range(1, SLOTS + 1)}) for f in frontends}
        self.sock = workdir / "haproxy.sock"
        self.cfg = workdir / "haproxy.cfg"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        out = [
            "global",
            "    maxconn 9000",
            f"    stats socket {self.sock} mode 600 level admin",
            "defaults",
            "    timeout connect 3s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout tunnel 1h",
            "    retries 0",
        ]
        for fe in self.frontends:
            out += [
                f"frontend {fe.name}",
                f"    mode {fe.mode}",
                f"    bind {self.service_ip}:{fe.port}",
                f"    default_backend {fe.name}_be",
                f"backend {fe.name}_be",
                f"    mode {fe.mode}",
                "    balance roundrobin",
            ]
            if fe.sticky:
                out.append("    cookie TCPOD insert indirect nocache")
            for slot in range(1, SLOTS + 1):
                cookie = f" cookie s{slot}" if fe.sticky else ""
                out.append(f"    server s{slot} 127.0.0.1:{fe.target_port} disabled{cookie}")
        return "\n".join(out) + "\n"

    def start(self) -> None:
        self.cfg.write_text(self.config())
        check = subprocess.run([self.binary, "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"clusterbed: haproxy rejects {self.cfg}:\n{check.stderr}")
        self.log = open(self.workdir / "haproxy.log", "ab")  # noqa: SIM115 -- the child writes it
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.cfg)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"clusterbed: haproxy did not start; see {self.workdir / 'haproxy.log'}")
            time.sleep(0.05)

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def set_endpoint(self, pod: Pod, ready: bool) -> None:
        for backend in self.backends.values():
            if backend.frontend.selector != pod.role:
                continue
            slot = next((k for k, v in backend.slots.items() if v == pod.name + "@" + pod.ip), None)
            if ready and slot is None:
                slot = next((k for k, v in backend.slots.items() if v is None), None)
                if slot is None:
                    raise RuntimeError(f"clusterbed: no free haproxy slot in {backend.name} for {pod}")
                backend.slots[slot] = pod.name + "@" + pod.ip
                self.command(f"set server {backend.name}/s{slot} addr {pod.ip} port {backend.frontend.target_port}")
                self.command(f"set server {backend.name}/s{slot} state ready")
            elif not ready and slot is not None:
                self.command(f"set server {backend.name}/s{slot} state maint")
                backend.slots[slot] = None

    def endpoints(self) -> dict[str, list[str]]:
        return {b.name: [v for v in b.slots.values() if v] for b in self.backends.values()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Endpoints:
    """Mirrors pod readiness into HAProxy, each change `lag` seconds late."""

    def __init__(self, haproxy: HAProxy, lag: float) -> None:
        self.haproxy = haproxy
        self.lag = lag
        self.pods: list[Pod] = []
        self.published: dict[str, bool] = {}  # pod key -> in the backends
        self.pending: dict[str, tuple[bool, float]] = {}  # pod key -> (wanted, since)
        self.changes: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, pod: Pod) -> None:
        self.pods.append(pod)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for pod in list(self.pods):
                key = pod.name + "@" + pod.ip
                wanted = pod.ready and pod.terminating_since is None
                current = self.published.get(key, False)
                if wanted == current:
                    self.pending.pop(key, None)
                else:
                    prev = self.pending.get(key)
                    if prev is None or prev[0] != wanted:
                        # The terminating clock starts at the deletion, not when we noticed it.
                        since = pod.terminating_since if (not wanted and pod.terminating_since) else now
                        self.pending[key] = (wanted, since)
                        prev = self.pending[key]
                    if now - prev[1] >= self.lag:
                        self.haproxy.set_endpoint(pod, wanted)
                        self.published[key] = wanted
                        self.pending.pop(key, None)
                        self.changes.append({"t": now, "pod": key, "ready": wanted})
                        log.info("endpoint %s %s", key, "added" if wanted else "removed")
                if pod.exited_at is not None and not self.published.get(key, False):
                    self.pods.remove(pod)
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
