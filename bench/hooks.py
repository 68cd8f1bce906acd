"""HTTP hooks: what one hooked join costs, and how many hook calls per second one core makes.

    python bench/hooks.py                      # defaults: about 20 s
    python bench/hooks.py --delay-ms 5 --concurrency 8,64

Starts a real aiohttp hook server in a child process (pinned to core 1; it
answers `0` to every POST after --delay-ms) and drives tidecast's own
`HookCaller` / `HookGate` from this process (pinned to core 0, uvloop when
installed), the way the server's admission path calls it:

  latency      --sequential checks one after another: wall time per check
               (p50/p95/p99) and this process's CPU per check, against the same
               checks through a vhost without hooks (the baseline)
  throughput   --burst checks started at once, for each --concurrency limit:
               checks/s, the hook server's peak concurrency, all admitted or not
  paced        --joins checks at --rate per second (the issue's 1,000 at 200/s):
               admitted, calls the hook server counted, latency p50/p99

With --server, the same joins go through a real tidecast instead (pinned to
core 0; this tool and the hook server share core 1): a --kbps stream is
published, then --joins RTMP players join at --rate per second and stay, once
through a vhost without hooks and once with an on_play hook. Per run: players
admitted (NetStream.Play.Start), calls the hook server counted, join time
(TCP connect to Play.Start) p50/p99, and the server's CPU over the ramp; the
difference between the runs is what the hook adds per join.

Writes bench/results/hooks-TIME.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib as B

from tidecast.access import HookCaller, HookGate, gates_for
from tidecast.access._contract import JoinRequest
from tidecast.config import HttpHooks, Vhost

HOOK_SERVER = r"""
import asyncio, sys
from aiohttp import web
delay = float(sys.argv[2]) / 1000
state = {"calls": 0, "active": 0, "peak": 0}
async def hook(request):
    await request.read()
    state["calls"] += 1
    state["active"] += 1
    state["peak"] = max(state["peak"], state["active"])
    try:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text="0")
    finally:
        state["active"] -= 1
async def stats(request):
    if request.query.get("reset"):
        state.update(calls=0, peak=0)
    return web.json_response(state)
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/stats", stats)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, backlog=4096)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequential", type=int, default=1000, help="checks one after another (1000)")
    p.add_argument("--burst", type=int, default=5000, help="checks started at once, per concurrency (5000)")
    p.add_argument("--concurrency", default="8,64", help="HookCaller concurrency limits to try (8,64)")
    p.add_argument("--joins", type=int, default=1000, help="paced checks (1000)")
    p.add_argument("--rate", type=float, default=200.0, help="paced checks per second (200)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="the hook server's think time per call (0)")
    p.add_argument("--server", action="store_true", help="join through a real tidecast instead (see above)")
    p.add_argument("--kbps", type=int, default=100, help="--server: the published stream's video bitrate (100)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where the JSON goes")
    return p.parse_args(argv)


def request(i: int) -> JoinRequest:
    return JoinRequest(
        action="play",
        client_id=f"b{i:07d}",
        ip="127.0.0.1",
        vhost="__defaultVhost__",
        app="live",
        stream="livestream",
        param="?token=bench",
        tc_url="rtmp://127.0.0.1:1935/live",
        page_url="",
        protocol="rtmp",
        stream_id="vid-1",
        server_id="vid-bench",
    )


def hook_stats(port: int, reset: bool = False) -> dict[str, int]:
    url = f"http://127.0.0.1:{port}/stats" + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, int] = json.loads(resp.read())
        return doc


def summary(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {f"p{p}": B.percentile(ms, p) for p in (50, 95, 99)} | {"max": max(ms) if ms else None}


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/hook"
    settings = HttpHooks(enabled=True, on_play=[url], timeout=30.0)
    out: dict[str, Any] = {}

    # Baseline: the admission gates of a vhost without hooks.
    plain = gates_for(Vhost(), HookCaller())
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(args.sequential):
        for gate in plain:
            await gate.check(request(i))
    out["baseline_us_per_check"] = (time.perf_counter() - t0) / args.sequential * 1e6
    out["baseline_cpu_us_per_check"] = (time.process_time() - cpu0) / args.sequential * 1e6

    caller = HookCaller()
    gate = HookGate(caller, settings)
    for i in range(50):  # warm the connection pool
        await gate.check(request(i))
    walls: list[float] = []
    cpu0 = time.process_time()
    for i in range(args.sequential):
        started = time.perf_counter()
        refused = await gate.check(request(i))
        walls.append(time.perf_counter() - started)
        assert refused is None, refused
    cpu = time.process_time() - cpu0
    out["sequential"] = {
        "checks": args.sequential,
        "latency_ms": summary(walls),
        "cpu_us_per_check": cpu / args.sequential * 1e6,
        "checks_per_s": args.sequential / sum(walls),
    }
    await caller.close()

    out["burst"] = []
    for limit in [int(x) for x in args.concurrency.split(",") if x]:
        caller = HookCaller(concurrency=limit, queue_limit=args.burst)
        gate = HookGate(caller, settings)
        hook_stats(port, reset=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(gate.check(request(i)) for i in range(args.burst)))
        took = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        stats = hook_stats(port)
        out["burst"].append(
            {
                "concurrency": limit,
                "checks": args.burst,
                "admitted": sum(r is None for r in results),
                "seconds": took,
                "checks_per_s": args.burst / took,
                "cpu_us_per_check": cpu / args.burst * 1e6,
                "server_calls": stats["calls"],
                "server_peak_concurrency": stats["peak"],
            }
        )
        await caller.close()

    caller = HookCaller()
    gate = HookGate(caller, settings)
    hook_stats(port, reset=True)
    walls = []

    async def one(i: int) -> bool:
        started = time.perf_counter()
        refused = await gate.check(request(i))
        walls.append(time.perf_counter() - started)
        return refused is None

    tasks = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(args.joins):
        delay = t0 + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    admitted = sum(await asyncio.gather(*tasks))
    cpu = time.process_time() - cpu0
    stats = hook_stats(port)
    out["paced"] = {
        "joins": args.joins,
        "rate": args.rate,
        "admitted": admitted,
        "server_calls": stats["calls"],
        "latency_ms": summary(walls),
        "cpu_share_of_core": cpu / (time.perf_counter() - t0),
    }
    await caller.close()
    return out


async def run_server(args: argparse.Namespace, hook_port: int) -> dict[str, Any]:
    import tempfile

    clip = B.Clip(B.make_clip(B.CACHE / f"clip-{args.kbps}kbps.flv", seconds=10, kbps=args.kbps))
    out: dict[str, Any] = {"clip_kbps": round(clip.kbps), "runs": []}
    hooked = f"http_hooks {{ enabled on; on_play http://127.0.0.1:{hook_port}/hook; }}\n"
    with tempfile.TemporaryDirectory(prefix="tidecast-bench-hooks-") as tmp:
        for name, body in (("no hooks", ""), ("on_play hook", hooked)):
            rtmp, api, http = B.free_port(), B.free_port(), B.free_port()
            config = B.tidecast_config(rtmp, api, http, body)
            server = B.start_tidecast(config, Path(tmp) / name.replace(" ", "-"), rtmp)
            ticker = B.Ticker(0.01)
            players: list[B.AnyPlayer] = []
            try:
                target = B.Target("127.0.0.1", rtmp, http, "live", "hooked")
                ticker.publishers.append(await B.start_publisher(clip, target))
                ticker.start()
                await asyncio.sleep(1.5)
                hook_stats(hook_port, reset=True)
                player_target = target.named("hooked?token=bench")
                cpu = B.CpuMeter(server.pid or 0)
                t0 = time.perf_counter()
                tasks = []
                for i in range(args.joins):
                    delay = t0 + i / args.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(B.open_player("rtmp", player_target, False, 15.0)))
                players = list(await asyncio.gather(*tasks))
                ramp_cpu = cpu.percent()
                ramp_s = time.perf_counter() - t0
                joined = [p.stats.setup_s for p in players if p.stats.setup_s is not None and not p.stats.error]
                errors = sorted({p.stats.error for p in players if p.stats.error})
                run = {
                    "mode": name,
                    "joins": args.joins,
                    "admitted": len(joined),
                    "errors": errors[:3],
                    "hook_calls": hook_stats(hook_port)["calls"],
                    "join_ms": summary(joined),
                    "ramp_s": ramp_s,
                    "server_cpu_percent": ramp_cpu,
                }
                out["runs"].append(run)
                print(
                    f"{name:13} {run['admitted']}/{args.joins} admitted, hook calls {run['hook_calls']}, join p50 "
                    f"{run['join_ms']['p50']:.1f} ms p99 {run['join_ms']['p99']:.1f} ms, server CPU {ramp_cpu:.0f}% "
                    f"over {ramp_s:.1f} s",
                    flush=True,
                )
            finally:
                ticker.stop()
                for player in players:
                    player.close()
                await asyncio.sleep(0.3)
                server.stop()
    plain, hooked_run = out["runs"]
    extra_cpu = (hooked_run["server_cpu_percent"] - plain["server_cpu_percent"]) / 100 * hooked_run["ramp_s"]
    out["added_server_cpu_us_per_join"] = extra_cpu / args.joins * 1e6
    out["added_join_ms_p50"] = hooked_run["join_ms"]["p50"] - plain["join_ms"]["p50"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.server:
        return main_server(args)
    pinning = B.pin_load(0)
    loop = B.use_uvloop()
    server, port = start_hook_server(args.delay_ms, 1)
    try:
        results = asyncio.run(run(args, port))
    finally:
        server.terminate()
        server.wait(10)
    results["setup"] = {
        "pinning": pinning,
        "loop": loop,
        "delay_ms": args.delay_ms,
        "loadavg_1m_at_end": os.getloadavg()[0],  # others' load on a shared machine skews every figure
        **B.machine_facts(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"hooks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))

    seq = results["sequential"]
    print(f"baseline (no hooks): {results['baseline_us_per_check']:.1f} µs per check")
    print(
        f"sequential: {seq['checks_per_s']:.0f} checks/s, latency p50 {seq['latency_ms']['p50']:.2f} ms "
        f"p99 {seq['latency_ms']['p99']:.2f} ms, {seq['cpu_us_per_check']:.0f} µs CPU per check"
    )
    for b in results["burst"]:
        print(
            f"burst concurrency {b['concurrency']}: {b['checks_per_s']:.0f} checks/s, {b['admitted']}/{b['checks']} "
            f"admitted, server peak {b['server_peak_concurrency']}, {b['cpu_us_per_check']:.0f} µs CPU per check"
        )
    p = results["paced"]
    print(
        f"paced {p['joins']} at {p['rate']:.0f}/s: {p['admitted']} admitted, hook server counted "
        f"{p['server_calls']}, latency p50 {p['latency_ms']['p50']:.2f} ms p99 {p['latency_ms']['p99']:.2f} ms, "
        f"{p['cpu_share_of_core'] * 100:.1f}% of a core"
    )
    print(f"wrote {path}")
    return 0


def start_hook_server(delay_ms: float, core: int) -> tuple[subprocess.Popen[bytes], int]:
    port = B.free_port()
    argv_server = [sys.executable, "-c", HOOK_SERVER, str(port), str(delay_ms)]
    if (os.cpu_count() or 1) > core:
        argv_server = ["taskset", "-c", str(core), *argv_server]
    server = subprocess.Popen(argv_server)
    deadline = time.monotonic() + 15
    while True:
        try:
            hook_stats(port)
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the hook server did not start") from None
            time.sleep(0.1)


def main_server(args: argparse.Namespace) -> int:
    pinning = B.pin_load(1)
    loop = B.use_uvloop()
    hook, port = start_hook_server(args.delay_ms, 1)
    try:
        results = asyncio.run(run_server(args, port))
    finally:
        hook.terminate()
        hook.wait(10)
    results["setup"] = {
        "pinning": pinning,
        "loop": loop,
        "delay_ms": args.delay_ms,
        "loadavg_1m_at_end": os.getloadavg()[0],  # others' load on a shared machine skews every figure
        **B.machine_facts(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"hooks-server-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(
        f"the hook adds {results['added_join_ms_p50']:.1f} ms to the median join and "
        f"{results['added_server_cpu_us_per_join']:.0f} µs of server CPU per join"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
