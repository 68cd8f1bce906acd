"""The asyncio adapter for the RTMP session's client role: edges pulling and pushing.

`open_upstream` connects, handshakes, connects the app, creates a stream and
starts playing or publishing, each step bounded by one timeout. Received media
goes to an `UpstreamHandler` straight from `data_received`, like the server
side, so an edge pull costs no coroutine per message.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tidecast.errors import ProtocolError
from tidecast.net.sockets import media_transport
from tidecast.rtmp import constants as C
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message

# A larger chunk size than the default 128 keeps an upstream publish cheap.
UPSTREAM_CHUNK_SIZE = 60000


class UpstreamError(Exception):
    """The upstream refused or broke the session; the message says how."""


class Redirected(UpstreamError):
    """The upstream answered with an RTMP 302 to another origin."""

    def __init__(self, url: str) -> None:
        super().__init__(f"redirected to {url}")
        self.url = url


class UpstreamHandler(Protocol):
    def on_upstream_media(self, type_id: int, timestamp: int, payload: bytes) -> None: ...

    def on_upstream_metadata(self, values: Any) -> None: ...

    def on_upstream_read(self) -> None:
        """The end of one read from the socket: what arrived together may leave together."""


class _NullHandler:
    def on_upstream_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        pass

    def on_upstream_metadata(self, values: Any) -> None:
        pass

    def on_upstream_read(self) -> None:
        pass


class RtmpUpstream(asyncio.Protocol):
    def __init__(self, handler: UpstreamHandler | None = None) -> None:
        self.session = S.RtmpSession(client=True)
        self.handler: UpstreamHandler = handler or _NullHandler()
        self.transport: asyncio.Transport | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call on every call in CPython 3.11.
        self._loop = loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.redirect: asyncio.Future[str] = loop.create_future()
        self._results: dict[str, asyncio.Future[S.CommandResult]] = {}
        self._statuses: dict[str, asyncio.Future[S.Status]] = {}
        self.last_data = loop.time()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.error: str = ""

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = media_transport(transport)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        try:
            events = self.session.receive_data(data)
        except ProtocolError as exc:
            self._fail(f"malformed data from upstream: {exc}")
            return
        handler = self.handler
        for event in events:
            if type(event) is Message:
                if event.type_id == C.AUDIO or event.type_id == C.VIDEO:
                    self.last_data = self._loop.time()
                    handler.on_upstream_media(event.type_id, event.timestamp, event.payload)
            elif isinstance(event, S.Metadata):
                handler.on_upstream_metadata(event.values)
            elif isinstance(event, S.HandshakeDone):
                if not self.handshake.done():
                    self.handshake.set_result(None)
            elif isinstance(event, S.CommandResult):
                fut = self._results.pop(event.command, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif isinstance(event, S.Status):
                self._on_status(event)
        if events:
            handler.on_upstream_read()
        self._flush()

    def _on_status(self, status: S.Status) -> None:
        ex = status.info.get("ex")
        if status.level == "error" and isinstance(ex, dict):
            url = ex.get("redirect2") or ex.get("redirect")
            if isinstance(url, str) and url and not self.redirect.done():
                self.redirect.set_result(url)
                self._fail_waiters(Redirected(url))
                return
        code = status.code
        for prefix, fut in list(self._statuses.items()):
            if code.startswith(prefix) and not fut.done():
                fut.set_result(status)
                del self._statuses[prefix]
        if status.level == "error":
            self._fail_waiters(UpstreamError(f"{code}: {status.info.get('description', '')}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.error or (f"connection lost: {exc}" if exc else "connection closed by upstream")
        self._fail_waiters(UpstreamError(reason))
        if not self.handshake.done():
            self.handshake.set_exception(UpstreamError(reason))
            self.handshake.exception()
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, reason: str) -> None:
        self.error = reason
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiters(self, exc: Exception) -> None:
        waiters: list[asyncio.Future[Any]] = [*self._results.values(), *self._statuses.values()]
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved here so an unawaited waiter never warns
        self._results.clear()
        self._statuses.clear()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.bytes_sent += sum(len(b) for b in out)
            self.transport.writelines(out)

    # ------------------------------------------------------------ requests

    def _expect_result(self, command: str) -> asyncio.Future[S.CommandResult]:
        fut = asyncio.get_running_loop().create_future()
        self._results[command] = fut
        return fut

    def _expect_status(self, code_prefix: str) -> asyncio.Future[S.Status]:
        fut = asyncio.get_running_loop().create_future()
        self._statuses[code_prefix] = fut
        return fut

    async def connect_app(self, app: str, tc_url: str) -> None:
        await self.handshake
        result = self._expect_result("connect")
        self.session.connect(app, tc_url)
        self._flush()
        answer = await result
        if not answer.ok:
            info = answer.values[1] if len(answer.values) > 1 and isinstance(answer.values[1], dict) else {}
            ex = info.get("ex")
            if isinstance(ex, dict) and isinstance(ex.get("redirect"), str):
                raise Redirected(str(ex.get("redirect2") or ex["redirect"]))
            raise UpstreamError(f"connect to app {app!r} rejected: {info.get('description', answer.values)}")
        created = self._expect_result("createStream")
        self.session.set_chunk_size(UPSTREAM_CHUNK_SIZE)
        self.session.create_stream()
        self._flush()
        if not (await created).ok:
            raise UpstreamError("createStream rejected")

    async def play(self, stream: str) -> None:
        started = self._expect_status("NetStream.Play.Start")
        self.session.play(stream)
        self._flush()
        await started

    async def publish(self, stream: str) -> None:
        started = self._expect_status("NetStream.Publish.Start")
        self.session.publish(stream)
        self._flush()
        await started

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.session.send_media(type_id, timestamp, payload)
        self.bytes_sent += len(data)
        transport.write(data)

    def send_metadata(self, values: Any) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.session.send_metadata(values)
        self.bytes_sent += len(data)
        transport.write(data)

    @property
    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def open_connection(
    host: str, port: int, app: str, tc_url: str, timeout: float, source_host: str | None = None
) -> RtmpUpstream:
    """Connect and `connect` the app only: an edge's token traverse asks the origin this much."""
    loop = asyncio.get_running_loop()
    protocol = RtmpUpstream()

    async def establish() -> None:
        local = (source_host, 0) if source_host else None
        await loop.create_connection(lambda: protocol, host, port, local_addr=local)
        await protocol.connect_app(app, tc_url)

    try:
        async with asyncio.timeout(timeout):
            await establish()
    except BaseException:
        protocol.close()
        raise
    return protocol


async def open_upstream(
    host: str,
    port: int,
    app: str,
    tc_url: str,
    stream: str,
    mode: str,
    handler: UpstreamHandler | None,
    timeout: float,
    source_host: str | None = None,
) -> RtmpUpstream:
    """Connect and start playing (`mode="play"`) or publishing a stream upstream.

    Raises `Redirected` for an RTMP 302, `UpstreamError` for a refusal, and
    `OSError`/`TimeoutError` for network failures; never leaves a socket open.
    """
    loop = asyncio.get_running_loop()
    protocol = RtmpUpstream(handler)

    async def establish() -> None:
        # Names resolve here, on every attempt: Kubernetes DNS names of origins
        # may appear only after the edge started.
        local = (source_host, 0) if source_host else None
        await loop.create_connection(lambda: protocol, host, port, local_addr=local)
        await protocol.connect_app(app, tc_url)
        if mode == "play":
            await protocol.play(stream)
        else:
            await protocol.publish(stream)

    try:
        async with asyncio.timeout(timeout):
            await establish()
    except BaseException:
        protocol.close()
        raise
    return protocol
