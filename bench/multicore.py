"""Multi-core: how many players `workers 1` and `workers 2` keep up, under the same load tool.

    python bench/multicore.py --players 1000,2000,3000,4000 --workers 1,2 --min-latency

For each worker count: start tidecast with `workers K` (the supervisor and its
workers under `taskset -c SERVER_CORES`), one publisher process replaying the
~1 Mbps clip, then ramp RTMP (or HTTP-FLV) players up to each N in turn and
measure over --window seconds, exactly as fanout.py does (same players, same
keep-up rule, same latency probes). Server CPU is the whole process tree:
supervisor plus workers. The players are spread by the kernel (SO_REUSEPORT);
the per-worker split of the players, as /api/v1/streams reports it, is kept in
each row (`players_by_worker`).

How the 2 cores are shared is the point of this run and is printed with the
figures: by default the load tool (and the publisher) are pinned to core 1 and
the server to core 0 for `workers 1`, to cores 0-1 for `workers 2` (it then
shares core 1 with the load). `--server-cores` and `--load-core` change that.
`--load-cores 1:0,2:0-1` gives the load the server's cores in each run instead: the
1-worker run is then one core for server and load together, the 2-worker run two,
and the ratio compares a machine with twice the cores, load included.
`--min-latency` (`min_latency on`: one write per message, as nginx-rtmp does)
makes each player cost several times more, which brings one worker's ceiling
within reach of the load tool's file-descriptor limit (about 20,000 here);
with the default merged writes one worker keeps up past 10,000 players.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib as B
import fanout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--players", default="1000,2000,3000,4000", help="player counts, ramped in turn")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--protocol", choices=("rtmp", "flv"), default="rtmp")
    p.add_argument("--server-cores", default="", help="taskset CPU list per worker count, e.g. '1:0,2:0-1' (default)")
    p.add_argument("--load-core", type=int, default=1, help="core of the load tool and the publisher (default 1)")
    p.add_argument(
        "--load-cores", default="", help="the load's CPU list per worker count, e.g. '1:0,2:0-1' (default: --load-core)"
    )
    p.add_argument("--rate", type=float, default=200.0, help="new players per second during a ramp (200)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after a ramp before measuring (5)")
    p.add_argument("--window", type=float, default=15.0, help="measurement window in seconds (15)")
    p.add_argument("--threshold", type=float, default=0.9, help="keep-up share of the publisher's rate (0.9)")
    p.add_argument("--keepup", type=float, default=99.0, help="a step 'keeps up' when this %% of players do (99)")
    p.add_argument("--probe-every", type=int, default=50, help="every Kth player parses and times frames (50)")
    p.add_argument("--stop-below", type=float, default=50.0, help="stop a ramp once keep-up %% < this (50)")
    p.add_argument("--clip", type=Path, default=B.CACHE / "clip-1mbps.flv", help="FLV clip (made with ffmpeg)")
    p.add_argument("--out", type=Path, default=B.BENCH_DIR / "results", help="where the JSON goes")
    p.add_argument("--tag", default="", help="a word added to the output file name")
    p.add_argument("--rcvlowat", type=int, default=B.RCVLOWAT, help="SO_RCVLOWAT of counting players (32768)")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of counting players (0: autotuned)")
    p.add_argument(
        "--copy-reads", action="store_true", help="counting players copy their bytes out (as before 2026-12-02)"
    )
    p.add_argument("--min-latency", action="store_true", help="min_latency on: a write per message (costlier)")
    p.add_argument("--tcp-nodelay", action="store_true", help="tcp_nodelay on: Nagle off on players' sockets")
    return p.parse_args(argv)


def cpu_list(spec: str) -> set[int]:
    """taskset's CPU list syntax: '0', '0-1', '0,2-3'."""
    out: set[int] = set()
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def by_workers(spec: str) -> dict[int, str]:
    """'1:0,2:0-1' -> {1: '0', 2: '0-1'}: a CPU list for each worker count."""
    chosen: dict[int, str] = {}
    for part in filter(None, spec.split(",")):
        k, _, cores = part.partition(":")
        chosen[int(k)] = cores
    return chosen


def load_cores(args: argparse.Namespace, workers: int) -> str:
    return by_workers(args.load_cores).get(workers, str(args.load_core))


def server_cores(spec: str, workers: int) -> str:
    chosen = {1: "0", 2: "0-1", **by_workers(spec)}
    return chosen.get(workers, f"0-{(os.cpu_count() or 1) - 1}")


def _api_port(config: str) -> int:
    found = re.search(r"http_api \{ enabled on; listen 127\.0\.0\.1:(\d+);", config)
    assert found is not None
    return int(found.group(1))


def _api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


class Run:
    """Patches fanout's tidecast start-up for one worker count, and records what each worker carried."""

    def __init__(self, workers: int, cores: str) -> None:
        self.workers = workers
        self.cores = cores
        self.api_port = 0

    def config(self, rtmp: int, api: int, http: int, vhost_body: str = "", extra: str = "") -> str:
        self.api_port = api
        return ORIGINAL_CONFIG(rtmp, api, http, vhost_body, f"workers {self.workers};\n{extra}")

    def start(self, config: str, workdir: Path, rtmp_port: int, core: int = 0) -> B.Server:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "html").mkdir(exist_ok=True)
        conf = workdir / "tidecast.conf"
        conf.write_text(config)
        nofile = B.fd_limit_target()
        argv = ["prlimit", f"--nofile={nofile}:{nofile}", "taskset", "-c", self.cores,
                sys.executable, "-m", "tidecast", "serve", "-c", str(conf)]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(B.REPO / "src")) if p)
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        server = B.Server("tidecast", proc.pid, proc, workdir)
        B.wait_port(rtmp_port, server)
        port = _api_port(config)
        deadline = time.monotonic() + 30
        while self.workers > 1 and time.monotonic() < deadline:
            try:
                ups = [w for w in _api(port, "/api/v1/summaries")["data"]["workers"] if w["ok"]]
                if len(ups) == self.workers:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        return server

    def per_worker(self) -> dict[str, int]:
        try:
            streams = _api(self.api_port, "/api/v1/streams")["streams"]
        except (OSError, ValueError, KeyError):
            return {}
        out: dict[str, int] = {}
        for stream in streams:
            for w in stream.get("workers", []):
                out[str(w["worker"])] = out.get(str(w["worker"]), 0) + int(w["players"])
        return out


ORIGINAL_CONFIG = B.tidecast_config
ORIGINAL_PRINT = fanout.print_row


async def main_async(args: argparse.Namespace) -> int:
    counts = sorted({int(x) for x in args.players.split(",") if x.strip()})
    B.PLANNED_PLAYERS = counts[-1] if counts else 0
    if not counts or counts[-1] > 12000:
        raise SystemExit("--players: counts between 1 and 12000")
    clip = B.Clip(B.make_clip(args.clip))
    args.profile_at, args.profile_seconds, args.url = "", 0.0, None
    results: list[dict[str, Any]] = []
    for workers in [int(x) for x in args.workers.split(",") if x.strip()]:
        run = Run(workers, server_cores(args.server_cores, workers))
        B.tidecast_config = run.config
        B.start_tidecast = run.start

        def print_row(label: str, row: dict[str, Any], run: Run = run) -> None:
            row["players_by_worker"] = run.per_worker()
            ORIGINAL_PRINT(label, row)
            print(f"{'':10} players by worker: {row['players_by_worker']}", flush=True)

        fanout.print_row = print_row
        load = load_cores(args, workers)
        os.sched_setaffinity(0, cpu_list(load))  # the publisher process, started in the run, inherits it
        print(f"\n== workers {workers}: server on cores {run.cores}, load and publisher on cores {load}")
        with tempfile.TemporaryDirectory(prefix="tidecast-multicore-") as tmp:
            result = await fanout.measure_server("tidecast", args, clip, counts, Path(tmp))
        result["workers"] = workers
        result["server_cores"] = run.cores
        result["load_cores"] = load
        kept = [r["players"] for r in result["rows"] if r["keepup_pct"] >= args.keepup and not r["load_saturated"]]
        result["players_kept_up"] = max(kept) if kept else 0
        results.append(result)
    base = next((r["players_kept_up"] for r in results if r["workers"] == 1), 0)
    summary = [
        {"workers": r["workers"], "server_cores": r["server_cores"], "load_cores": r["load_cores"],
         "players_kept_up": r["players_kept_up"],
         "ratio_to_1_worker": round(r["players_kept_up"] / base, 2) if base else None}
        for r in results
    ]  # fmt: skip
    doc = {
        "tool": "bench/multicore.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": B.machine_facts(),
        "protocol": args.protocol,
        "load_core": args.load_core,
        "clip_kbps": round(clip.kbps, 1),
        "settings": B.settings_of(args),
        "results": results,
        "summary": summary,
    }
    tag = f"-{args.tag}" if args.tag else ""
    path = args.out / f"multicore-{args.protocol}{tag}-{B.stamp()}.json"
    B.write_json(path, doc)
    print(f"\nresults: {path}")
    for s in summary:
        print(f"workers {s['workers']} (server cores {s['server_cores']}, load cores {s['load_cores']}): "
              f"{s['players_kept_up']} players kept up (>= {args.keepup}%), x{s['ratio_to_1_worker']}")  # fmt: skip
    return 0


def main() -> int:
    args = parse_args()
    B.RCVLOWAT = args.rcvlowat
    B.RCVBUF = args.rcvbuf
    B.DISCARD = B.DISCARD and not args.copy_reads
    print(B.pin_load(args.load_core), "|", B.use_uvloop(), "| fd limit", B.raise_fd_limit())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
