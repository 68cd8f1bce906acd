"""The bed: a cluster of real tidecast pods behind HAProxy, operated under load, measured per operation.

Layout: an origin StatefulSet (origin cluster, coworkers), an edge Deployment
pulling from it, one Service (HAProxy) with RTMP 1935 and HTTP 8080 to the
edges and RTMP 1936 to the origins (where the encoders push: an encoder that
is cut reconnects through it), ffmpeg publishers, and the audience process
(load.py) playing through the Service.

Operations (each a window in the report): baseline, edge rolling update,
origin update, rollback of a bad edge version, canary (promoted or aborted by
`tidecast status --compare`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterbed.controller import Cluster, Deployment, StatefulSet, Strategy
from clusterbed.netbed import Network
from clusterbed.pods import REPO, Pod, Timing, Version, http_status
from clusterbed.report import analyse, markdown
from clusterbed.service import Endpoints, Frontend, HAProxy

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402

log = logging.getLogger("clusterbed")

OPS = ("baseline", "edge-rolling-update", "origin-update", "rollback", "canary")


# ---------------------------------------------------------------- publishers


class Publishers:
    """One ffmpeg per stream, pushing through the origin Service; restarted when cut, like an encoder."""

    def __init__(self, clip: Path, url_base: str, streams: int, workdir: Path, origin_apis: Any) -> None:
        self.clip = clip
        self.url_base = url_base
        self.streams = [f"s{i}" for i in range(streams)]
        self.workdir = workdir
        self.origin_apis = origin_apis
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: list[dict[str, Any]] = []
        self.live: dict[str, bool] = {s: False for s in self.streams}
        self.outages: list[dict[str, Any]] = []  # no origin has the stream live
        self._down_since: dict[str, float] = {}
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    def _spawn(self, stream: str) -> subprocess.Popen[bytes]:
        log_file = open(self.workdir / f"ffmpeg-{stream}.log", "ab")  # noqa: SIM115 -- the child writes it
        proc = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(self.clip), "-c", "copy", "-f", "flv",
             f"{self.url_base}/{stream}"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log_file.close()
        return proc

    async def _keep(self, stream: str) -> None:
        while not self.stopping:
            proc = self._spawn(stream)
            self.procs[stream] = proc
            while proc.poll() is None and not self.stopping:
                await asyncio.sleep(0.05)
            if self.stopping:
                return
            self.restarts.append({"t": time.monotonic(), "stream": stream, "code": proc.returncode})
            await asyncio.sleep(0.2)

    async def _watch(self) -> None:
        while not self.stopping:
            live: set[str] = set()
            for api in self.origin_apis():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.5):
                        doc = await asyncio.to_thread(benchlib.http_json, f"{api}/api/v1/streams", 1.0)
                    live |= {s["name"] for s in doc.get("streams", []) if (s.get("publish") or {}).get("active")}
            now = time.monotonic()
            for stream in self.streams:
                if stream in live:
                    since = self._down_since.pop(stream, None)
                    if since is not None:
                        self.outages.append({"stream": stream, "start": since, "end": now, "s": round(now - since, 3)})
                    self.live[stream] = True
                elif self.live[stream] and stream not in self._down_since:
                    self._down_since[stream] = now
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._keep(s)) for s in self.streams]
        self.tasks.append(asyncio.create_task(self._watch()))

    async def wait_live(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.live.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"publishers not live after {timeout:.0f}s: {self.live}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.stopping = True  # the tasks were ended in the loop (Bed._end_own_tasks); this ends the ffmpegs
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(3)
                if proc.poll() is None:
                    proc.kill()


# ---------------------------------------------------------------- direct probes of a terminating pod


async def probe_terminating(pod: Pod, seconds: float, target_stream: str) -> list[dict[str, Any]]:
    """New RTMP plays, HTTP-FLV plays and HLS playlist fetches straight to a pod from its deletion on.

    This is what a client routed there by a not-yet-updated endpoint gets
    during grace_start_wait: SRS keeps its listeners for exactly this window.
    """
    out: list[dict[str, Any]] = []
    t0 = pod.terminating_since or time.monotonic()
    target = benchlib.Target(pod.ip, 1935, 8080, "live", target_stream)
    while time.monotonic() - t0 < seconds and pod.exited_at is None:
        at = round(time.monotonic() - t0, 3)
        rtmp = await benchlib.open_player("rtmp", target, probe=False, timeout=1.5)
        rtmp_result = rtmp.stats.error or "playing"
        rtmp.close()
        flv = await benchlib.open_player("flv", target, probe=False, timeout=1.5)
        flv_result = flv.stats.error or "playing"
        flv.close()
        hls = await http_status(pod.ip, 8080, f"/live/{target_stream}.m3u8", 1.0)
        out.append({"after_s": at, "rtmp": rtmp_result, "flv": flv_result, "hls": hls or "connect failed"})
        await asyncio.sleep(0.15)
    return out


# ---------------------------------------------------------------- the bed


class Bed:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.net = Network(args.net)
        self.work = Path(tempfile.mkdtemp(prefix="clusterbed-", dir=args.workdir))
        self.timing = Timing(
            grace_start_wait_ms=args.grace_start_wait,
            grace_final_wait_ms=args.grace_final_wait,
            grace_drain_timeout_ms=args.grace_drain_timeout,
            termination_grace_s=args.termination_grace,
            probe_period_s=args.probe_period,
            gate_hls_streams=tuple(f"s{i}" for i in range(args.streams)) if args.hls_gate else (),
            drain_pace_per_s=args.drain_pace,
            paced_drain_after_s=args.endpoint_lag + 0.5,
        )
        frontends = [
            Frontend("rtmp", 1935, 1935, "tcp", "edge"),
            Frontend("http", 8080, 8080, "http", "edge", sticky=args.edge_hls == "local"),
            Frontend("origin", 1936, 1935, "tcp", "origin"),
        ]
        self.haproxy = HAProxy(self.work, self.net.service_ip, frontends)
        self.endpoints = Endpoints(self.haproxy, args.endpoint_lag)
        self.cluster = Cluster(
            self.net,
            self.work,
            self.timing,
            self.endpoints,
            lambda: self.origins.addresses(),
            edge_hls=args.edge_hls,
            nas=self.work / "nas",
        )
        self.origins = StatefulSet(self.cluster, "origin", "origin", Version("v1"), args.origins)
        self.origins.reserve()
        strategy = Strategy(args.max_surge, args.max_unavailable, args.min_ready, args.progress_deadline)
        self.edges = Deployment(self.cluster, "edge", "edge", Version("v1"), args.edges, strategy)
        self.canary: Deployment | None = None
        self.publishers: Publishers | None = None
        self.load: subprocess.Popen[str] | None = None
        self.ops: list[dict[str, Any]] = []
        self.probes: list[asyncio.Task[list[dict[str, Any]]]] = []
        self.probe_results: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------ helpers

    def edge_pods(self) -> list[Pod]:
        pods = self.edges.live() + (self.canary.live() if self.canary else [])
        return pods

    def status(self, tracks: dict[str, list[Pod]], interval: float, compare: tuple[str, str] | None = None) -> Any:
        """`tidecast status --json`, run as the operator would."""
        argv = [sys.executable, "-m", "tidecast", "status", "--json", "--interval", str(interval)]
        for name, pods in tracks.items():
            if pods:
                argv.append(f"{name}=" + ",".join(f"http://{p.ip}:1985" for p in pods))
        if compare:
            argv += ["--compare", *compare, *self.args.compare_flags]
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO / "src"))}
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=interval + 60)
        try:
            doc = json.loads(out.stdout)
        except ValueError:
            doc = {"error": out.stderr.strip()}
        doc["exit_code"] = out.returncode
        doc["argv"] = " ".join(argv[2:])
        return doc

    def watch_deletions(self, deployment: Deployment) -> None:
        """Probe every edge pod this operation deletes while it terminates (at most 2 at a time)."""
        seen = set(self.probe_results)

        async def follow() -> None:
            while True:
                for pod in deployment.pods:
                    if pod.terminating_since is not None and pod.name not in seen and pod.exited_at is None:
                        seen.add(pod.name)
                        window = self.timing.grace_start_wait_ms / 1000.0 + self.args.endpoint_lag + 1.0
                        task = asyncio.create_task(probe_terminating(pod, window, "s0"))
                        task.add_done_callback(self._probe_done(pod.name))
                        self.probes.append(task)
                await asyncio.sleep(0.05)

        self._follower = asyncio.create_task(follow())

    def _probe_done(self, name: str) -> Callable[[asyncio.Task[list[dict[str, Any]]]], None]:
        def done(task: asyncio.Task[list[dict[str, Any]]]) -> None:
            if not task.cancelled() and task.exception() is None:
                self.probe_results[name] = task.result()

        return done

    def stop_watching(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.cancel()

    async def op(self, name: str, action: Any) -> dict[str, Any]:
        log.info("=== %s", name)
        meter = benchlib.CoreMeter()
        t0 = time.monotonic()
        result = await action()
        t1 = time.monotonic()
        await asyncio.sleep(self.args.settle)
        busy = meter.percent()
        record = {
            "name": name,
            "t0": t0,
            "t1": t1,
            "t_end": time.monotonic(),
            "result": result,
            # Everything on the machine, other work included: a saturated machine stretches every gap.
            "machine_busy_pct": round(sum(busy.values()) / max(1, len(busy)), 1),
        }
        self.ops.append(record)
        log.info("=== %s done in %.1f s: %s", name, t1 - t0, json.dumps(result)[:300])
        return record

    # ------------------------------------------------------------ operations

    async def op_baseline(self) -> dict[str, Any]:
        await asyncio.sleep(self.args.baseline)
        return {
            "ok": True,
            "status": self.status({"edges": self.edge_pods(), "origins": list(self.origins.pods.values())}, 1.0),
        }

    async def op_edge_update(self) -> dict[str, Any]:
        self.watch_deletions(self.edges)
        result = await self.edges.rollout(Version("v2"))
        await self.cluster.wait_terminations()
        self.stop_watching()
        result["terminated"] = self._terminated(self.edges)
        return result

    async def op_origin_update(self) -> dict[str, Any]:
        result = await self.origins.rollout(Version("v2"))
        await self.cluster.wait_terminations()
        return result

    async def op_rollback(self) -> dict[str, Any]:
        bad = Version("v3-bad", self.args.bad)
        first = await self.edges.rollout(bad)
        # The operator sees the rollout stuck (or the status check fail) and undoes it.
        seen = self.status({"edges": self.edge_pods()}, 0.0)
        undo = await self.edges.undo()
        await self.cluster.wait_terminations()
        return {
            "ok": not first["ok"] and undo["ok"],
            "bad_rollout": first,
            "status_before_undo": {"exit_code": seen["exit_code"], "problems": seen.get("problems")},
            "undo": undo,
            "versions_after": sorted({p.version.name for p in self.edges.live()}),
        }

    async def op_canary(self) -> dict[str, Any]:
        version = Version("v3", self.args.canary_bad)
        strategy = self.edges.strategy
        self.canary = Deployment(self.cluster, "edge-canary", "edge", version, self.args.canary_pods, strategy)
        started = time.monotonic()
        try:
            await self.canary.create(timeout=30.0)
        except RuntimeError as exc:
            log.warning("canary: %s; judging it as it is", exc)
        # Let the balancer give the canary its share, then judge it on what it served.
        await asyncio.sleep(self.args.canary_soak)
        verdict = self.status(
            {"canary": self.canary.live(), "stable": self.edges.live()}, self.args.canary_interval, ("canary", "stable")
        )
        decision = (verdict.get("compare") or {}).get("verdict", "abort")
        if decision == "promote":
            # The wiki's way: grow the new track to full size, then shrink the old one a pod at a
            # time (its 3 -> 1 -> 0), so its players do not all move in the same seconds.
            grow = await self.canary.scale(self.edges.replicas)
            shrink = []
            for replicas in range(self.edges.replicas - 1, -1, -1):
                shrink.append(await self.edges.scale(replicas))
                await self.cluster.wait_terminations()
            steps = {"grow": grow, "shrink": shrink}
        else:
            steps = {"abort": await self.canary.scale(0)}
        await self.cluster.wait_terminations()
        return {
            "ok": True,
            "decision": decision,
            "canary_version": str(version),
            "compare": verdict.get("compare"),
            "tracks": {
                k: {x: v.get(x) for x in ("ready", "players", "errors", "error_rate", "versions")}
                for k, v in (verdict.get("tracks") or {}).items()
            },
            "status_exit_code": verdict["exit_code"],
            "status_argv": verdict["argv"],
            "steps": steps,
            "wall_s": round(time.monotonic() - started, 2),
            "versions_after": sorted({p.version.name for p in self.edge_pods()}),
        }

    def _terminated(self, deployment: Deployment) -> list[dict[str, Any]]:
        out = []
        for pod in deployment.pods:
            if pod.exited_at is not None and pod.terminating_since is not None:
                out.append(
                    {
                        "pod": pod.name,
                        "exit_code": pod.exit_code,
                        "killed": pod.killed,
                        "terminate_s": round(pod.exited_at - pod.terminating_since, 2),
                        "paced_kicks": pod.paced_kicks,
                    }
                )
        return out

    # ------------------------------------------------------------ run

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        finally:
            await self._end_own_tasks()

    async def _end_own_tasks(self) -> None:
        """End the bed's background loops while the event loop still runs. Left to asyncio.run's final
        cancellation, one of them once outlived it (Python 3.11's wait_for loses a cancel that lands as its
        inner call completes) and the run hung until the test's timeout."""
        if self.publishers is not None:
            self.publishers.stopping = True
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            if pending:
                log.warning("%d background task(s) did not end when cancelled: %s", len(pending), pending)

    async def _run(self) -> dict[str, Any]:
        a = self.args
        clip = benchlib.make_clip(benchlib.CACHE / f"clusterbed-{a.kbps}k.flv", seconds=20, kbps=a.kbps)
        self.haproxy.start()
        self.endpoints.start()
        log.info("network mode %s%s; service %s; work %s", self.net.mode,
                 f" ({self.net.reason})" if self.net.reason else "", self.net.service_ip, self.work)  # fmt: skip
        await self.origins.create()
        self.publishers = Publishers(
            clip, f"rtmp://{self.net.service_ip}:1936/live", a.streams, self.work,
            lambda: [f"http://{p.ip}:1985" for p in self.origins.pods.values() if p.alive],
        )  # fmt: skip
        self.publishers.start()
        await self.publishers.wait_live()
        await self.edges.create()
        load_out = self.work / "load.json"
        n = a.players
        rtmp, flv = round(n * a.mix[0]), round(n * a.mix[1])
        hls = n - rtmp - flv
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO / "src"))}
        self.load = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "load.py"), "--host", self.net.service_ip,
             "--streams", str(a.streams), "--rtmp", str(rtmp), "--flv", str(flv), "--hls", str(hls),
             "--rate", str(a.rate), "--churn", str(a.churn), "--out", str(load_out)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.load.stdout is not None
        ramp_line = await asyncio.to_thread(self.load.stdout.readline)
        if not ramp_line:
            raise RuntimeError("the load process ended before its ramp finished")
        await asyncio.sleep(a.settle)
        wanted = [o for o in a.ops.split(",") if o]
        actions = {
            "baseline": self.op_baseline,
            "edge-rolling-update": self.op_edge_update,
            "origin-update": self.op_origin_update,
            "rollback": self.op_rollback,
            "canary": self.op_canary,
        }
        for name in wanted:
            await self.op(name, actions[name])
        self.load.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.load.wait, 60)
        loaded = json.loads(load_out.read_text())
        events = loaded["events"]
        doc = {
            "command": " ".join(["python3", "bench/clusterbed", *sys.argv[1:]]),
            "network_mode": self.net.mode,
            "network_note": self.net.reason,
            "players": {"rtmp": rtmp, "flv": flv, "hls": hls, "streams": a.streams, "churn_per_s": a.churn},
            "settings": {
                "edges": a.edges,
                "origins": a.origins,
                "endpoint_lag_s": a.endpoint_lag,
                "max_surge": a.max_surge,
                "max_unavailable": a.max_unavailable,
                "min_ready_s": a.min_ready,
                "grace_start_wait_ms": a.grace_start_wait,
                "grace_drain_timeout_ms": a.grace_drain_timeout,
                "grace_final_wait_ms": a.grace_final_wait,
                "termination_grace_s": a.termination_grace,
                "probe_period_s": a.probe_period,
                "hls_readiness_gate": a.hls_gate,
                "clip_kbps": a.kbps,
                "bad_version": a.bad,
                "drain_pace_per_s": a.drain_pace,
                "edge_hls": a.edge_hls,
            },
            "machine": benchlib.machine_facts(),
            "load_process": loaded.get("load"),
            "operations": analyse(self.ops, events, self.publishers.outages, self.publishers.restarts),
            "terminating_pod_probes": self.probe_results,
            "endpoint_changes": [{**c, "t": round(float(c["t"]), 3)} for c in self.endpoints.changes],  # type: ignore[arg-type]
        }
        return doc

    def close(self) -> None:
        if self.load is not None and self.load.poll() is None:
            self.load.kill()
        if self.publishers is not None:
            self.publishers.stop()
        self.endpoints.stop()
        for pod in self.cluster.all_pods:
            pod.kill_now()
        self.haproxy.stop()
        self.net.close()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 bench/clusterbed",
        description="Rolling update, origin update, rollback and canary of a live tidecast cluster under load.",
    )
    p.add_argument("--players", type=int, default=1000, help="steady players through the Service")
    p.add_argument("--mix", default="0.4,0.3,0.3", help="shares of RTMP, HTTP-FLV, HLS")
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--rate", type=float, default=200.0, help="players started per second in the ramp")
    p.add_argument("--churn", type=float, default=6.0, help="new short plays per second during the whole run")
    p.add_argument("--kbps", type=int, default=200, help="clip bitrate")
    p.add_argument("--edges", type=int, default=2)
    p.add_argument("--origins", type=int, default=2)
    p.add_argument("--ops", default=",".join(OPS), help=f"operations in order, from {', '.join(OPS)}")
    p.add_argument("--net", choices=("auto", "netns", "loopback"), default="auto")
    p.add_argument("--endpoint-lag", type=float, default=1.5, help="seconds before an endpoint change reaches HAProxy")
    p.add_argument("--max-surge", type=int, default=1)
    p.add_argument("--max-unavailable", type=int, default=0)
    p.add_argument("--min-ready", type=float, default=5.0, help="minReadySeconds")
    p.add_argument("--progress-deadline", type=float, default=20.0, help="progressDeadlineSeconds")
    p.add_argument("--grace-start-wait", type=int, default=3000, help="ms; must cover --endpoint-lag")
    p.add_argument("--grace-final-wait", type=int, default=300, help="ms")
    p.add_argument("--grace-drain-timeout", type=int, default=4000, help="ms; players still there are then closed")
    p.add_argument("--termination-grace", type=float, default=15.0, help="terminationGracePeriodSeconds")
    p.add_argument("--probe-period", type=float, default=1.0, help="readiness probe periodSeconds")
    p.add_argument(
        "--no-hls-gate",
        dest="hls_gate",
        action="store_false",
        help="edges are ready on /readyz alone, without the readiness gate that waits for their HLS playlists",
    )
    p.add_argument(
        "--drain-pace",
        type=float,
        default=0.0,
        help="players/s an edge's preStop kicks once its endpoint is gone (0: leave them to grace_drain_timeout)",
    )
    p.add_argument(
        "--edge-hls",
        choices=("fetch", "local"),
        default="fetch",
        help="fetch: origins write HLS to one shared directory, edges fetch it (hls_fetch on), HTTP balanced per "
        "request; local: each edge cuts its own segments, a cookie keeps an HLS player on one edge",
    )
    p.add_argument("--bad", choices=("readiness", "crash"), default="readiness", help="how the bad version fails")
    p.add_argument("--canary-pods", type=int, default=1)
    p.add_argument("--canary-bad", choices=("", "refuse"), default="", help="refuse: a canary that refuses players")
    p.add_argument("--canary-soak", type=float, default=5.0, help="seconds of traffic before judging")
    p.add_argument("--canary-interval", type=float, default=5.0, help="tidecast status --interval for the verdict")
    p.add_argument("--compare-flags", nargs="*", default=[], help="extra flags for tidecast status --compare")
    p.add_argument("--baseline", type=float, default=8.0, help="seconds of the baseline window")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after each operation, still in its window")
    p.add_argument("--out", default=str(BENCH / "results"), help="directory for the JSON and markdown")
    p.add_argument("--workdir", default=None, help="parent of the run's temporary directory")
    p.add_argument("--keep", action="store_true", help="keep pod logs and configs")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.mix = [float(x) for x in args.mix.split(",")]
    if len(args.mix) != 3 or abs(sum(args.mix) - 1.0) > 1e-6:
        raise SystemExit("--mix: three shares (RTMP, HTTP-FLV, HLS) adding up to 1")
    unknown = [o for o in args.ops.split(",") if o and o not in OPS]
    if unknown:
        raise SystemExit(f"--ops: unknown operation(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("clusterbed").setLevel(logging.INFO)
    benchlib.raise_fd_limit()
    benchlib.use_uvloop()
    bed = Bed(args)

    def on_signal(signo: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signo}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        doc = asyncio.run(bed.run())
    finally:
        bed.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"clusterbed-{benchlib.stamp()}"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2))
    md = markdown(doc)
    (out / f"{name}.md").write_text(md)
    print(md)
    print(f"\nwritten: {out / name}.json, .md", file=sys.stderr)
    return 0
