"""Counting every TCP connection against `max_connections`, and keeping idle HTTP sockets from hoarding them.

RTMP, the HTTP server port and the API port are counted apart: a crowd of idle
HTTP sockets can never lock publishers, players or probes out. An
HTTP connection must finish its first request's headers within
`HEADER_TIMEOUT_S` (no request at all, or a byte every few seconds, is closed);
after that aiohttp's keep-alive timeout closes it between requests. When a
port's budget is full, a new connection takes the place of the oldest one
still without a whole request, so sockets that say nothing cannot keep a
probe or a player out even for the header timeout.

A port that serves plays has a lane (`http_lane.PlayLane`): its connections' first request line is
read here, and a request the lane wants is played by the lane's own protocol, not by aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

HEADER_TIMEOUT_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 64 * 1024
MAX_LANE_HEAD_BYTES = 8192  # past this without a decision, the head is aiohttp's to judge


class Admission(Protocol):
    def admit(self, conn: object) -> bool: ...

    def release(self, conn: object) -> None: ...


class Lane(Protocol):
    def wants(self, request_line: bytes) -> bool:
        """Whether this first request line may be the lane's: wait for the whole head."""
        ...

    def take(self, head: bytes) -> asyncio.Protocol | None:
        """The protocol that serves this whole head (the connection's from now on), or None for aiohttp."""
        ...


class CountedProtocol(asyncio.Protocol):
    """Wraps another protocol (aiohttp's request handler) so the server can count, refuse and time it out."""

    __slots__ = (
        "_deadline",
        "_head",
        "_pending",
        "admitted",
        "factory",
        "inner",
        "kind",
        "lane",
        "released",
        "server",
        "transport",
        "waiting",
    )

    def __init__(
        self,
        server: Admission,
        factory: Callable[[], asyncio.Protocol],
        kind: str,
        waiting: dict[CountedProtocol, None],
        lane: Lane | None = None,
    ) -> None:
        self.kind = kind  # which port's budget it counts against: "api", "http" or "exporter"
        self.server = server
        self.factory = factory  # aiohttp's request handler, for every connection the lane does not take
        self.lane = lane
        self.inner: asyncio.Protocol | None = None  # with a lane, chosen once the first request line is in
        self._pending = b""  # what arrived before that choice
        self.waiting = waiting  # this port's connections without a whole request yet, oldest first
        self.admitted = False
        self.released = False
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.server.admit(self) and not (self._evict_oldest_silent() and self.server.admit(self)):
            self.transport.abort()
            return
        self.admitted = True
        self.waiting[self] = None
        self._deadline = asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._too_slow)
        if self.lane is None:
            self._serve_with(self.factory(), b"")

    def _serve_with(self, inner: asyncio.Protocol, data: bytes) -> None:
        self.inner = inner
        assert self.transport is not None
        inner.connection_made(self.transport)
        if data:
            inner.data_received(data)

    def _choose(self, data: bytes) -> None:
        lane = self.lane
        assert lane is not None
        pending = self._pending + data
        line_end = pending.find(b"\r\n")
        if line_end >= 0 and lane.wants(pending[:line_end]):
            head_end = pending.find(b"\r\n\r\n", line_end)
            if head_end >= 0:
                taken = lane.take(pending[: head_end + 4])
                if taken is not None:
                    self._pending = b""
                    self._serve_with(taken, b"")  # a play's request has no body: what follows is ignored
                    return
            elif len(pending) < MAX_LANE_HEAD_BYTES:
                self._pending = pending
                return
        elif line_end < 0 and len(pending) < MAX_LANE_HEAD_BYTES:
            self._pending = pending
            return
        self._pending = b""
        self._serve_with(self.factory(), pending)

    def _evict_oldest_silent(self) -> bool:
        while self.waiting:
            victim = next(iter(self.waiting))
            victim._stop_waiting()
            transport = victim.transport
            if transport is not None and not transport.is_closing():
                victim.released = True
                self.server.release(victim)
                transport.abort()
                return True
        return False

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._head = b""

    def _too_slow(self) -> None:
        self._deadline = None
        self.waiting.pop(self, None)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            # Until the first request's headers are complete, a slow or silent client is on a clock.
            self._head = (self._head + data)[-MAX_HEADER_BYTES:]
            if b"\r\n\r\n" in self._head:
                self._stop_waiting()
        inner = self.inner
        if inner is None:
            if self.transport is not None and not self.transport.is_closing():
                self._choose(data)
            return
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            return None  # closed before its first request line: nothing to answer
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self.admitted:
            if not self.released:
                self.released = True
                self.server.release(self)
            if self.inner is not None:
                self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def counted_factory(
    server: Admission, factory: Callable[[], asyncio.Protocol], kind: str, lane: Lane | None = None
) -> Callable[[], asyncio.Protocol]:
    """`lane`: the port's play lane, when it has one."""
    waiting: dict[CountedProtocol, None] = {}
    return lambda: CountedProtocol(server, factory, kind, waiting, lane)
