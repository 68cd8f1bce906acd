"""Live playback over a chunked HTTP response, for every HTTP player format (HTTP-FLV, live MP4).

Admission goes through `hub.play` (403 refused, 404 not here, 302 elsewhere,
503 draining, 400 bad name, CORS on every answer); then the format's preamble
is written and the fan-out writes ready-framed chunks straight to the transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from tidecast.live.admission import (
    ERROR_BAD_NAME,
    ERROR_SERVER_DRAINING,
    ERROR_STREAM_NOT_FOUND,
    ERROR_VHOST_NOT_FOUND,
    Redirect,
    Refusal,
)
from tidecast.live.client import new_client_id
from tidecast.live.hub import Hub, PlayTicket, Subscription, Target
from tidecast.live.limits import DEFAULT_VHOST
from tidecast.live.names import sanitize
from tidecast.live.player import OutputFormat, Player
from tidecast.live.stream import LiveStream
from tidecast.log import connection_id
from tidecast.net.sockets import close_transport, set_nodelay

log = logging.getLogger("tidecast.http")

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Server, Content-Length, Content-Type",
}


def split_stream_path(path: str, ext: str, host: str, query_vhost: str) -> tuple[str, str, str] | None:
    """`/app/stream.EXT` or `/vhost/app/stream.EXT` into (vhost, app, stream)."""
    if not path.endswith(ext):
        return None
    parts = [p for p in path[: -len(ext)].split("/") if p]
    if len(parts) < 2:
        return None
    vhost = query_vhost or (parts[-3] if len(parts) >= 3 else "") or host
    return vhost or DEFAULT_VHOST, parts[-2], parts[-1]


class Answer:
    """A play not served: the HTTP status, one line of text, and for a 302 where to go.

    Both HTTP adapters (aiohttp's and the play lane's) send it, each in its own way."""

    __slots__ = ("location", "status", "text")

    def __init__(self, status: int, text: str, location: str = "") -> None:
        self.status = status
        self.text = text
        self.location = location


def refusal_answer(refusal: Refusal) -> Answer:
    text = f"{refusal.reason}\n"
    if refusal.code in (ERROR_STREAM_NOT_FOUND, ERROR_VHOST_NOT_FOUND):
        return Answer(404, text)
    if refusal.code == ERROR_BAD_NAME:
        return Answer(400, text)
    if refusal.code == ERROR_SERVER_DRAINING:
        return Answer(503, text)
    return Answer(403, text)


_EXCEPTIONS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    503: web.HTTPServiceUnavailable,
}


def answer_exception(answer: Answer) -> web.HTTPException:
    """The answer as the exception an aiohttp handler raises."""
    if answer.location:
        return web.HTTPFound(answer.location, headers=CORS)
    return _EXCEPTIONS[answer.status](text=answer.text, headers=CORS)


def refusal_response(refusal: Refusal) -> web.HTTPException:
    return answer_exception(refusal_answer(refusal))


def redirect_url(redirect: Redirect, app: str, name: str, ext: str) -> str | None:
    """Where the player goes; None when the other node did not say where its HTTP server is
    (guessing a port could point back here: a redirect loop)."""
    if not redirect.http:
        return None
    return f"http://{redirect.http}/{app}/{name}{ext}"


class HttpPlayFormat:
    """What differs between HTTP player formats."""

    def __init__(
        self,
        kind: str,
        ext: str,
        content_type: str,
        output: Callable[[LiveStream], OutputFormat],
        preamble: Callable[[LiveStream], bytes],
        http10: HttpPlayFormat | None = None,
    ) -> None:
        self.kind = kind  # the client type in the API, e.g. "flv-play"
        self.ext = ext
        self.protocol = ext.lstrip(".")
        self.content_type = content_type
        self.output = output  # the stream's output format for this kind of player
        self.preamble = preamble  # written once before the fan-out takes over (FLV's file header)
        self.http10 = http10  # the same without chunked coding, for HTTP/1.0 players; None: refuse them


class PlayEnd(Protocol):
    """What a playing HTTP connection gives its player: how it is kicked, how it leaves, its socket's Nagle."""

    def kick(self) -> None: ...

    def leave(self) -> None: ...

    def set_nodelay(self, on: bool) -> None: ...


def serving_refusal(hub: Hub, vhost_name: str) -> Answer | None:
    """Why this server plays nothing over HTTP for that vhost now, or None."""
    if not hub.accepting:
        return Answer(503, "draining: this server is quitting; play from another one\n")
    settings = hub.vhost_settings(vhost_name)
    if not settings.http_remux.enabled:
        return Answer(404, f"http_remux is off for vhost {sanitize(settings.name)}\n")
    return None


def new_player(
    fmt: HttpPlayFormat, transport: asyncio.Transport, end: PlayEnd, remote: str, url: str, query: str, referer: str
) -> Player:
    # The output format is the stream's own, set just before joining; admission never reads it.
    player = Player(new_client_id(), remote, fmt.kind, transport, end.kick, _UNSET)
    player.set_nodelay = end.set_nodelay
    player.tc_url = url
    player.query = query
    player.page_url = referer
    return player


async def admit(
    hub: Hub, player: Player, fmt: HttpPlayFormat, vhost_name: str, app: str, name: str
) -> PlayTicket | Answer:
    verdict = await hub.play(Target(vhost_name, app, name, player.query), player, fmt.protocol, True)
    if isinstance(verdict, Refusal):
        log.info(
            "client %s: %s play /%s/%s refused: %s", player.ip, fmt.protocol, sanitize(app), sanitize(name),
            verdict.reason,
        )  # fmt: skip
        return refusal_answer(verdict)
    if isinstance(verdict, Redirect):
        url = redirect_url(verdict, app, name, fmt.ext)
        if url is None:
            return Answer(
                404,
                f"stream /{sanitize(app)}/{sanitize(name)} is on {verdict.host}, which does not say "
                "where its HTTP server is; play it over RTMP\n",
            )
        return Answer(302, "302: Found", url)
    return verdict


def start_play(
    hub: Hub, ticket: PlayTicket, fmt: HttpPlayFormat, transport: asyncio.Transport, end: PlayEnd
) -> Subscription | None:
    """Join the stream once its preamble is written; None when the player left while it was."""
    player, target = ticket.player, ticket.target
    if transport.is_closing():
        hub.release(hub.stream(player.vhost, target.app, target.stream))
        return None
    player.on_leave = end.leave
    # No await between these: the stream start() joins is the one whose format we take.
    player.format = fmt.output(hub.stream(player.vhost, target.app, target.stream))
    subscription = ticket.start()
    stream = subscription.stream
    log.info("client %s: %s play %s%s started", player.ip, fmt.protocol, stream.vhost, stream.url)
    return subscription


def preamble_for(hub: Hub, ticket: PlayTicket, fmt: HttpPlayFormat) -> bytes:
    return fmt.preamble(hub.stream(ticket.player.vhost, ticket.target.app, ticket.target.stream))


async def serve_http_play(
    hub: Hub, request: web.Request, fmt: HttpPlayFormat, vhost_name: str, app: str, name: str
) -> web.StreamResponse:
    """A play through aiohttp: HEAD, HTTP/1.0, live MP4 and the odd request the play lane leaves to it."""
    refused = serving_refusal(hub, vhost_name)
    if refused is not None:
        raise answer_exception(refused)
    settings = hub.vhost_settings(vhost_name)
    headers = {"Content-Type": fmt.content_type, "Cache-Control": "no-cache", **CORS}
    transport = request.transport
    if request.method == "HEAD" or transport is None:
        found = hub.find(settings.name, app, name)
        if settings.cluster.mode != "remote" and (found is None or found.idle):
            missing = f"stream /{sanitize(app)}/{sanitize(name)} is not published here\n"
            raise web.HTTPNotFound(text=missing, headers=CORS)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        return resp
    http10 = request.version < (1, 1)
    if http10:
        if fmt.http10 is None:
            raise web.HTTPVersionNotSupported(
                text=f"{fmt.protocol} plays stream as a chunked HTTP/1.1 response: ask with HTTP/1.1\n", headers=CORS
            )
        fmt = fmt.http10
    end = _PlayEnd(transport)
    player = new_player(
        fmt, transport, end, request.remote or "", str(request.url), request.query_string,
        request.headers.get("Referer", ""),
    )  # fmt: skip
    token = connection_id.set(player.id)
    try:
        verdict = await admit(hub, player, fmt, vhost_name, app, name)
        if isinstance(verdict, Answer):
            raise answer_exception(verdict)
        resp = web.StreamResponse(headers=headers)
        if http10:
            resp.force_close()  # the body has no length: its end is the connection's, and says so
            resp.headers["Connection"] = "close"
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        # aiohttp holds the headers back until the first body write; after the preamble the
        # fan-out writes ready-framed chunks (HTTP/1.0: bare tags) straight to the transport.
        await resp.write(preamble_for(hub, verdict, fmt))
        subscription = start_play(hub, verdict, fmt, transport, end)
        if subscription is None:
            return resp
        try:
            await end.done
        finally:
            subscription.close()
            log.info("client %s: %s play %s stopped", player.ip, fmt.protocol, subscription.stream.url)
        return resp
    finally:
        connection_id.reset(token)


class _PlayEnd:
    """How an HTTP play ends: `done` resolves when the player leaves its stream or is kicked.

    One object whose bound methods the player keeps, rather than closures and a partial: a full garbage
    collection walks every player's objects, and there may be 20,000 players."""

    __slots__ = ("done", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def leave(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def kick(self) -> None:
        # aiohttp does not tell a running handler that its connection closed: ending the wait here
        # is what lets a kicked player leave its stream (and a quit's HTTP shutdown finish) even
        # when the stream has nothing more to send it.
        close_transport(self.transport)
        self.leave()

    def set_nodelay(self, on: bool) -> None:
        set_nodelay(self.transport, on)


class _Unset:
    """A player's format before it joins; never asked to encode anything."""

    def batch(self, packets: object) -> bytes:
        raise AssertionError("a player wrote before it joined")

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return b""

    def at(self, base: int) -> _Unset:
        return self


_UNSET = _Unset()
