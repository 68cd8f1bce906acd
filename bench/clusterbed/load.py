"""The audience: light RTMP, HTTP-FLV and HLS players through the Service, in a process of their own.

Steady players play for the whole run and reconnect at once when cut (as a
player app retrying would); churn players keep arriving at a fixed rate, play
until the first media arrives plus a few seconds, and leave, so every moment
of an operation has new plays. Every attempt, cut, gap and HLS error is an
event stamped with time.monotonic() (one clock for every process on the
machine), so the bed can cut the run into operation windows afterwards.

RTMP and HTTP-FLV players are bench/benchlib.py's: full set-up parsing, then
byte counting from one shared buffer; here they also stamp each arrival so a
cut player's reconnect gap (last data on the old connection to first data on
the new one) and a connected player's media gaps (no data for >= GAP_S) are
known. tidecast writes a playing stream at least every ~350 ms (mw_latency),
so a gap of 1 s or more is a stall the viewer would see. HLS players poll the
playlist every half target duration, fetch segments in order through one
keep-alive connection with the balancer's cookie, and model a player buffer:
playback starts at the first segment and stalls when the fetched media runs
out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402

GAP_S = 0.8
SETUP_TIMEOUT_S = 5.0
FIRST_MEDIA_TIMEOUT_S = 5.0

Events = list[dict[str, Any]]


class _Tracked:
    """Mixin: arrival stamps on top of a benchlib player."""

    first_rx: float | None
    last_rx: float | None
    gaps: list[tuple[float, float]]
    got_media: asyncio.Event
    lost: asyncio.Event

    def _init_tracking(self) -> None:
        self.first_rx = None
        self.last_rx = None
        self.gaps = []
        self.got_media = asyncio.Event()
        self.lost = asyncio.Event()

    def _mark(self, now: float) -> None:
        last = self.last_rx
        if last is not None and now - last >= GAP_S:
            self.gaps.append((last, now))
        if self.first_rx is None:
            self.first_rx = now
            self.got_media.set()
        self.last_rx = now


class RtmpPlayer(benchlib.RtmpPlayer, _Tracked):
    def __init__(self, target: benchlib.Target) -> None:
        super().__init__(target, probe=False)
        self._init_tracking()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    def count(self, nbytes: int) -> None:
        # Every read a counting player takes, whether through its transport or the discarding reader.
        self._mark(time.monotonic())
        super().count(nbytes)

    def feed(self, data: bytes) -> None:
        was = self.ready.done()
        super().feed(data)
        # A set-up read this large carried media after NetStream.Play.Start (the GOP cache).
        if not was and self.ready.done() and not self.stats.error and len(data) >= 4096:
            self._mark(time.monotonic())


class FlvPlayer(benchlib.FlvPlayer, _Tracked):
    def __init__(self, target: benchlib.Target) -> None:
        super().__init__(target, probe=False)
        self._init_tracking()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    def count(self, nbytes: int) -> None:
        # Every read a counting player takes, whether through its transport or the discarding reader.
        self._mark(time.monotonic())
        super().count(nbytes)

    def feed(self, data: bytes) -> None:
        was = self.ready.done()
        super().feed(data)
        if not was and self.ready.done() and not self.stats.error and len(data) >= 4096:
            self._mark(time.monotonic())


async def open_tracked(kind: str, target: benchlib.Target) -> RtmpPlayer | FlvPlayer | str:
    """A playing player that has received media, or the reason it is not."""
    loop = asyncio.get_running_loop()
    port = target.rtmp_port if kind == "rtmp" else target.http_port
    assert port is not None
    factory: Callable[[], RtmpPlayer | FlvPlayer] = (
        (lambda: RtmpPlayer(target)) if kind == "rtmp" else (lambda: FlvPlayer(target))
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            _, player = await loop.create_connection(factory, target.host, port)
    except (TimeoutError, OSError) as exc:
        return f"connect: {type(exc).__name__}: {exc}"
    try:
        async with asyncio.timeout(max(0.1, SETUP_TIMEOUT_S - (time.monotonic() - started))):
            await asyncio.shield(player.ready)
    except TimeoutError:
        player.fail(f"set-up timed out at {player.stats.stage}")
    if player.stats.error:
        player.close()
        return player.stats.error
    try:
        async with asyncio.timeout(FIRST_MEDIA_TIMEOUT_S):
            await player.got_media.wait()
    except TimeoutError:
        player.close()
        return f"no media {FIRST_MEDIA_TIMEOUT_S:.0f}s after the play started"
    if player.stats.error:
        return player.stats.error
    return player


class Audience:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.events: Events = []
        self.stopping = asyncio.Event()
        self.active: set[RtmpPlayer | FlvPlayer] = set()
        self.next_id = 0

    def ev(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": round(time.monotonic(), 4), "ev": kind, **fields})

    def target(self, stream: str) -> benchlib.Target:
        a = self.args
        return benchlib.Target(a.host, a.rtmp_port, a.http_port, "live", stream)

    async def _sleep(self, seconds: float) -> bool:
        """False when the run is stopping."""
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return True
        return False

    # ------------------------------------------------------------ RTMP / HTTP-FLV

    async def steady(self, sid: int, kind: str, stream: str) -> None:
        last_rx: float | None = None
        failures = 0
        while not self.stopping.is_set():
            t0 = time.monotonic()
            result = await open_tracked(kind, self.target(stream))
            if isinstance(result, str):
                failures += 1
                self.ev(
                    "play_fail", sid=sid, proto=kind, stream=stream, at=t0, error=result, reconnect=last_rx is not None
                )
                # Retry at once the first time, then back off a little, as players do.
                if not await self._sleep(min(1.0, 0.2 * failures) if failures > 1 else 0.0):
                    return
                continue
            failures = 0
            player = result
            assert player.first_rx is not None
            self.ev(
                "play_ok",
                sid=sid,
                proto=kind,
                stream=stream,
                at=t0,
                first=player.first_rx,
                reconnect=last_rx is not None,
                gap=round(player.first_rx - last_rx, 4) if last_rx is not None else None,
            )
            self.active.add(player)
            await player.lost.wait()
            self.active.discard(player)
            for start, end in player.gaps:
                self.ev("gap", sid=sid, proto=kind, stream=stream, start=start, end=end)
            if self.stopping.is_set():
                player.close()
                return
            last_rx = player.last_rx or player.first_rx
            self.ev("cut", sid=sid, proto=kind, stream=stream, last=last_rx, error=player.stats.error)

    async def churn_one(self, sid: int, kind: str, stream: str) -> None:
        t0 = time.monotonic()
        if kind == "hls":
            error = await self.hls_once(stream)
            if error:
                self.ev("play_fail", sid=sid, proto=kind, stream=stream, at=t0, error=error, churn=True)
            else:
                self.ev("play_ok", sid=sid, proto=kind, stream=stream, at=t0, first=time.monotonic(), churn=True)
            return
        result = await open_tracked(kind, self.target(stream))
        if isinstance(result, str):
            self.ev("play_fail", sid=sid, proto=kind, stream=stream, at=t0, error=result, churn=True)
            return
        self.ev("play_ok", sid=sid, proto=kind, stream=stream, at=t0, first=result.first_rx, churn=True)
        await self._sleep(self.args.churn_hold)
        result.close()

    # ------------------------------------------------------------ HLS

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # the Service is an IP address
            timeout=aiohttp.ClientTimeout(total=5),
            connector=aiohttp.TCPConnector(limit=1),
        )

    @staticmethod
    def parse_playlist(text: str) -> tuple[float, list[tuple[float, str]]]:
        target = 2.0
        segments: list[tuple[float, str]] = []
        duration = 0.0
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#EXT-X-TARGETDURATION:"):
                target = float(line.split(":", 1)[1])
            elif line.startswith("#EXTINF:"):
                duration = float(line.split(":", 1)[1].split(",")[0])
            elif line and not line.startswith("#"):
                segments.append((duration, line))
        return target, segments

    async def hls_once(self, stream: str) -> str:
        url = f"http://{self.args.host}:{self.args.http_port}/live/{stream}.m3u8"
        try:
            async with self._session() as http:
                async with http.get(url) as r:
                    body = await r.text()
                    if r.status != 200:
                        return f"playlist: HTTP {r.status}"
                _, segs = self.parse_playlist(body)
                if not segs:
                    return "playlist: no segments"
                async with http.get(urljoin(url, segs[-1][1])) as r:
                    await r.read()
                    if r.status != 200:
                        return f"segment: HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""

    async def hls_steady(self, sid: int, stream: str) -> None:
        url = f"http://{self.args.host}:{self.args.http_port}/live/{stream}.m3u8"
        async with self._session() as http:
            last_uri: str | None = None
            buffered = 0.0
            play_start: float | None = None
            stall_total = 0.0
            stalled_since: float | None = None
            t0 = time.monotonic()

            def advance(now: float) -> None:
                nonlocal stalled_since
                if play_start is None or stalled_since is not None:
                    return
                if now - play_start - stall_total > buffered:
                    stalled_since = play_start + stall_total + buffered

            async def fetch(u: str, what: str) -> tuple[int, bytes] | None:
                try:
                    async with http.get(u) as r:
                        body = await r.read()
                        if r.status != 200:
                            self.ev("hls_error", sid=sid, stream=stream, what=what, error=f"HTTP {r.status}")
                            return None
                        return r.status, body
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.ev("hls_error", sid=sid, stream=stream, what=what, error=f"{type(exc).__name__}: {exc}")
                    return None

            while not self.stopping.is_set():
                got = await fetch(url, "playlist")
                target = 2.0
                failed = False
                todo: list[tuple[float, str]] = []
                if got is not None:
                    target, segs = self.parse_playlist(got[1].decode(errors="replace"))
                    uris = [u for _, u in segs]
                    if last_uri in uris:
                        todo = segs[uris.index(last_uri) + 1 :]
                    else:
                        if last_uri is not None:
                            # Another pod (its own segment names): carry on from its newest segment.
                            self.ev("hls_switch", sid=sid, stream=stream)
                        todo = segs[-3:] if last_uri is None else segs[-1:]
                    for duration, uri in todo:
                        if await fetch(urljoin(url, uri), "segment") is None:
                            failed = True  # reload the playlist at once, as players do after a failed fragment
                            break
                        now = time.monotonic()
                        advance(now)
                        last_uri = uri
                        buffered += duration
                        # RFC 8216 6.3.3: start no closer than three target durations to the live end.
                        if play_start is None and buffered >= 3 * target - 0.5:
                            play_start = now
                            self.ev("play_ok", sid=sid, proto="hls", stream=stream, at=t0, first=now, reconnect=False)
                        # A stalled player resumes with a segment's worth ahead, not on the first byte,
                        # or it would stall again at every segment boundary.
                        if (
                            stalled_since is not None
                            and play_start is not None
                            and buffered - (stalled_since - play_start - stall_total) >= target
                        ):
                            self.ev("hls_stall", sid=sid, stream=stream, start=stalled_since, end=now)
                            stall_total += now - stalled_since
                            stalled_since = None
                advance(time.monotonic())
                # RFC 8216 6.3.4: reload after a target duration when the playlist changed, half that if not.
                if got is None:
                    wait = 1.0
                elif failed:
                    wait = 0.0
                else:
                    wait = target if todo else target / 2
                if not await self._sleep(wait):
                    break

    async def watch_lag(self) -> None:
        """This process's own lateness, stamped: a late loop would inflate every gap it measures."""
        while not self.stopping.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.05)
            late = time.monotonic() - t - 0.05
            if late >= 0.1:
                self.ev("load_lag", s=round(late, 3))

    # ------------------------------------------------------------ run

    async def run(self) -> None:
        lag_task = asyncio.create_task(self.watch_lag())
        a = self.args
        streams = [f"s{i}" for i in range(a.streams)]
        mix = [("rtmp", a.rtmp), ("flv", a.flv), ("hls", a.hls)]
        tasks: list[asyncio.Task[None]] = []
        n = sum(c for _, c in mix)
        order = [kind for kind, count in mix for _ in range(count)]
        random.Random(7).shuffle(order)
        started = time.monotonic()
        self.ev("ramp_start")
        for k, kind in enumerate(order):
            due = started + k / a.rate
            if not await self._sleep(max(0.0, due - time.monotonic())):
                break
            sid = self.next_id
            self.next_id += 1
            stream = streams[sid % len(streams)]
            coro: Coroutine[Any, Any, None] = (
                self.hls_steady(sid, stream) if kind == "hls" else self.steady(sid, kind, stream)
            )
            tasks.append(asyncio.create_task(coro))
        self.ev("ramp_done", players=n)
        print(json.dumps({"ramp_done": n, "t": time.monotonic()}), flush=True)
        churn_tasks: set[asyncio.Task[None]] = set()
        kinds = ["rtmp", "flv", "hls"]
        k = 0
        while a.churn > 0 and not self.stopping.is_set():
            sid = self.next_id
            self.next_id += 1
            t = asyncio.create_task(self.churn_one(sid, kinds[k % 3], streams[k % len(streams)]))
            churn_tasks.add(t)
            t.add_done_callback(churn_tasks.discard)
            k += 1
            if not await self._sleep(1.0 / a.churn):
                break
        await self.stopping.wait()
        for player in list(self.active):
            player.close()
        await asyncio.gather(*tasks, *churn_tasks, lag_task, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clusterbed load", description="players through the Service until SIGTERM")
    p.add_argument("--host", required=True)
    p.add_argument("--rtmp-port", type=int, default=1935)
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--rtmp", type=int, default=10)
    p.add_argument("--flv", type=int, default=10)
    p.add_argument("--hls", type=int, default=10)
    p.add_argument("--rate", type=float, default=200.0, help="steady players started per second")
    p.add_argument("--churn", type=float, default=5.0, help="new short plays per second, all the run")
    p.add_argument("--churn-hold", type=float, default=2.0, help="seconds a churn player stays")
    p.add_argument("--max-seconds", type=float, default=900.0, help="hard bound on the run")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    benchlib.RCVLOWAT = 0  # every arrival is stamped: gaps are measured to the write
    benchlib.DISCARD = False  # reads through the transport: the bed measures behaviour, not its own CPU
    benchlib.raise_fd_limit()
    benchlib.use_uvloop()

    async def amain() -> None:
        audience = Audience(args)
        loop = asyncio.get_running_loop()
        for signo in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signo, audience.stopping.set)
        loop.call_later(args.max_seconds, audience.stopping.set)
        lag = benchlib.LoopLag()
        lag.start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            await audience.run()
        finally:
            lag.stop()
            lags = lag.take()
            own = {
                "cpu_pct": round(100 * (time.process_time() - cpu0) / max(1e-6, time.monotonic() - wall0), 1),
                "loop_lag_p99_ms": benchlib.percentile([x * 1000 for x in lags], 99),
                "loop_lag_max_ms": round(max(lags) * 1000, 1) if lags else None,
            }
            Path(args.out).write_text(json.dumps({"events": audience.events, "load": own}))

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
