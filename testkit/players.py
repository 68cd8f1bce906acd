"""Light background players for tests that need many viewers: RTMP and HTTP-FLV, one thread each."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from testkit.helpers import TidecastProcess
from testkit.rtmpclient import RtmpTestClient


class RtmpPlayer:
    """Plays a stream and keeps reading in a thread; records (type, ts, size, arrival) per message."""

    def __init__(self, host: str, port: int, stream: str, app: str = "live") -> None:
        self.client = RtmpTestClient(host, port, app)
        self.client.play(stream)
        self.started = time.monotonic()
        self.stop_flag = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @classmethod
    def on(cls, srv: TidecastProcess, stream: str) -> RtmpPlayer:
        return cls(srv.host, srv.rtmp_port, stream)

    def _run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                self.client.read_for(0.2)
        except Exception as exc:
            self.error = exc

    def timestamps(self) -> list[tuple[int, float]]:
        return [(m[1], m[3]) for m in list(self.client.received.media) if m[0] in (8, 9)]

    @property
    def statuses(self) -> list[str]:
        return [str(s.get("code")) for s in list(self.client.received.statuses)]

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        self.client.close()


class FlvPlayer:
    """Reads an HTTP-FLV stream in a thread and parses tag headers as they arrive."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop_flag = threading.Event()
        self.error: Exception | None = None
        self.status = 0
        self.redirected_to = ""
        self.tags: list[tuple[int, int, float]] = []  # type, timestamp, arrival
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        url = self.url
        conn: http.client.HTTPConnection | None = None
        try:
            for _ in range(4):  # follows up to 3 redirects, as a player would
                parts = urlsplit(url)
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
                resp = conn.getresponse()
                self.status = resp.status
                if resp.status in (301, 302, 307) and resp.getheader("Location"):
                    url = str(resp.getheader("Location"))
                    self.redirected_to = url
                    conn.close()
                    continue
                break
            if self.status != 200:
                return
            buf = b""
            header_done = False
            while not self.stop_flag.is_set():
                data = resp.read1(65536)
                if not data:
                    return
                buf += data
                if not header_done:
                    if len(buf) < 13:
                        continue
                    buf = buf[13:]
                    header_done = True
                now = time.monotonic()
                while len(buf) >= 11:
                    size = int.from_bytes(buf[1:4], "big")
                    if len(buf) < 11 + size + 4:
                        break
                    ts = int.from_bytes(buf[4:7], "big") | (buf[7] << 24)
                    self.tags.append((buf[0], ts, now))
                    buf = buf[11 + size + 4 :]
        except Exception as exc:
            self.error = exc
        finally:
            if conn is not None:
                conn.close()

    def timestamps(self) -> list[tuple[int, float]]:
        return [(t[1], t[2]) for t in list(self.tags) if t[0] in (8, 9)]

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)


Player = RtmpPlayer | FlvPlayer


def media_seconds_between(player: Player, start: float, end: float) -> float:
    """Seconds of media (by timestamps) that arrived in the wall-clock window [start, end]."""
    ts = [t for t, arrival in player.timestamps() if start <= arrival <= end]
    return (max(ts) - min(ts)) / 1000.0 if len(ts) > 1 else 0.0


def keeps_up(player: Player, start: float, end: float, ratio: float = 0.9) -> bool:
    return media_seconds_between(player, start, end) >= ratio * (end - start)


def first_media_after(player: Player, since: float) -> float | None:
    arrivals = [arrival for _, arrival in player.timestamps() if arrival >= since]
    return min(arrivals) if arrivals else None


def serving_while(srv: TidecastProcess, stream: str, seconds: float) -> tuple[list[float], bool]:
    """For `seconds`: an RTMP player of `stream`, and the API asked every 0.25 s (each time the stream must
    still be published). Returns how long each API answer took, and whether the player kept up (from 1 s
    in): what a server whose disk is blocked must go on doing."""
    player = RtmpPlayer.on(srv, stream)
    try:
        start = time.monotonic()
        api_waits = []
        while time.monotonic() - start < seconds:
            asked = time.monotonic()
            streams = srv.api_json("/api/v1/streams")["streams"]
            api_waits.append(time.monotonic() - asked)
            assert any(s["name"] == stream and s["publish"]["active"] for s in streams)
            time.sleep(0.25)
        return api_waits, keeps_up(player, start + 1.0, time.monotonic())
    finally:
        player.close()


def read_fifo(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A thread that opens the named pipe for reading (which unblocks a writer's open) and reads it to its
    end; the list gets what it read."""
    got: list[bytes] = []

    def drain() -> None:
        with open(fifo, "rb") as reader:
            got.append(reader.read())

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread, got
