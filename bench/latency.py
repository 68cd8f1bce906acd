"""Latency: publisher -> origin -> edge -> player, with the default merged writes and with min_latency.

    python bench/latency.py --players 10 --window 30

For each mode (--modes default,min,min-nagle): starts an origin and an edge tidecast
(both pinned to core 0; the edge's vhost has `cluster { mode remote; origin
127.0.0.1:ORIGIN; }`; mode `min` puts `min_latency on; tcp_nodelay on;` in both
vhosts, as SRS's min.delay.com example does, and `min-nagle` `min_latency on;` alone),
publishes a ~1 Mbps H.264+AAC clip at real time to the origin, and plays it with
--players players on the edge and as many straight from the origin. Every
player parses every message; the latency of a video frame is its arrival time
at a player minus the time the publisher wrote that same frame (matched by its
content, so timestamp rebasing on the edge does not matter). Reports
p50/p95/p99/max over --window seconds, per path.

Writes bench/results/latency-TIME.json and .png (latency CDFs).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as B


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="default,min", help="comma list of default,min,min-nagle (default,min)")
    p.add_argument("--protocol", choices=("rtmp", "flv"), default="rtmp", help="how the players play (rtmp)")
    p.add_argument("--players", type=int, default=10, help="players on the edge, and as many on the origin (10)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the players start before measuring (5)")
    p.add_argument("--window", type=float, default=30.0, help="measurement window in seconds (30)")
    p.add_argument("--clip", type=Path, default=B.CACHE / "clip-1mbps.flv", help="FLV clip (made with ffmpeg)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where JSON and PNG go")
    p.add_argument("--tag", default="", help="a word added to the output file names")
    return p.parse_args(argv)


def stats(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(values)}
    for q in (50, 95, 99):
        v = B.percentile(values, q)
        out[f"p{q}_ms"] = round(v * 1000, 1) if v is not None else None
    out["max_ms"] = round(max(values) * 1000, 1) if values else None
    return out


MODES = {"default": "", "min": "min_latency on;\ntcp_nodelay on;\n", "min-nagle": "min_latency on;\n"}


async def run_mode(mode: str, args: argparse.Namespace, clip: B.Clip, tmp: Path) -> dict[str, Any]:
    body = MODES[mode]
    o_rtmp, o_api, o_http = B.free_port(), B.free_port(), B.free_port()
    e_rtmp, e_api, e_http = B.free_port(), B.free_port(), B.free_port()
    origin = B.start_tidecast(B.tidecast_config(o_rtmp, o_api, o_http, body), tmp / f"{mode}-origin", o_rtmp)
    edge_body = body + f"cluster {{ mode remote; origin 127.0.0.1:{o_rtmp}; }}\n"
    edge = None
    ticker = B.Ticker(0.005)
    players: dict[str, list[B.AnyPlayer]] = {"edge": [], "origin": []}
    try:
        edge = B.start_tidecast(B.tidecast_config(e_rtmp, e_api, e_http, edge_body), tmp / f"{mode}-edge", e_rtmp)
        print(f"\n== mode {mode}: origin :{o_rtmp} (pid {origin.pid}), edge :{e_rtmp} (pid {edge.pid})")
        log = B.SendLog()
        target = B.Target("127.0.0.1", o_rtmp, o_http, "live", "latency")
        edge_target = B.Target("127.0.0.1", e_rtmp, e_http, "live", "latency")

        def on_send(index: int, loop_index: int, when: float) -> None:
            log.record(index, loop_index, when, len(clip.tags[index][2]))

        pub = await B.start_publisher(clip, target, on_send)
        ticker.publishers.append(pub)
        ticker.start()
        await asyncio.sleep(2.0)
        for path, tgt in (("edge", edge_target), ("origin", target)):
            opened = await asyncio.gather(*(B.open_player(args.protocol, tgt, True, 15.0) for _ in range(args.players)))
            players[path] = list(opened)
            failed = [p.stats.error for p in opened if p.stats.setup_s is None]
            if failed:
                print(f"{path}: {len(failed)} players failed: {failed[0]}")
        await asyncio.sleep(args.settle)
        t0 = time.monotonic()
        await asyncio.sleep(args.window)
        t1 = time.monotonic()
        result: dict[str, Any] = {"mode": mode, "min_latency": mode != "default", "paths": {}}
        samples: dict[str, list[float]] = {}
        for path, group in players.items():
            lat: list[float] = []
            for p in group:
                lat.extend(log.latencies(clip, p.stats.frames, t0, t1))
            samples[path] = lat
            s = stats(lat)
            s["players"] = sum(1 for p in group if p.stats.setup_s is not None and not p.closed)
            result["paths"][path] = s
            print(
                f"{mode:8} {path:7} players {s['players']:3}  frames {s['samples']:6}  latency p50 {s['p50_ms']} ms  "
                f"p95 {s['p95_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms",
                flush=True,
            )
        result["_samples"] = samples
        return result
    finally:
        ticker.stop()
        for group in players.values():
            for p in group:
                p.close()
        await asyncio.sleep(0.3)
        if edge is not None:
            edge.stop()
        origin.stop()


def plot_cdf(path: Path, results: list[dict[str, Any]], protocol: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        for where, values in r["_samples"].items():
            if not values:
                continue
            xs = sorted(v * 1000 for v in values)
            ys = [100.0 * (i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=f"{r['mode']}: publisher -> {where} -> player")
    ax.set_xlabel("latency, ms (publisher write -> player read of the same frame)")
    ax.set_ylabel("% of frames")
    ax.set_title(f"tidecast latency, {protocol.upper()} players, server on one core")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {path}"


async def main_async(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: {', '.join(MODES)}")
    if not 1 <= args.players <= 500:
        raise SystemExit("--players: 1..500")
    clip = B.Clip(B.make_clip(args.clip))
    results = []
    with tempfile.TemporaryDirectory(prefix="tidecast-latency-") as tmp:
        for mode in modes:
            results.append(await run_mode(mode, args, clip, Path(tmp)))
    tag = f"-{args.tag}" if args.tag else ""
    base = args.out / f"latency-{args.protocol}{tag}-{B.stamp()}"
    note = plot_cdf(base.with_suffix(".png"), results, args.protocol)
    for r in results:
        r.pop("_samples", None)
    doc = {
        "tool": "bench/latency.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": B.machine_facts(),
        "clip_kbps": round(clip.kbps, 1),
        "settings": B.settings_of(args),
        "results": results,
    }
    B.write_json(base.with_suffix(".json"), doc)
    print(f"\nresults: {base.with_suffix('.json')}")
    print(note)
    return 0


def main() -> int:
    args = parse_args()
    print(B.pin_load(1), "|", B.use_uvloop(), "| fd limit", B.raise_fd_limit())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
