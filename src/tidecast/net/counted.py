"""Counting every TCP connection against `max_connections`, and keeping idle HTTP sockets from hoarding them.

RTMP, the HTTP server port and the API port are counted apart: a crowd of idle
HTTP sockets can never lock publishers, players or probes out. An
HTTP connection must finish its first request's headers within
`HEADER_TIMEOUT_S` (no request at all, or a byte every few seconds, is closed);
after that aiohttp's keep-alive timeout closes it between requests. When a
port's budget is full, a new connection takes the place of the oldest one
still without a whole request, so sockets that say nothing cannot keep a
probe or a player out even for the header timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

HEADER_TIMEOUT_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 64 * 1024


class Admission(Protocol):
    def admit(self, conn: object) -> bool: ...

    def release(self, conn: object) -> None: ...


class CountedProtocol(asyncio.Protocol):
    """Wraps another protocol (aiohttp's request handler) so the server can count, refuse and time it out."""

    __slots__ = ("_deadline", "_head", "admitted", "inner", "kind", "released", "server", "transport", "waiting")

    def __init__(
        self, server: Admission, inner: asyncio.Protocol, kind: str, waiting: dict[CountedProtocol, None]
    ) -> None:
        self.kind = kind  # which port's budget it counts against: "api", "http" or "exporter"
        self.server = server
        self.inner = inner
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
        self.inner.connection_made(transport)

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
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self.admitted:
            if not self.released:
                self.released = True
                self.server.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def counted_factory(
    server: Admission, factory: Callable[[], asyncio.Protocol], kind: str
) -> Callable[[], asyncio.Protocol]:
    waiting: dict[CountedProtocol, None] = {}
    return lambda: CountedProtocol(server, factory(), kind, waiting)
