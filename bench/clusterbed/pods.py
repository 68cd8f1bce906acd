"""Pods: real `python -m tidecast serve` processes with a pod's lifecycle.

A pod starts its container, is probed for readiness (`GET :1985/readyz`, period,
success and failure thresholds as in a readinessProbe), and when deleted runs
what the kubelet runs: the preStop hook (`tidecast grace`, i.e. SIGQUIT), then
SIGTERM, then SIGKILL once `terminationGracePeriodSeconds` (counted from the
deletion, preStop included) has passed.

Versions are config differences, as a new image or ConfigMap would be:
`exporter { tag vN; }` shows in `srs_build_info` (what `tidecast status`
reports). The bad versions are a ConfigMap mistake that fails readiness (the
API moved off the probed port) and a process that dies 5 s after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clusterbed.netbed import Network, PodNet

log = logging.getLogger("clusterbed.pods")

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Version:
    name: str  # shown as the exporter tag: tidecast status reports 0.1.0+NAME
    bad: str = ""  # "" | "readiness" (never ready) | "crash" (dies 5 s after start) | "refuse" (tiny max_connections)

    def __str__(self) -> str:
        return self.name + (f" (bad: {self.bad})" if self.bad else "")


@dataclass
class Timing:
    """The pod spec's timings (seconds unless said)."""

    grace_start_wait_ms: int = 700
    grace_final_wait_ms: int = 300
    grace_drain_timeout_ms: int = 3000
    termination_grace_s: float = 10.0
    probe_period_s: float = 1.0
    probe_timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    # A readiness gate on edges (a pod condition set by a controller, here the bed): ready only once
    # the pod serves these streams' HLS playlists. Without it a fresh edge answers new HLS plays
    # 404 for the seconds it takes to pull the stream and cut a first segment.
    gate_hls_streams: tuple[str, ...] = ()
    # A paced drain in the preStop hook: once the endpoint is gone (after `paced_drain_after_s`),
    # kick the players through the API at this many per second, so they reconnect to the other
    # pods as a stream instead of all at once when grace_drain_timeout closes them. 0: off.
    drain_pace_per_s: float = 0.0
    paced_drain_after_s: float = 2.0


def pod_config(
    role: str,
    version: Version,
    pod: PodNet,
    loopback: bool,
    origins: list[str],
    timing: Timing,
    edge_hls: str = "fetch",
    nas: Path | None = None,
) -> str:
    """srs.conf of one pod. In a namespace a pod listens on every address, as in Kubernetes.

    `edge_hls` fetch: the origins write HLS into `nas`, one directory they all share (the wiki's NAS
    volume), and edges serve it fetched from them (`hls_fetch on`); local: each edge muxes its own."""
    host = f"{pod.ip}:" if loopback else ""
    api_port = 1986 if version.bad == "readiness" else 1985
    max_conn = 6 if version.bad == "refuse" else 4000
    lines = [
        f"listen {host}1935;",
        f"max_connections {max_conn};",
        "daemon off;",
        "srs_log_tank console;",
        "pid ./objs/srs.pid;",
        "force_grace_quit on;",
        f"grace_start_wait {timing.grace_start_wait_ms};",
        f"grace_final_wait {timing.grace_final_wait_ms};",
        f"grace_drain_timeout {timing.grace_drain_timeout_ms};",
        f"http_api {{ enabled on; listen {host}{api_port}; }}",
        f"http_server {{ enabled on; listen {host}8080; dir ./html; }}",
        f"exporter {{ enabled off; tag {version.name}; }}",
        "vhost __defaultVhost__ {",
    ]
    hls = "hls_fragment 2; hls_window 12;"
    if role == "origin":
        coworkers = " ".join(f"{o}:1985" for o in origins if o != pod.ip)
        lines.append(f"    cluster {{ origin_cluster on; coworkers {coworkers}; }}" if coworkers else "")
        if edge_hls == "fetch":
            if nas is None:
                raise ValueError("edge_hls fetch needs the origins' shared hls_path (nas)")
            lines.append(f"    hls {{ enabled on; {hls} hls_path {nas}; }}")
    else:
        upstream = " ".join(f"{o}:1935" for o in origins)
        if edge_hls == "fetch":
            lines.append(f"    cluster {{ mode remote; origin {upstream}; hls_fetch on; hls_fetch_port 8080; }}")
        else:
            lines.append(f"    cluster {{ mode remote; origin {upstream}; }}")
            lines.append(f"    hls {{ enabled on; {hls} hls_path ./html; }}")
    lines.append("    http_remux { enabled on; }")
    lines.append("}")
    return "\n".join(line for line in lines if line) + "\n"


async def http_status(host: str, port: int, path: str, timeout: float) -> int:
    """Status code of a GET, 0 when the connection fails: the probe's view."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(timeout):
            line = await reader.readline()
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 else 0
    except (OSError, TimeoutError, ValueError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class Pod:
    def __init__(
        self,
        name: str,
        role: str,
        version: Version,
        net: Network,
        workroot: Path,
        origins: list[str],
        timing: Timing,
        host_index: int | None = None,
        edge_hls: str = "fetch",
        nas: Path | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.version = version
        self.network = net
        self.timing = timing
        self.net = net.attach(host_index) if host_index is not None else net.pod(name)
        self.ip = self.net.ip
        self.workdir = workroot / f"{name}-{self.ip.rsplit('.', 1)[1]}-{int(time.time() * 1000) % 100000}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "html").mkdir(exist_ok=True)
        self.conf = self.workdir / "srs.conf"
        if nas is not None:
            nas.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(pod_config(role, version, self.net, net.mode != "netns", origins, timing, edge_hls, nas))
        self.proc: subprocess.Popen[bytes] | None = None
        self.created = time.monotonic()
        self.ready = False
        self.ready_since: float | None = None
        self.terminating_since: float | None = None
        self.exited_at: float | None = None
        self.exit_code: int | None = None
        self.killed = False  # SIGKILL at the end of the grace period
        self.paced_kicks = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._ok = 0
        self._fail = 0
        self.gate_open = not (role == "edge" and timing.gate_hls_streams)
        self.gate_opened_at: float | None = None

    def __repr__(self) -> str:
        return f"<pod {self.name} {self.ip} {self.version}>"

    # ------------------------------------------------------------ container

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env.update(POD_IP=self.ip, PYTHONUNBUFFERED="1", PYTHONPATH=os.environ.get("PYTHONPATH", str(REPO / "src")))
        return env

    def start(self) -> None:
        log_file = open(self.workdir / "tidecast.log", "ab")  # noqa: SIM115 -- the child writes it
        argv = self.net.wrap([sys.executable, "-m", "tidecast", "serve", "-c", str(self.conf)])
        # `ip netns exec` execs, so this pid is tidecast's own: signals reach it directly.
        self.proc = subprocess.Popen(argv, cwd=self.workdir, stdout=log_file, stderr=subprocess.STDOUT, env=self._env())
        log_file.close()
        self._tasks.append(asyncio.create_task(self._probe_loop()))
        self._tasks.append(asyncio.create_task(self._watch_exit()))
        if self.version.bad == "crash":
            self._tasks.append(asyncio.create_task(self._crash_after(5.0)))
        log.info("%s started (pid %d)", self, self.proc.pid)

    async def _crash_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.alive:
            log.info("%s: the bad version crashes now", self)
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def _watch_exit(self) -> None:
        assert self.proc is not None
        while self.proc.poll() is None:
            await asyncio.sleep(0.1)
        self.exited_at = time.monotonic()
        self.exit_code = self.proc.returncode
        self._set_ready(False)
        log.info("%s exited with %s", self, self.exit_code)

    async def _probe_loop(self) -> None:
        t = self.timing
        while self.exited_at is None:
            code = await http_status(self.ip, 1985, "/readyz", t.probe_timeout_s)
            if code == 200 and not self.gate_open:
                # The request itself makes the edge pull the stream and start cutting segments.
                codes = [
                    await http_status(self.ip, 8080, f"/live/{s}.m3u8", t.probe_timeout_s) for s in t.gate_hls_streams
                ]
                if all(c == 200 for c in codes):
                    self.gate_open = True
                    self.gate_opened_at = time.monotonic()
                    log.info("%s: readiness gate open (HLS of %s served)", self, ", ".join(t.gate_hls_streams))
                else:
                    await asyncio.sleep(0.25)
                    continue
            if code == 200:
                self._ok, self._fail = self._ok + 1, 0
                if self._ok >= t.success_threshold:
                    self._set_ready(True)
            else:
                self._ok, self._fail = 0, self._fail + 1
                if self._fail >= t.failure_threshold or not self.ready_since:
                    self._set_ready(False)
            # Until the first success, probe faster: a pod's first probe comes soon after start.
            await asyncio.sleep(t.probe_period_s if self.ready_since else min(0.25, t.probe_period_s))

    def _set_ready(self, ready: bool) -> None:
        if ready and not self.ready:
            self.ready_since = time.monotonic()
            log.info("%s ready %.2f s after creation", self, self.ready_since - self.created)
        if not ready:
            self.ready_since = None
        self.ready = ready

    def available(self, min_ready_s: float) -> bool:
        """Ready for minReadySeconds without interruption, and not being deleted."""
        return (
            self.ready
            and self.terminating_since is None
            and self.ready_since is not None
            and time.monotonic() - self.ready_since >= min_ready_s
        )

    # ------------------------------------------------------------ deletion

    def delete(self) -> asyncio.Task[None]:
        """Start the kubelet's termination; the task ends when the process is gone."""
        self.terminating_since = time.monotonic()
        task = asyncio.create_task(self._terminate())
        self._tasks.append(task)
        return task

    async def _terminate(self) -> None:
        t = self.timing
        deadline = self.terminating_since or time.monotonic()
        deadline += t.termination_grace_s
        if self.alive:
            grace = self.net.wrap([sys.executable, "-m", "tidecast", "grace", "-c", str(self.conf)])
            hook = await asyncio.create_subprocess_exec(
                *grace,
                cwd=self.workdir,
                env=self._env(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await hook.wait()
            if t.drain_pace_per_s > 0 and self.role == "edge":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        await self._paced_drain()
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.alive:
            assert self.proc is not None
            log.warning("%s: terminationGracePeriodSeconds %.0f passed: SIGKILL", self, t.termination_grace_s)
            self.killed = True
            self.proc.send_signal(signal.SIGKILL)
        while self.exited_at is None:
            await asyncio.sleep(0.05)
        self.network.release(self.net)

    async def _paced_drain(self) -> None:
        import aiohttp

        t = self.timing
        assert self.terminating_since is not None
        await asyncio.sleep(max(0.0, self.terminating_since + t.paced_drain_after_s - time.monotonic()))
        api = f"http://{self.ip}:1985/api/v1/clients"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            try:
                async with http.get(f"{api}?count=100000") as r:
                    clients = (await r.json(content_type=None)).get("clients", [])
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return
            players = [c["id"] for c in clients if str(c.get("type", "")).endswith("play")]
            self.paced_kicks = len(players)
            started = time.monotonic()
            for k, cid in enumerate(players):
                await asyncio.sleep(max(0.0, started + k / t.drain_pace_per_s - time.monotonic()))
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.delete(f"{api}/{cid}") as r:
                        await r.read()

    def kill_now(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        for task in self._tasks:
            task.cancel()
        self.network.release(self.net)

    def log_tail(self, lines: int = 15) -> str:
        path = self.workdir / "tidecast.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
