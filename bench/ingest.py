"""Ingest: how many 1 Mbps publishers one tidecast core takes in, with HLS off and on, beside nginx-rtmp.

    python bench/ingest.py --publishers 50,100,300 --hls both

nginx-rtmp (when installed: apt-get install -y nginx libnginx-mod-rtmp) runs the
same ramp first, pinned to the same core, as the C baseline, with HLS off and on
as --hls asks (its `hls on` with the same fragment and playlist length); it has no API, so
its "real time" is the publishers' pace alone (a server that falls behind
stops reading and the publishers' backlog grows). `--servers tidecast` skips it.

Starts tidecast pinned to core 0 (HLS off, then on: hls_fragment 2, hls_window
10 unless --hls-fragment/--hls-window say otherwise, segments in a temporary
directory; with --dvr on, once more with HLS off and one `dvr_plan session`
FLV recording per stream), pins this tool to core 1, and ramps up
light synthetic publishers (each replays a ~1 Mbps H.264+AAC FLV clip's tags at
real time; one timer drives them all, the RTMP messages are encoded once per
clip loop and shared) to each M in turn. At each M, after --settle seconds,
over --window seconds:

  server CPU%        of one core, and per stream
  real time          per stream, the server's recv_bytes growth (/api/v1/streams)
                     against the payload bytes its publisher wrote in the same
                     window: a stream keeps real time at >= --threshold (95%);
                     the publishers' own pace is checked too (their largest
                     unsent backlog and the timer's worst lateness)
  HLS                playlists and segments on disk, when HLS is on
  load CPU%          this tool's own CPU: near 100% voids the figures

Writes bench/results/ingest-TIME.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as B


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--publishers", default="50,100,300", help="publisher counts, ramped in turn (50,100,300)")
    p.add_argument("--hls", choices=("off", "on", "both"), default="both", help="HLS muxing off, on, or both runs")
    p.add_argument(
        "--dvr", choices=("off", "on"), default="off", help="on: one more run, HLS off, one DVR recording per stream"
    )
    p.add_argument("--hls-fragment", type=float, default=2.0, help="hls_fragment of the HLS runs (2; SRS default 10)")
    p.add_argument("--hls-window", type=float, default=10.0, help="hls_window of the HLS runs (10; SRS default 60)")
    p.add_argument(
        "--hls-variant", default="mpegts", choices=["mpegts", "fmp4", "lowlatency"], help="hls_variant (mpegts)"
    )
    p.add_argument("--mr", choices=("off", "on", "both"), default="off", help="merged read (mr on): off, on, both")
    p.add_argument("--mr-latency", type=int, default=350, help="mr_latency in ms when --mr is on (350, SRS's default)")
    p.add_argument(
        "--servers", default="auto", help="auto (tidecast, plus nginx-rtmp when installed), tidecast, or nginx,tidecast"
    )
    p.add_argument(
        "--tick",
        type=float,
        default=0.01,
        help="the publishers' timer in s (0.01): each publisher writes what is due once per tick; 0.04 lets one"
        " core of load drive 1,000 publishers, with fewer and larger writes for every server alike",
    )
    p.add_argument("--hls-dir", type=Path, default=None, help="where HLS writes (default: a temporary directory)")
    p.add_argument(
        "--chunk",
        type=int,
        default=B.PUBLISH_CHUNK,
        help=f"the publishers' RTMP chunk size ({B.PUBLISH_CHUNK}, what ffmpeg sends to tidecast; OBS sends 4096)",
    )
    p.add_argument(
        "--players-per-stream",
        type=int,
        default=0,
        help="RTMP players per stream, opened once the ramp is done (0): an origin whose edges pull every stream",
    )
    p.add_argument("--rate", type=float, default=50.0, help="new publishers per second during a ramp (50)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after a ramp before measuring (5)")
    p.add_argument("--window", type=float, default=20.0, help="measurement window in seconds (20)")
    p.add_argument("--threshold", type=float, default=0.95, help="share of the written bytes the server must take")
    p.add_argument("--clip", type=Path, default=B.CACHE / "clip-1mbps.flv", help="FLV clip (made with ffmpeg)")
    p.add_argument("--profile-at", default="", help="at these M (comma list), record the server with py-spy")
    p.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy recording length (15)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where JSON and PNG go")
    p.add_argument("--tag", default="", help="a word added to the output file names")
    return p.parse_args(argv)


async def api_streams(api: str) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    doc = await loop.run_in_executor(None, B.http_json, f"{api}/api/v1/streams?start=0&count=100000", 15.0)
    return {s["name"]: int(s["recv_bytes"]) for s in doc.get("streams", [])}


def hls_files(path: Path) -> tuple[int, int]:
    playlists = segments = 0
    if path.exists():
        for f in path.rglob("*"):
            if f.suffix == ".m3u8":
                playlists += 1
            elif f.suffix in (".ts", ".m4s"):
                segments += 1
    return playlists, segments


def mode_label(hls: bool, mr: bool, dvr: bool = False) -> str:
    return ("dvr on" if dvr else "hls on" if hls else "hls off") + (", mr" if mr else "")


async def run_mode(
    hls: bool,
    args: argparse.Namespace,
    clip: B.Clip,
    counts: list[int],
    tmp: Path,
    nginx: bool = False,
    mr: bool = False,
    dvr: bool = False,
) -> dict[str, Any]:
    label = ("nginx-rtmp" + (", hls on" if hls else "")) if nginx else mode_label(hls, mr, dvr)
    rtmp, api_port, http = B.free_port(), B.free_port(), B.free_port()
    slug = label.replace(" ", "-").replace(",", "")  # the run's directory name
    hls_dir = (args.hls_dir or tmp) / slug
    body = ""
    if hls and not nginx:
        body = (
            f"hls {{ enabled on; hls_path {hls_dir}; hls_fragment {args.hls_fragment:g};"
            f" hls_window {args.hls_window:g}; hls_variant {args.hls_variant}; }}\n"
        )
    if dvr:
        # One session-long recording per stream, as `dvr_plan session` (SRS's default plan) writes it.
        body += f"dvr {{ enabled on; dvr_path {hls_dir}/[app]/[stream].[timestamp].flv; dvr_plan session; }}\n"
    if mr:
        body += f"publish {{ mr on; mr_latency {args.mr_latency}; }}\n"
    if nginx:
        # nginx-rtmp cuts at the first keyframe after hls_fragment, as tidecast does; hls_cleanup (on by
        # default) deletes the segments that left the playlist.
        application = (
            f"hls on; hls_path {hls_dir / 'hls'}; hls_fragment {round(args.hls_fragment * 1000)}ms;"
            f" hls_playlist_length {round(args.hls_window * 1000)}ms;"
            if hls
            else ""
        )
        if hls:
            (hls_dir / "hls").mkdir(parents=True, exist_ok=True)  # nginx-rtmp makes the last level only
        server = B.start_nginx(tmp / slug, rtmp, application=application)
        api = ""
    else:
        server = B.start_tidecast(B.tidecast_config(rtmp, api_port, http, body), tmp / slug, rtmp)
        api = f"http://127.0.0.1:{api_port}"
    assert server.pid is not None
    name = label if nginx else f"tidecast, {label}"
    print(f"\n== {name}: publishers to rtmp://127.0.0.1:{rtmp}/live/benchK (server pid {server.pid})")
    base = B.Target("127.0.0.1", rtmp, http, "live", "bench")
    ticker = B.Ticker(args.tick)
    ticker.start()
    rows: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    profile_at = {int(x) for x in args.profile_at.split(",") if x.strip()}
    states = B.StateSampler(server.pid)
    states.start()
    failures = 0
    players: list[B.AnyPlayer] = []
    try:
        for m in counts:
            start = time.monotonic()
            have = len(ticker.publishers)
            tasks = []
            for k, index in enumerate(range(have, m)):
                delay = start + k / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(B.start_publisher(clip, base.named(f"bench{index}")))
                # Media starts as soon as each publisher is up: a long ramp must not leave the first ones
                # silent past the server's normal_timeout.
                task.add_done_callback(
                    lambda t: (
                        ticker.publishers.append(t.result()) if not t.cancelled() and t.exception() is None else None
                    )
                )
                tasks.append(task)
            for res in await asyncio.gather(*tasks, return_exceptions=True):
                if not isinstance(res, B.RtmpPublisher):
                    failures += 1
                    print(f"publisher failed: {res}")
            ramp_s = time.monotonic() - start
            for index in range(len(players) // max(1, args.players_per_stream), m if args.players_per_stream else 0):
                opened = await asyncio.gather(
                    *(
                        B.open_player("rtmp", base.named(f"bench{index}"), False, 10.0)
                        for _ in range(args.players_per_stream)
                    )
                )
                players.extend(opened)
            await asyncio.sleep(args.settle)
            pubs = list(ticker.publishers)
            for p in pubs:
                p.max_backlog = 0
            ticker.max_lag = 0.0
            cpu = B.CpuMeter(server.pid)
            load = B.CpuMeter(os.getpid(), tree=False)  # its children include the server
            cores = B.CoreMeter()
            states.take()
            t0 = time.monotonic()
            sent0 = [p.sent_media for p in pubs]
            recv0 = await api_streams(api) if api else {}
            await asyncio.sleep(args.window)
            t1 = time.monotonic()
            sent1 = [p.sent_media for p in pubs]
            recv1 = await api_streams(api) if api else {}
            server_user, server_sys = cpu.split()
            server_cpu = server_user + server_sys
            load_cpu = load.percent()
            busy = cores.percent()
            state = states.take()
            span = t1 - t0
            ratios = []
            for p, s0, s1 in zip(pubs, sent0, sent1, strict=True):
                stream = p.target.stream
                written = s1 - s0
                if not api:  # no API: the pace check below stands alone
                    ratios.append(1.0)
                    continue
                taken = recv1.get(stream, 0) - recv0.get(stream, 0)
                ratios.append(taken / written if written else 0.0)
            expected = clip.media_bytes / (clip.period_ms / 1000.0) * span
            pace = [(s1 - s0) / expected for s0, s1 in zip(sent0, sent1, strict=True)]
            kept = sum(1 for r, q in zip(ratios, pace, strict=True) if r >= args.threshold and q >= args.threshold)
            playlists, segments = hls_files(hls_dir) if hls else (0, 0)
            row = {
                "publishers": m,
                "connected": len(pubs),
                "lost": sum(1 for p in pubs if p.lost),
                "failed_to_start": failures,
                "server_cpu_pct": round(server_cpu, 1),
                "server_user_pct": round(server_user, 1),
                "server_sys_pct": round(server_sys, 1),
                "cpu_per_stream_pct": round(server_cpu / max(1, len(pubs)), 3),
                "realtime_pct": round(100.0 * kept / m, 2),
                "server_took_min_pct": round(100.0 * min(ratios), 1) if ratios else None,
                "publisher_pace_min_pct": round(100.0 * min(pace), 1) if pace else None,
                "ingest_mbps": round(sum(s1 - s0 for s0, s1 in zip(sent0, sent1, strict=True)) * 8 / span / 1e6, 1),
                "publisher_max_backlog_kb": round(max((p.max_backlog for p in pubs), default=0) / 1024, 1),
                "ticker_max_lag_ms": round(ticker.max_lag * 1000, 1),
                "server_rss_mb": round(B.rss_bytes(B.process_tree(server.pid)) / 2**20, 1),
                "server_state_pct": state,
                "core0_busy_pct": busy.get(0),
                "core1_busy_pct": busy.get(1),
                "load_cpu_pct": round(load_cpu, 1),
                "load_saturated": load_cpu >= 90.0,
                "ramp_s": round(ramp_s, 1),
                "players": len(players),
                "players_failed": sum(1 for p in players if p.stats.error),
            }
            if hls:
                row["hls_playlists"] = playlists
                row["hls_segments_on_disk"] = segments
            if dvr:
                recordings = list(hls_dir.rglob("*.flv*"))
                row["dvr_files"] = len(recordings)
                row["dvr_mb_on_disk"] = round(sum(f.stat().st_size for f in recordings) / 2**20, 1)
            rows.append(row)
            warn = "  << LOAD SATURATED: figures void" if row["load_saturated"] else ""
            print(
                f"{label:8} M={m:4}  cpu {row['server_cpu_pct']:5}% ({row['cpu_per_stream_pct']}%/stream, "
                f"user {row['server_user_pct']}% sys {row['server_sys_pct']}%)  "
                f"real time {row['realtime_pct']}%  took>={row['server_took_min_pct']}%  "
                f"pace>={row['publisher_pace_min_pct']}%  {row['ingest_mbps']} Mbps in  "
                f"backlog<={row['publisher_max_backlog_kb']} KB  lag<={row['ticker_max_lag_ms']} ms  "
                f"rss {row['server_rss_mb']} MB  load {row['load_cpu_pct']}%  cores {busy.get(0)}/{busy.get(1)}%  "
                f"server state {state}"
                + (f"  hls {playlists} playlists/{segments} segments" if hls else "")
                + (f"  dvr {row['dvr_files']} files/{row['dvr_mb_on_disk']} MB" if dvr else "")
                + warn,
                flush=True,
            )
            if m in profile_at and not nginx:
                sinks = "dvr" if dvr else "hls" if hls else "nohls"
                where = args.out / f"profile-ingest-{sinks}{'-mr' if mr else ''}-{m}"
                prof = await B.profile(server.pid, args.profile_seconds, where)
                if prof is not None:
                    profiles.append({"publishers": m, **prof})
                    B.print_profile(prof)
            if not server.alive():
                print(f"{name} exited:\n{server.log_tail()}")
                break
    finally:
        for player in players:
            player.close()
        states.stop()
        ticker.stop()
        for p in ticker.publishers:
            if p.transport is not None:
                p.transport.close()
        await asyncio.sleep(0.5)
        server.stop()
    return {"server": name, "hls": hls, "dvr": dvr, "mr": mr, "rows": rows, "profiles": profiles}


def cpu_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each tidecast run over nginx-rtmp's with the same sinks, and HLS on over HLS off, at each M both ran."""
    by = {r["server"]: {row["publishers"]: row["server_cpu_pct"] for row in r["rows"]} for r in results}
    pairs = []
    for mr in (False, True):
        off, on = f"tidecast, {mode_label(False, mr)}", f"tidecast, {mode_label(True, mr)}"
        pairs.append((f"{off} CPU / nginx-rtmp CPU", off, "nginx-rtmp"))
        pairs.append((f"{on} CPU / nginx-rtmp, hls on CPU", on, "nginx-rtmp, hls on"))
        pairs.append((f"{on} CPU / {off} CPU", on, off))
        recorded = f"tidecast, {mode_label(False, mr, dvr=True)}"
        pairs.append((f"{recorded} CPU / {off} CPU", recorded, off))
    pairs.append(("nginx-rtmp, hls on CPU / nginx-rtmp CPU", "nginx-rtmp, hls on", "nginx-rtmp"))
    out = []
    for what, top, bottom in pairs:
        for m, cpu in sorted(by.get(top, {}).items()):
            base = by.get(bottom, {}).get(m)
            if base:
                out.append({"publishers": m, "what": what, "ratio": round(cpu / base, 2)})
    return out


async def main_async(args: argparse.Namespace) -> int:
    counts = sorted({int(x) for x in args.publishers.split(",") if x.strip()})
    if not counts or counts[-1] > 2000:
        raise SystemExit("--publishers: counts between 1 and 2000")
    clip = B.Clip(B.make_clip(args.clip))
    print(f"clip {clip.path}: {clip.kbps:.0f} kbps of media, {clip.period_ms / 1000:.1f} s loop")
    hls_modes = {"off": [False], "on": [True], "both": [False, True]}[args.hls]
    mr_modes = {"off": [False], "on": [True], "both": [False, True]}[args.mr]
    if args.servers == "auto":
        with_nginx = B.nginx_binary() is not None
        if not with_nginx:
            print("nginx-rtmp not installed (apt-get install -y nginx libnginx-mod-rtmp): tidecast only")
    else:
        with_nginx = "nginx" in args.servers.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="tidecast-ingest-") as tmp:
        if with_nginx:
            for hls in hls_modes:
                results.append(await run_mode(hls, args, clip, counts, Path(tmp), nginx=True))
        for mr in mr_modes:
            for hls in hls_modes:
                results.append(await run_mode(hls, args, clip, counts, Path(tmp), mr=mr))
            if args.dvr == "on":
                results.append(await run_mode(False, args, clip, counts, Path(tmp), mr=mr, dvr=True))
    ratios = cpu_ratios(results)
    for r in ratios:
        print(f"M={r['publishers']}: {r['what']} = {r['ratio']}")
    doc = {
        "tool": "bench/ingest.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": B.machine_facts(),
        "clip_kbps": round(clip.kbps, 1),
        "settings": B.settings_of(args),
        "results": results,
        "cpu_ratios": ratios,
    }
    tag = f"-{args.tag}" if args.tag else ""
    base = args.out / f"ingest{tag}-{B.stamp()}"
    B.write_json(base.with_suffix(".json"), doc)
    print(f"\nresults: {base.with_suffix('.json')}")
    note = B.plot(
        base.with_suffix(".png"),
        f"ingest: {clip.kbps:.0f} kbps publishers into tidecast on one core",
        "publishers",
        {r["server"]: r["rows"] for r in results},
        [("server_cpu_pct", "server CPU % (one core)"), ("realtime_pct", "streams in real time %")],
        "publishers",
    )
    print(note)
    return 0


def main() -> int:
    args = parse_args()
    B.PUBLISH_CHUNK = args.chunk  # read by the clip encoder and each publisher's Set Chunk Size
    print(B.pin_load(1), "|", B.use_uvloop(), "| fd limit", B.raise_fd_limit())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
