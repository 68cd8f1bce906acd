"""Low-latency HLS under load: N clients doing blocking playlist reloads against one tidecast on one core.

    python bench/llhls.py [--clients 100 500 1000] [--seconds 15] [--part 0.2] [--no-parts] [--out x.json]

tidecast (pinned to core 0) serves `hls_variant lowlatency` of one stream
that ffmpeg publishes in real time (a ~1 Mbps H.264+AAC clip, looped). Each
client (asyncio + aiohttp, in this process, pinned to core 1) behaves like
an LL-HLS player: a blocking reload `?_HLS_msn=M&_HLS_part=P` for the part
after the newest it has, then a GET of that part (unless --no-parts), and
again. Per step of N it reports the server's CPU (100% = one core), requests
per second, and the age of each part when a client got the playlist naming
it: the client's wall clock minus the part's end on the server's media clock
(EXT-X-PROGRAM-DATE-TIME + the parts before it), up to a constant offset
(the server's anchor is the arrival of the first message: ffmpeg's start-up
burst makes it negative), so compare steps; and the fan-out delay: how long
after the first client each client got the same playlist update.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    CACHE,
    CpuMeter,
    free_port,
    machine_facts,
    make_clip,
    percentile,
    pin_load,
    raise_fd_limit,
    start_tidecast,
    tidecast_config,
    use_uvloop,
    write_json,
)

_PDT = re.compile(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)")
_PART = re.compile(r'#EXT-X-PART:DURATION=([\d.]+),URI="([^"]+)"')
_SEQ = re.compile(r"#EXT-X-MEDIA-SEQUENCE:(\d+)")


def newest(text: str) -> tuple[int, int, float, str | None]:
    """(open msn, its parts so far, the newest part's end as wall clock, its URI) of an LL playlist."""
    seq = _SEQ.search(text)
    msn = (int(seq.group(1)) if seq else 0) + text.count("#EXTINF")
    tail = text.rsplit("#EXTINF", 1)[-1]
    done = tail.count("#EXT-X-PART:")
    dates = list(_PDT.finditer(text))
    if not dates:
        return msn, done, 0.0, None
    start = datetime.datetime.fromisoformat(dates[-1].group(1).replace("Z", "+00:00")).timestamp()
    parts = _PART.findall(text[dates[-1].end() :])
    end = start + sum(float(d) for d, _ in parts)
    return msn, done, end, parts[-1][1] if parts else None


class Stats:
    def __init__(self) -> None:
        self.ages: list[float] = []
        self.arrivals: dict[tuple[int, int], list[float]] = {}
        self.requests = 0
        self.errors = 0
        self.measuring = False


async def client(session: aiohttp.ClientSession, base: str, playlist: str, stats: Stats, fetch_parts: bool) -> None:
    awaited: tuple[int, int] | None = None
    while True:
        url = playlist if awaited is None else f"{playlist}?_HLS_msn={awaited[0]}&_HLS_part={awaited[1]}"
        try:
            async with session.get(url) as resp:
                text = await resp.text()
                status = resp.status
            now = time.time()
            stats.requests += 1
            if status != 200:
                stats.errors += 1
                awaited = None
                await asyncio.sleep(0.2)
                continue
            msn, done, end, uri = newest(text)
            if awaited is not None and stats.measuring and end:
                stats.ages.append(now - end)
                stats.arrivals.setdefault((msn, done), []).append(now)
            if fetch_parts and uri is not None:
                async with session.get(f"{base}/{uri}") as resp:
                    await resp.read()
                    stats.requests += 1
                    if resp.status != 200:
                        stats.errors += 1
            awaited = (msn, done)
        except (TimeoutError, aiohttp.ClientError):
            stats.errors += 1
            awaited = None
            await asyncio.sleep(0.2)


async def step(base: str, playlist: str, n: int, seconds: float, server_pid: int, fetch_parts: bool) -> dict[str, Any]:
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(client(session, base, playlist, stats, fetch_parts)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # a ramp, not a thundering herd of connects
        await asyncio.sleep(3.0)  # settle
        server = CpuMeter(server_pid, tree=False)
        own0 = time.process_time()
        t0 = time.monotonic()
        stats.measuring = True
        requests0, errors0 = stats.requests, stats.errors
        await asyncio.sleep(seconds)
        stats.measuring = False
        elapsed = time.monotonic() - t0
        cpu = server.percent()
        own = 100.0 * (time.process_time() - own0) / elapsed
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ages = stats.ages
    # How long after the first client each client got the same playlist update: the fan-out's own delay.
    spread = [t - min(times) for times in stats.arrivals.values() for t in times]
    return {
        "clients": n,
        "server_cpu_percent": round(cpu, 1),
        "load_cpu_percent": round(own, 1),
        "requests_per_s": round((stats.requests - requests0) / elapsed),
        "errors": stats.errors - errors0,
        "part_age_s": {
            "p50": percentile(ages, 50),
            "p95": percentile(ages, 95),
            "p99": percentile(ages, 99),
            "max": max(ages) if ages else None,
            "samples": len(ages),
        },
        "fanout_delay_s": {"p50": percentile(spread, 50), "p95": percentile(spread, 95), "max": max(spread, default=0)},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rtmp, api, http = free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tidecast-llhls-"))
    hls = (
        f"hls {{ enabled on; hls_variant lowlatency; hls_part {args.part}; hls_fragment 1; hls_window 6; "
        f"hls_path {workdir / 'hls'}; }}\n"
    )
    server = start_tidecast(tidecast_config(rtmp, api, http, hls), workdir, rtmp, core=0)
    clip = make_clip(CACHE / "clip-30s-900k.flv")
    publisher = subprocess.Popen(
        ["taskset", "-c", "1", "ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
         "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/bench"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{http}/live"
    playlist = f"{base}/bench.m3u8"
    results = []
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                async with session.get(playlist) as resp:
                    if resp.status == 200 and (await resp.text()).count("#EXTINF") >= 2:
                        break
                await asyncio.sleep(0.2)
            else:
                raise SystemExit(f"no playlist at {playlist}:\n{server.log_tail()}")
        assert server.pid is not None
        for n in args.clients:
            result = await step(base, playlist, n, args.seconds, server.pid, not args.no_parts)
            age, fan = result["part_age_s"], result["fanout_delay_s"]
            print(
                f"N={n:5d}: server CPU {result['server_cpu_percent']:5.1f}%  "
                f"load CPU {result['load_cpu_percent']:5.1f}%  {result['requests_per_s']:6d} req/s  "
                f"errors {result['errors']}  part age p50 {_ms(age['p50'])} p95 {_ms(age['p95'])} "
                f"max {_ms(age['max'])}  fan-out delay p50 {_ms(fan['p50'])} p95 {_ms(fan['p95'])} "
                f"max {_ms(fan['max'])}",
                flush=True,
            )
            results.append(result)
    finally:
        publisher.terminate()
        publisher.wait(10)
        server.stop()
    return {"machine": machine_facts(), "part": args.part, "fetch_parts": not args.no_parts, "steps": results}


def _ms(value: float | None) -> str:
    return "   -  " if value is None else f"{value * 1000:5.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per step")
    parser.add_argument("--part", type=float, default=0.2, help="hls_part")
    parser.add_argument("--no-parts", action="store_true", help="playlist reloads only, no part downloads")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    raise_fd_limit()
    print(use_uvloop(), "-", pin_load(1), flush=True)
    doc = asyncio.run(run(args))
    if args.out:
        write_json(args.out, doc)


if __name__ == "__main__":
    main()
