"""Fan-out: how many RTMP, HTTP-FLV or live-MP4 players of one 1 Mbps stream one core carries.

    python bench/fanout.py --players 500,1000,2000 --protocol rtmp
    python bench/fanout.py --players 500,1000,2000 --protocol flv --servers tidecast
    python bench/fanout.py --players 1000 --protocol flv,mp4     # both in one run, CPU ratio mp4/flv

For each server (tidecast, and nginx-rtmp when it is installed and the protocol
is RTMP): start it pinned to core 0 (`prlimit --nofile=65536 taskset -c 0 ...`),
pin this load tool to core 1, start one publisher (a process of its own)
replaying a ~1 Mbps H.264+AAC FLV clip at real time, then ramp players up to
each N in turn (--rate per second). At each N, after --settle seconds, measure
over --window seconds:

  server CPU%      utime+stime of the server's process tree, from /proc (100% = one core)
  keep-up %        players that received >= --threshold (90%) of the publisher's media rate
  failures         players whose connect or set-up failed, or that the server closed
  latency          publisher send time -> player arrival of the same video frame
                   (matched by content), p50/p95/p99 over the probe players
  RSS/player       (server RSS at N - RSS with the publisher only) / N
  load CPU%        this tool's own CPU (and the publisher's): near 100% means the
                   load, not the server, is the limit and the figures are void

Writes bench/results/fanout-PROTO-TIME.json and .png (CPU% and keep-up vs N,
one line per server) and prints tidecast/nginx-rtmp CPU ratios at each N.
`--url rtmp://127.0.0.1:PORT/live/STREAM [--flv-port P] [--server-pid PID]`
loads a server that is already running instead (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib as B


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--players", default="500,1000,2000", help="player counts, ramped in turn (default 500,1000,2000)")
    p.add_argument(
        "--protocol",
        default="rtmp",
        help="how players play: rtmp, flv, mp4 (tidecast's live fMP4), or a comma list run in turn (default rtmp)",
    )
    p.add_argument(
        "--servers",
        default="auto",
        help="comma list of tidecast,nginx; auto = tidecast, plus nginx-rtmp for RTMP when installed",
    )
    p.add_argument("--rate", type=float, default=200.0, help="new players per second during a ramp (default 200)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after a ramp before measuring (default 5)")
    p.add_argument("--window", type=float, default=20.0, help="measurement window in seconds (default 20)")
    p.add_argument("--threshold", type=float, default=0.9, help="keep-up share of the publisher's rate (0.9)")
    p.add_argument("--probe-every", type=int, default=50, help="every Kth player parses and times frames (50)")
    p.add_argument("--stop-below", type=float, default=20.0, help="stop a server's ramp once keep-up %% < this")
    p.add_argument("--clip", type=Path, default=B.CACHE / "clip-1mbps.flv", help="FLV clip (made with ffmpeg)")
    p.add_argument("--profile-at", default="", help="at these N (comma list), record tidecast with py-spy")
    p.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy recording length (15)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where JSON and PNG go")
    p.add_argument("--tag", default="", help="a word added to the output file names")
    p.add_argument("--url", help="attach: rtmp://127.0.0.1:PORT/APP/STREAM of a running server")
    p.add_argument("--flv-port", type=int, help="attach: the HTTP port for --protocol flv")
    p.add_argument("--server-pid", type=int, help="attach: the server's pid, for CPU and RSS")
    p.add_argument("--rcvlowat", type=int, default=B.RCVLOWAT, help="SO_RCVLOWAT of counting players (32768)")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of counting players (0: autotuned)")
    p.add_argument(
        "--copy-reads", action="store_true", help="counting players copy their bytes out (as before 2026-12-02)"
    )
    p.add_argument("--min-latency", action="store_true", help="tidecast: min_latency on in the vhost")
    p.add_argument("--tcp-nodelay", action="store_true", help="tidecast: tcp_nodelay on in the vhost (Nagle off)")
    return p.parse_args(argv)


PROTOCOLS = ("rtmp", "flv", "mp4")


def protocols(args: argparse.Namespace) -> list[str]:
    out = [p.strip() for p in args.protocol.split(",") if p.strip()]
    bad = [p for p in out if p not in PROTOCOLS]
    if bad or not out:
        raise SystemExit(f"--protocol: {', '.join(bad) or 'nothing'} is not one of {', '.join(PROTOCOLS)}")
    return out


def servers_to_run(args: argparse.Namespace) -> list[str]:
    if args.url:
        return ["attached"]
    if args.servers == "auto":
        names = ["tidecast"]
        if args.protocol == "rtmp":
            if B.nginx_binary():
                names.append("nginx")
            else:
                print("nginx-rtmp not installed (apt-get install -y nginx libnginx-mod-rtmp): tidecast only")
        return names
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "nginx" in names and args.protocol != "rtmp":
        print(f"nginx-rtmp serves no HTTP-FLV or MP4: skipping it for --protocol {args.protocol}")
        names.remove("nginx")
    return names


async def measure_server(
    name: str, args: argparse.Namespace, clip: B.Clip, counts: list[int], workdir: Path
) -> dict[str, Any]:
    server: B.Server | None = None
    stream = "bench"
    if name == "attached":
        target = B.parse_rtmp_url(args.url, args.flv_port)
        server = B.Server("attached", args.server_pid, None, None)
    elif name == "tidecast":
        rtmp, api, http = B.free_port(), B.free_port(), B.free_port()
        body = ("min_latency on;\n" if args.min_latency else "") + ("tcp_nodelay on;\n" if args.tcp_nodelay else "")
        config = B.tidecast_config(rtmp, api, http, body)
        server = B.start_tidecast(config, workdir / "tidecast", rtmp)
        target = B.Target("127.0.0.1", rtmp, http, "live", stream)
    elif name == "nginx":
        rtmp = B.free_port()
        server = B.start_nginx(workdir / "nginx", rtmp)
        target = B.Target("127.0.0.1", rtmp, None, "live", stream)
    else:
        raise SystemExit(f"unknown server {name}: tidecast, nginx")
    label = {"tidecast": "tidecast", "nginx": "nginx-rtmp"}.get(name, name)
    if getattr(args, "several_protocols", False):  # multicore.py drives one protocol
        label = f"{label}-{args.protocol}"
    print(f"\n== {label}: {args.protocol} players of {target.rtmp_url()} (server pid {server.pid})")
    publisher = B.PublisherProcess(clip.path, target, workdir)
    ramp = B.Ramp(args.protocol, target, args.rate, args.probe_every)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"server": label, "rows": rows}
    lag = B.LoopLag()
    lag.start()
    profile_at = {int(x) for x in args.profile_at.split(",") if x.strip()}
    try:
        await publisher.start()
        await asyncio.sleep(3.0)
        pids = B.process_tree(server.pid) if server.pid else []
        rss0 = B.rss_bytes(pids) if pids else 0
        result["rss_idle_mb"] = round(rss0 / 2**20, 1)
        sendlog = B.SendLog()
        for n in counts:
            t_ramp = time.monotonic()
            ramp_cpu = B.CpuMeter(server.pid) if server.pid else None
            kernel = B.KernelMeter()
            await ramp.grow(n)
            ramp_s = time.monotonic() - t_ramp
            ramp_cpu_pct = round(ramp_cpu.percent(), 1) if ramp_cpu else None
            await asyncio.sleep(args.settle)
            row = await measure_window(args, clip, n, server, publisher, ramp, sendlog, rss0, lag)
            row["ramp_s"] = round(ramp_s, 1)
            row["ramp_server_cpu_pct"] = ramp_cpu_pct
            row["kernel_during_ramp_and_window"] = kernel.deltas()
            rows.append(row)
            print_row(label, row)
            if n in profile_at and server.pid and name != "nginx":
                where = args.out / f"profile-{label}-{args.protocol}-{n}"
                prof = await B.profile(server.pid, args.profile_seconds, where)
                if prof is not None:
                    result.setdefault("profiles", []).append({"players": n, **prof})
                    B.print_profile(prof)
            if not server.alive():
                print(f"{label} exited:\n{server.log_tail()}")
                break
            if not publisher.alive():
                print("the publisher stopped (connection lost): ending this server's run")
                break
            if row["keepup_pct"] < args.stop_below:
                print(f"keep-up below {args.stop_below}%: not going further with {label}")
                break
    finally:
        lag.stop()
        ramp.close_all()
        await asyncio.sleep(0.5)
        await publisher.stop()
        if name != "attached":
            server.stop()
        errors = Counter(p.stats.error for p in ramp.players if p.stats.error)
        result["errors"] = dict(errors)
    return result


async def measure_window(
    args: argparse.Namespace,
    clip: B.Clip,
    n: int,
    server: B.Server,
    publisher: B.PublisherProcess,
    ramp: B.Ramp,
    sendlog: B.SendLog,
    rss0: int,
    lag: B.LoopLag,
) -> dict[str, Any]:
    players = ramp.players[:n]
    server_cpu = B.CpuMeter(server.pid) if server.pid else None
    load_cpu = B.CpuMeter(os.getpid(), tree=False)  # its children include the server
    pub_cpu = B.CpuMeter(publisher.pid) if publisher.pid else None
    cores = B.CoreMeter()
    lag.take()
    t0 = time.monotonic()
    bytes0 = [(p.stats.bytes, p.stats.last_read) for p in players]
    await asyncio.sleep(args.window)
    t1 = time.monotonic()
    bytes1 = [(p.stats.bytes, p.stats.last_read) for p in players]
    row: dict[str, Any] = {"players": n}
    row["server_cpu_pct"] = round(server_cpu.percent(), 1) if server_cpu else None
    row["load_cpu_pct"] = round(load_cpu.percent(), 1)
    row["publisher_cpu_pct"] = round(pub_cpu.percent(), 1) if pub_cpu else None
    busy = cores.percent()
    row["core0_busy_pct"] = busy.get(0)
    row["core1_busy_pct"] = busy.get(1)
    lags = lag.take()
    row["load_lag_p99_ms"] = round(1000 * (B.percentile(lags, 99) or 0.0), 1)
    await asyncio.sleep(0.6)  # the publisher flushes its send log every 0.25 s
    sendlog.load_file(publisher.log, clip)
    rate = sendlog.media_rate(t0, t1)
    row["publisher_kbps"] = round(rate * 8 / 1000, 1)
    lat: list[float] = []
    probes = [p for p in players if p.probe and not p.closed]
    for p in probes:
        lat.extend(sendlog.latencies(clip, p.stats.frames, t0, t1))
        p.stats.frames = [f for f in p.stats.frames if f[1] >= t1]
    row["probes"] = len(probes)
    row["latency_samples"] = len(lat)
    for q in (50, 95, 99):
        v = B.percentile(lat, q)
        row[f"latency_p{q}_ms"] = round(v * 1000, 1) if v is not None else None
    span = t1 - t0
    # Players receive the window's media about their latency later than the publisher sent it. Over a short
    # window the clip's bitrate is not flat (a keyframe a second), so their bytes are compared with what the
    # publisher sent over the same window shifted by the probes' median latency, not over the window itself.
    shift = B.percentile(lat, 50) or 0.0
    need = args.threshold * sendlog.media_rate(t0 - shift, t1 - shift)
    # A player takes its media a batch (mw_latency) at a time, so what it read inside the window is a whole
    # number of batches: over 5 s that is 14 or 15 of them, and every player in step read 10 % less than
    # the publisher sent. The rate is taken between its first and last reads of the window instead, over no
    # less than the window less a second, so one that stopped reading early still falls short.
    rates = [
        (b1 - b0) / max(r1 - r0, span - 1.0) if r1 > r0 else 0.0
        for (b0, r0), (b1, r1) in zip(bytes0, bytes1, strict=True)
    ]
    keeping = sum(1 for p, r in zip(players, rates, strict=True) if r >= need and not p.closed)
    row["keepup_pct"] = round(100.0 * keeping / n, 2)
    row["setup_failures"] = sum(1 for p in players if p.stats.setup_s is None)
    # Players that copy their reads although DISCARD is on: the fd limit left no room for their duplicates.
    row["copying_players"] = sum(
        1 for p in players if not p.probe and getattr(p, "discard", None) is None and not p.closed
    )
    row["closed_after_setup"] = sum(1 for p in players if p.stats.setup_s is not None and p.closed)
    ordered = sorted(rates)
    row["player_kbps_min"] = round(ordered[0] * 8 / 1000, 1) if ordered else None
    row["player_kbps_median"] = round(ordered[len(ordered) // 2] * 8 / 1000, 1) if ordered else None
    setups = [p.stats.setup_s for p in players if p.stats.setup_s is not None]
    row["setup_p95_ms"] = round(1000 * (B.percentile(setups, 95) or 0), 1)
    if server.pid:
        rss = B.rss_bytes(B.process_tree(server.pid))
        row["server_rss_mb"] = round(rss / 2**20, 1)
        row["rss_per_player_kb"] = round((rss - rss0) / n / 1024, 1)
    row["load_saturated"] = (
        row["load_cpu_pct"] + (row["publisher_cpu_pct"] or 0) >= 90.0 or row["load_lag_p99_ms"] >= 50.0
    )
    return row


def kernel_drops(r: dict[str, Any]) -> str:
    """What the kernel dropped or resent during the ramp and the window, when it did."""
    counts = {k: v for k, v in (r.get("kernel_during_ramp_and_window") or {}).items() if v}
    if not counts:
        return ""
    return "  kernel " + " ".join(f"{k} +{v}" for k, v in sorted(counts.items()))


def print_row(label: str, r: dict[str, Any]) -> None:
    lat = f"p50/p95/p99 {r['latency_p50_ms']}/{r['latency_p95_ms']}/{r['latency_p99_ms']} ms"
    warn = "  << LOAD SATURATED: figures void" if r["load_saturated"] else ""
    if B.DISCARD and r.get("copying_players"):
        warn += f"  ({r['copying_players']} players copy their reads: no fds left to duplicate)"
    print(
        f"{label:10} N={r['players']:5}  cpu {r['server_cpu_pct']:5}%  keep-up {r['keepup_pct']:6}%  "
        f"fail {r['setup_failures']}+{r['closed_after_setup']}  lat {lat}  "
        f"rss/player {r.get('rss_per_player_kb')} KB  load {r['load_cpu_pct']}% (pub {r['publisher_cpu_pct']}%, "
        f"lag p99 {r['load_lag_p99_ms']} ms)  cores {r['core0_busy_pct']}/{r['core1_busy_pct']}%  "
        f"pub {r['publisher_kbps']} kbps  min/med {r['player_kbps_min']}/{r['player_kbps_median']} kbps  "
        f"ramp {r.get('ramp_s')} s at cpu {r.get('ramp_server_cpu_pct')}%{kernel_drops(r)}{warn}",
        flush=True,
    )


def protocol_ratios(results: list[dict[str, Any]], base: str = "flv") -> list[dict[str, Any]]:
    """CPU of each other protocol's tidecast run over the `base` protocol's, at each N both measured."""
    rows = {
        r["protocol"]: {row["players"]: row for row in r["rows"]} for r in results if r["server"].startswith("tidecast")
    }
    out = []
    for proto, by_n in rows.items():
        if proto == base or base not in rows:
            continue
        for n, row in by_n.items():
            ref = rows[base].get(n)
            if ref and row["server_cpu_pct"] and ref["server_cpu_pct"]:
                ratio = round(row["server_cpu_pct"] / ref["server_cpu_pct"], 2)
                out.append({"players": n, "protocol": proto, "over": base, "cpu_ratio": ratio})
    return out


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["server"]: {row["players"]: row for row in r["rows"]} for r in results}
    if "tidecast" not in by or "nginx-rtmp" not in by:
        return []
    out = []
    for n, t in by["tidecast"].items():
        ng = by["nginx-rtmp"].get(n)
        if ng and t["server_cpu_pct"] and ng["server_cpu_pct"]:
            out.append({"players": n, "cpu_ratio": round(t["server_cpu_pct"] / ng["server_cpu_pct"], 2)})
    return out


async def main_async(args: argparse.Namespace) -> int:
    counts = sorted({int(x) for x in args.players.split(",") if x.strip()})
    B.PLANNED_PLAYERS = counts[-1] if counts else 0
    if not counts or counts[-1] > 18000:
        raise SystemExit("--players: counts between 1 and 18000 (one load process, fd limit 20000)")
    if args.window <= 0 or args.window > 120:
        raise SystemExit("--window: 1..120 seconds")
    clip = B.Clip(B.make_clip(args.clip))
    protos = protocols(args)
    print(f"clip {clip.path}: {clip.kbps:.0f} kbps of media, {clip.period_ms / 1000:.1f} s loop")
    results = []
    with tempfile.TemporaryDirectory(prefix="tidecast-fanout-") as tmp:
        for proto in protos:
            run = argparse.Namespace(**{**vars(args), "protocol": proto, "several_protocols": len(protos) > 1})
            for name in servers_to_run(run):
                workdir = Path(tmp) / proto
                workdir.mkdir(exist_ok=True)
                result = await measure_server(name, run, clip, counts, workdir)
                result["protocol"] = proto
                results.append(result)
    doc = {
        "tool": "bench/fanout.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": B.machine_facts(),
        "protocol": args.protocol,
        "clip_kbps": round(clip.kbps, 1),
        "settings": B.settings_of(args),
        "results": results,
        "cpu_ratio_tidecast_over_nginx": ratios(results),
        "cpu_ratio_over_flv": protocol_ratios(results),
    }
    tag = f"-{args.tag}" if args.tag else ""
    base = args.out / f"fanout-{'-'.join(protos)}{tag}-{B.stamp()}"
    B.write_json(base.with_suffix(".json"), doc)
    print(f"\nresults: {base.with_suffix('.json')}")
    series = {r["server"]: r["rows"] for r in results}
    note = B.plot(
        base.with_suffix(".png"),
        f"fan-out, {'/'.join(protos).upper()} players of one {clip.kbps:.0f} kbps stream, server on one core",
        "players",
        series,
        [("server_cpu_pct", "server CPU % (one core)"), ("keepup_pct", "players keeping up %"),
         ("latency_p95_ms", "latency p95 ms")],
        "players",
    )  # fmt: skip
    print(note)
    for r in doc["cpu_ratio_tidecast_over_nginx"]:
        print(f"N={r['players']}: tidecast CPU / nginx-rtmp CPU = {r['cpu_ratio']}")
    for r in doc["cpu_ratio_over_flv"]:
        print(f"N={r['players']}: tidecast {r['protocol']} CPU / {r['over']} CPU = {r['cpu_ratio']}")
    return 0


def main() -> int:
    args = parse_args()
    B.RCVLOWAT = args.rcvlowat
    B.RCVBUF = args.rcvbuf
    B.DISCARD = B.DISCARD and not args.copy_reads
    print(B.pin_load(1), "|", B.use_uvloop(), "| fd limit", B.raise_fd_limit())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
