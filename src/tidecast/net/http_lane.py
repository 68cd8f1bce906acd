"""HTTP-FLV plays answered below aiohttp: the play lane.

An HTTP-FLV player holds its connection for the whole show. Served through aiohttp, each one kept a
request handler, its parser, a request, a response, a writer and a chain of suspended handler and
middleware coroutines alive for hours: about 60 objects the garbage collector walks on every full
collection, and 17 KB of memory per player. With 20,000 players that was a 600 ms pause.

So the HTTP port's connections first come here (`CountedProtocol` asks the lane). A connection whose
first request is a plain `GET /app/stream.flv HTTP/1.1` is played by a `LanePlay`, a protocol that
after admission keeps only its player and subscription; the fan-out writes to its transport as
before. Everything else, and anything this strict parser does not like (HTTP/1.0, a body, an
absolute URL, odd bytes, an oversized head), goes to aiohttp untouched, which answers it as it always
did. Admission, answers and logging are `http_play`'s, shared with the aiohttp path.
"""

from __future__ import annotations

import asyncio
import logging
import re
from email.utils import formatdate
from http import HTTPStatus

from yarl import URL

from tidecast import __version__
from tidecast.live.hub import Hub, Subscription
from tidecast.live.names import sanitize
from tidecast.log import RateLimitedLogger, connection_id
from tidecast.net.flv import HTTP_FLV
from tidecast.net.http_play import (
    CORS,
    Answer,
    HttpPlayFormat,
    admit,
    new_player,
    preamble_for,
    serving_refusal,
    split_stream_path,
    start_play,
)
from tidecast.net.sockets import close_transport, set_nodelay

log = logging.getLogger("tidecast.http")

MAX_HEAD_BYTES = 8192  # a bigger head is aiohttp's to judge (and refuse)
_SUFFIX = b" HTTP/1.1"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"/[!-~]*")  # visible ASCII only: anything else is aiohttp's to judge
_ONCE = ("host", "content-length", "transfer-encoding")  # aiohttp refuses a request with two of these
_CORS_LINES = "".join(f"{name}: {value}\r\n" for name, value in CORS.items())
_END_OF_BODY = b"0\r\n\r\n"
# Paths whose aiohttp routes (and the API's auth) come before the catch-all that plays .flv.
_ROUTED = (b"/api/", b"/console", b"/metrics")
_errors = RateLimitedLogger(log)


class Head:
    """The parts of a request head a play reads."""

    __slots__ = ("host", "path", "query", "query_vhost", "referer", "target")

    def __init__(self, target: str, host: str, referer: str) -> None:
        path, _, query = target.partition("#")[0].partition("?")
        # As aiohttp builds its request URL, so that paths and queries mean the same on both paths.
        url = URL.build(path=path, query_string=query, encoded=True)
        self.target = target
        self.host = host
        self.referer = referer
        self.path = url.path
        self.query = url.query_string
        self.query_vhost = url.query.get("vhost", "")


def parse_head(head: bytes) -> Head | None:
    """A complete `GET ... HTTP/1.1` head with no body, or None for anything else."""
    lines = head.split(b"\r\n")
    if len(lines) < 3 or lines[-1] or lines[-2]:
        return None
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.partition(b" ")
    if method != b"GET" or version != b"HTTP/1.1" or not _TARGET.fullmatch(target):
        return None
    fields: dict[str, str] = {}
    for line in lines[1:-2]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            return None
        key = name.decode("ascii").lower()
        if key in fields and key in _ONCE:
            return None
        fields.setdefault(key, value.strip(b" \t").decode("latin-1"))
    if fields.get("content-length", "0") != "0" or "transfer-encoding" in fields or "upgrade" in fields:
        return None
    host = fields.get("host")
    if not host:
        return None
    return Head(target.decode("ascii"), host, fields.get("referer", ""))


def answer_bytes(answer: Answer) -> bytes:
    """A whole HTTP response, closing the connection."""
    body = answer.text.encode()
    location = f"Location: {answer.location}\r\n" if answer.location else ""
    return (
        f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n{location}{_CORS_LINES}"
        f"Server: tidecast/{__version__}\r\nDate: {formatdate(usegmt=True)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def response_head(fmt: HttpPlayFormat) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {fmt.content_type}\r\nCache-Control: no-cache\r\n{_CORS_LINES}"
        f"Server: tidecast/{__version__}\r\nDate: {formatdate(usegmt=True)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


class PlayLane:
    """Which connections of an HTTP port the lane plays, and the protocol that plays each."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.admitting: set[asyncio.Task[None]] = set()

    def wants(self, request_line: bytes) -> bool:
        """Whether to wait for the whole head (a likely HTTP-FLV play), rather than hand over to aiohttp now."""
        if not request_line.startswith(b"GET /") or not request_line.endswith(_SUFFIX):
            return False
        path = request_line[4 : -len(_SUFFIX)].partition(b"?")[0]
        return path.endswith(b".flv") and not path.startswith(_ROUTED)

    def take(self, head: bytes) -> asyncio.Protocol | None:
        """The protocol that plays this request, or None to leave it to aiohttp."""
        parsed = parse_head(head)
        if parsed is None:
            return None
        parts = split_stream_path(parsed.path, HTTP_FLV.ext, parsed.host.split(":")[0], parsed.query_vhost)
        if parts is None:
            return None
        return LanePlay(self, HTTP_FLV, parsed, *parts)

    async def close(self) -> None:
        """Let plays still waiting for their admission end (a quit)."""
        for task in list(self.admitting):
            task.cancel()
        if self.admitting:
            await asyncio.wait(list(self.admitting), timeout=1.0)


class LanePlay(asyncio.Protocol):
    """One HTTP-FLV play: admitted by a task, then nothing but a transport the fan-out writes to."""

    __slots__ = ("fmt", "lane", "request", "subscription", "transport")

    def __init__(self, lane: PlayLane, fmt: HttpPlayFormat, head: Head, vhost: str, app: str, name: str) -> None:
        self.lane = lane
        self.fmt = fmt
        self.request: tuple[Head, str, str, str] | None = (head, vhost, app, name)  # dropped once admitted
        self.transport: asyncio.Transport | None = None
        self.subscription: Subscription | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport, True)  # as aiohttp does: the answer goes out now; joining sets the vhost's
        task = asyncio.get_running_loop().create_task(self._admit())
        self.lane.admitting.add(task)
        task.add_done_callback(self.lane.admitting.discard)

    async def _admit(self) -> None:
        transport, request = self.transport, self.request
        assert transport is not None and request is not None
        head, vhost, app, name = request
        self.request = None
        hub, fmt = self.lane.hub, self.fmt
        refused = serving_refusal(hub, vhost)
        if refused is not None:
            self._answer(refused)
            return
        remote = transport.get_extra_info("peername")
        url = f"http://{head.host}{head.target}"
        player = new_player(fmt, transport, self, remote[0] if remote else "", url, head.query, head.referer)
        connection_id.set(player.id)  # this task's own context
        answered = False
        try:
            verdict = await admit(hub, player, fmt, vhost, app, name)
            if isinstance(verdict, Answer):
                self._answer(verdict)
            elif not transport.is_closing():  # else gone while its admission was decided: nothing joined
                transport.write(response_head(fmt) + chunk(preamble_for(hub, verdict, fmt)))
                answered = True
                self.subscription = start_play(hub, verdict, fmt, transport, self)
        except asyncio.CancelledError:
            close_transport(transport)
            raise
        except Exception:
            _errors.exception("HTTP GET %s failed", sanitize(head.path))
            if answered:
                self.kick()
            else:
                self._answer(Answer(500, "internal error; see the server log\n"))

    def _answer(self, answer: Answer) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer_bytes(answer))
            close_transport(self.transport)

    def data_received(self, data: bytes) -> None:
        pass  # a player has nothing more to say; a pipelined request on a play is never answered

    def eof_received(self) -> bool | None:
        return None  # a player that half-closes has left: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    # ------------------------------------------------------------ what the player calls

    def leave(self) -> None:
        """The stream let the player go (it ended, or the player fell too far behind): end the body."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_END_OF_BODY)
            close_transport(transport)
        self._stop()

    def kick(self) -> None:
        if self.transport is not None:
            close_transport(self.transport)
        self._stop()

    def set_nodelay(self, on: bool) -> None:
        if self.transport is not None:
            set_nodelay(self.transport, on)

    def _stop(self) -> None:
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            subscription.close()
            player = subscription.player
            token = connection_id.set(player.id)
            log.info("client %s: %s play %s stopped", player.ip, self.fmt.protocol, subscription.stream.url)
            connection_id.reset(token)
