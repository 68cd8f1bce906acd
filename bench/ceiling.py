"""One-core fan-out ceiling past what one load process can open: K load processes against one tidecast.

    python bench/ceiling.py --loads 2 --players 5000,9900 --protocol rtmp
    python bench/ceiling.py --loads 2 --players 5000,9900 --protocol flv

A load process holds one socket per player (two for a counting one) under its own
descriptor limit, so past ~18,000 players one process cannot open them all. This
starts tidecast pinned to core 0 (`max_connections` just under its descriptor
limit), then K `bench/fanout.py --url` processes at once, each with its own
publisher and stream (live/ceilingK) and --players players per step, ramping at
--rate each. The steps of the K loads run side by side, so each window sees the
server with all of them; the combined row per step:

  players          the sum over the loads (K streams, --players each)
  server CPU%      of core 0 over the window (the loads' own figures, averaged)
  keep-up %        the lowest of the loads'
  latency          each load's p50/p95/p99 (its own publisher to its players)
  RSS/player       the server's RSS growth over all players (a load's own figure divides by its players only)
  load CPU%        the loads' sum (all on core 1, with their publishers)

The server's stall gauges (`tidecast_gc_pause_max_seconds`, `tidecast_loop_tick_late_max_seconds`)
are read from /metrics every 5 s; the JSON keeps the worst of each and the collector's counters at
the end.

Writes bench/results/ceiling-PROTO-TIME.json with the combined rows and each load's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib as B


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", type=int, default=2, help="load processes, each with its stream and publisher (2)")
    p.add_argument("--players", default="5000,9900", help="players per load at each step (5000,9900)")
    p.add_argument("--protocol", choices=("rtmp", "flv"), default="rtmp")
    p.add_argument("--rate", type=float, default=125.0, help="new players per second per load (125)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after a ramp before measuring (5)")
    p.add_argument("--window", type=float, default=15.0, help="measurement window in seconds (15)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where the JSON goes")
    p.add_argument("--tag", default="", help="a word added to the output file name")
    return p.parse_args(argv)


STALLS = ("tidecast_gc_pause_max_seconds", "tidecast_loop_tick_late_max_seconds")
COUNTERS = ("tidecast_gc_collections_total", "tidecast_gc_pause_seconds_total")


def read_stalls(api: str) -> dict[str, float]:
    """The stall gauges and the collector's counters, by series, from the server's /metrics."""
    text = urllib.request.urlopen(f"{api}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(STALLS + COUNTERS):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


async def watch_stalls(api: str, worst: dict[str, float], last: dict[str, float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            now = await loop.run_in_executor(None, read_stalls, api)
        except OSError:
            now = {}
        for series, value in now.items():
            if series.startswith(STALLS):
                worst[series] = max(worst.get(series, 0.0), value)
            else:
                last[series] = value
        await asyncio.sleep(5.0)


def combine(step: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    players = sum(r["players"] for r in rows)
    rss = max(r["server_rss_mb"] for r in rows)
    return {
        "players": players,
        "server_cpu_pct": round(sum(r["server_cpu_pct"] for r in rows) / len(rows), 1),
        "keepup_pct": min(r["keepup_pct"] for r in rows),
        "setup_failures": sum(r["setup_failures"] for r in rows),
        "closed_after_setup": sum(r["closed_after_setup"] for r in rows),
        "latency_ms_per_load": [[r["latency_p50_ms"], r["latency_p95_ms"], r["latency_p99_ms"]] for r in rows],
        "server_rss_mb": rss,
        # Each load's figure is (server RSS - RSS before its players) / its own players.
        "rss_per_player_kb": round(sum(r["rss_per_player_kb"] * r["players"] for r in rows) / len(rows) / players, 1),
        "load_cpu_pct": round(sum(r["load_cpu_pct"] + r["publisher_cpu_pct"] for r in rows), 1),
        "load_saturated": any(r["load_saturated"] for r in rows),
        "core0_busy_pct": rows[0]["core0_busy_pct"],
        "core1_busy_pct": rows[0]["core1_busy_pct"],
        "step": step,
    }


async def main_async(args: argparse.Namespace) -> int:
    steps = [int(x) for x in args.players.split(",") if x.strip()]
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    most = steps[-1] * args.loads
    # The server inherits this process's limit; it needs a descriptor per player, plus the publishers',
    # its listeners, logs and a margin.
    room = fd_limit - 2 * args.loads - 64
    if most > room:
        raise SystemExit(
            f"--players x --loads = {most} players; the server's descriptor limit (ulimit -n {fd_limit}) leaves room "
            f"for {room}: fewer players per load"
        )
    rtmp, api, http = B.free_port(), B.free_port(), B.free_port()
    config = B.tidecast_config(rtmp, api, http, max_connections=room + args.loads)
    with tempfile.TemporaryDirectory(prefix="tidecast-ceiling-") as tmp:
        server = B.start_tidecast(config, Path(tmp) / "tidecast", rtmp)
        print(f"tidecast pid {server.pid} on core 0: {args.loads} loads x {steps} {args.protocol} players")
        worst: dict[str, float] = {}
        counters: dict[str, float] = {}
        watcher = asyncio.create_task(watch_stalls(f"http://127.0.0.1:{api}", worst, counters))
        procs = []
        try:
            for k in range(args.loads):
                # Run from the checkout by relative path: the loads' JSON (kept in ours) then names no
                # machine's directories.
                argv = [
                    sys.executable, "bench/fanout.py",
                    "--url", f"rtmp://127.0.0.1:{rtmp}/live/ceiling{k}", "--flv-port", str(http),
                    "--server-pid", str(server.pid), "--protocol", args.protocol,
                    "--players", args.players, "--rate", str(args.rate),
                    "--settle", str(args.settle), "--window", str(args.window), "--stop-below", "0",
                    "--out", str(Path(tmp) / "loads"), "--tag", f"load{k}",
                ]  # fmt: skip
                log = open(Path(tmp) / f"load{k}.log", "wb")  # noqa: SIM115 - the child keeps it
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=B.REPO
                    )
                )
                log.close()
            codes = [await p.wait() for p in procs]
            if any(codes):
                for k in range(args.loads):
                    print(f"load {k}:\n" + (Path(tmp) / f"load{k}.log").read_text()[-2000:])
                raise SystemExit(f"a load process failed: exit codes {codes}")
            loads = [json.loads(f.read_text()) for f in sorted((Path(tmp) / "loads").glob("fanout-*.json"))]
        finally:
            watcher.cancel()
            for p in procs:
                if p.returncode is None:
                    p.kill()
            server.stop()
    per_load = [doc["results"][0]["rows"] for doc in loads]
    combined = [combine(i, [rows[i] for rows in per_load]) for i in range(min(len(r) for r in per_load))]
    for row in combined:
        lat = ", ".join(f"{p50:.0f}/{p95:.0f}/{p99:.0f}" for p50, p95, p99 in row["latency_ms_per_load"])
        print(
            f"N={row['players']:6d}  cpu {row['server_cpu_pct']:5.1f}%  keep-up {row['keepup_pct']:5.1f}%  "
            f"fail {row['setup_failures']}+{row['closed_after_setup']}  lat p50/p95/p99 per load {lat} ms  "
            f"rss/player {row['rss_per_player_kb']} KB  load {row['load_cpu_pct']}%"
            + ("  LOAD SATURATED" if row["load_saturated"] else "")
        )
    print("stalls, worst seen: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(worst.items())))
    print("collector: " + ", ".join(f"{k} {v:g}" for k, v in sorted(counters.items())))
    doc = {
        "tool": "bench/ceiling.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": B.machine_facts(),
        "settings": B.settings_of(args),
        "combined": combined,
        "stalls_worst_s": worst,
        "collector_at_end": counters,
        "loads": [{"command": d["command"], "rows": rows} for d, rows in zip(loads, per_load, strict=True)],
    }
    tag = f"-{args.tag}" if args.tag else ""
    out = args.out / f"ceiling-{args.protocol}{tag}-{B.stamp()}.json"
    B.write_json(out, doc)
    print(f"results: {out}")
    return 0


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
