"""A small blocking RTMP client for tests, built on tidecast's own sans-I/O session.

Real sockets, real server: used where ffmpeg cannot do what a test needs
(a player that stops reading, exact timestamps of arrival).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message


@dataclass
class Received:
    media: list[tuple[int, int, int, float]] = field(default_factory=list)  # type, ts, size, arrival
    statuses: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[Any] = field(default_factory=list)

    def media_span_ms(self) -> int:
        ts = [m[1] for m in self.media if m[0] in (8, 9)]
        return max(ts) - min(ts) if ts else 0

    def first_video(self) -> tuple[int, int, int, float] | None:
        return next((m for m in self.media if m[0] == 9), None)


class RtmpTestClient:
    def __init__(self, host: str, port: int, app: str = "live", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.session = S.RtmpSession(client=True)
        self.received = Received()
        self.video_payloads: list[bytes] = []
        self._flush()
        self._pump_until(lambda: self.session.handshake_done, timeout)
        self.session.connect(app, f"rtmp://{host}:{port}/{app}")
        self._flush()
        self.connect_result = self._wait_result("connect", timeout)

    def _flush(self) -> None:
        for data in self.session.data_to_send():
            self.sock.sendall(data)

    def _handle(self, events: list[Any]) -> list[Any]:
        other = []
        now = time.monotonic()
        for ev in events:
            if isinstance(ev, Message):
                self.received.media.append((ev.type_id, ev.timestamp, len(ev.payload), now))
                if ev.type_id == 9 and len(self.video_payloads) < 64:
                    self.video_payloads.append(ev.payload)
            elif isinstance(ev, S.Status):
                self.received.statuses.append(ev.info)
                other.append(ev)
            elif isinstance(ev, S.Metadata):
                self.received.metadata.append(ev.values)
            else:
                other.append(ev)
        return other

    def _pump(self, timeout: float) -> list[Any]:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(256 * 1024)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("server closed the connection")
        events = self.session.receive_data(data)
        self._flush()
        return self._handle(events)

    def _pump_until(self, cond: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("RTMP test client: condition not met")
            self._pump(0.5)

    def _wait_result(self, command: str, timeout: float) -> S.CommandResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self._pump(0.5):
                if isinstance(ev, S.CommandResult) and ev.command == command:
                    return ev
        raise TimeoutError(f"no answer to {command}")

    def wait_status(self, code: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = [s for s in self.received.statuses if s.get("code") == code]
        while not seen and time.monotonic() < deadline:
            for ev in self._pump(0.5):
                if isinstance(ev, S.Status) and ev.code == code:
                    seen.append(ev.info)
        if not seen:
            raise TimeoutError(f"no onStatus {code}; got {[s.get('code') for s in self.received.statuses]}")
        return seen[0]

    def play(self, stream: str) -> None:
        self.session.create_stream()
        self._flush()
        self._wait_result("createStream", 10.0)
        self.session.play(stream)
        self._flush()

    def read_for(self, seconds: float) -> Received:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.received

    def close(self) -> None:
        self.sock.close()


def stalled_player(host: str, port: int, stream: str, app: str = "live", rcvbuf: int = 4096) -> socket.socket:
    """A player that plays, then never reads again: its socket fills up at once."""
    client = RtmpTestClient(host, port, app)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.play(stream)
    return client.sock
