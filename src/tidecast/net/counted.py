"""Counting every TCP connection against `max_connections`, whatever protocol it speaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast


class Admission(Protocol):
    def admit(self, conn: object) -> bool: ...

    def release(self, conn: object) -> None: ...


class CountedProtocol(asyncio.Protocol):
    """Wraps another protocol (aiohttp's request handler) so the server can count and refuse it."""

    __slots__ = ("admitted", "inner", "server")

    def __init__(self, server: Admission, inner: asyncio.Protocol) -> None:
        self.server = server
        self.inner = inner
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.server.admit(self):
            cast(asyncio.Transport, transport).abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.server.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def counted_factory(server: Admission, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
    return lambda: CountedProtocol(server, factory())
