"""Live playback over a chunked HTTP response, for every HTTP player format (HTTP-FLV, live MP4).

Admission goes through `hub.play` (403 refused, 404 not here, 302 elsewhere,
503 draining, 400 bad name, CORS on every answer); then the format's preamble
is written and the fan-out writes ready-framed chunks straight to the transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

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
from tidecast.live.hub import Hub, Target
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


def refusal_response(refusal: Refusal) -> web.HTTPException:
    text = f"{refusal.reason}\n"
    if refusal.code in (ERROR_STREAM_NOT_FOUND, ERROR_VHOST_NOT_FOUND):
        return web.HTTPNotFound(text=text, headers=CORS)
    if refusal.code == ERROR_BAD_NAME:
        return web.HTTPBadRequest(text=text, headers=CORS)
    if refusal.code == ERROR_SERVER_DRAINING:
        return web.HTTPServiceUnavailable(text=text, headers=CORS)
    return web.HTTPForbidden(text=text, headers=CORS)


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
    ) -> None:
        self.kind = kind  # the client type in the API, e.g. "flv-play"
        self.ext = ext
        self.protocol = ext.lstrip(".")
        self.content_type = content_type
        self.output = output  # the stream's output format for this kind of player
        self.preamble = preamble  # written once before the fan-out takes over (FLV's file header)


async def serve_http_play(
    hub: Hub, request: web.Request, fmt: HttpPlayFormat, vhost_name: str, app: str, name: str
) -> web.StreamResponse:
    if not hub.accepting:
        draining = "draining: this server is quitting; play from another one\n"
        raise web.HTTPServiceUnavailable(text=draining, headers=CORS)
    settings = hub.vhost_settings(vhost_name)
    if not settings.http_remux.enabled:
        raise web.HTTPNotFound(text=f"http_remux is off for vhost {sanitize(settings.name)}\n", headers=CORS)
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
    cid = new_client_id()
    token = connection_id.set(cid)
    try:
        # The output format is the stream's own, set just before joining; admission never reads it.
        play = _PlayEnd(transport)
        done = play.done
        player = Player(cid, request.remote or "", fmt.kind, transport, play.kick, _UNSET)
        player.set_nodelay = play.set_nodelay
        player.tc_url = str(request.url)
        player.query = request.query_string
        player.page_url = request.headers.get("Referer", "")
        verdict = await hub.play(Target(vhost_name, app, name, request.query_string), player, fmt.protocol, True)
        if isinstance(verdict, Refusal):
            log.info(
                "client %s: %s play /%s/%s refused: %s", player.ip, fmt.protocol, sanitize(app), sanitize(name),
                verdict.reason,
            )  # fmt: skip
            raise refusal_response(verdict)
        if isinstance(verdict, Redirect):
            url = redirect_url(verdict, app, name, fmt.ext)
            if url is None:
                raise web.HTTPNotFound(
                    text=f"stream /{sanitize(app)}/{sanitize(name)} is on {verdict.host}, which does not say "
                    "where its HTTP server is; play it over RTMP\n",
                    headers=CORS,
                )
            raise web.HTTPFound(url, headers=CORS)
        resp = web.StreamResponse(headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # aiohttp holds the headers back until the first body write; after the preamble the
        # fan-out writes ready-framed chunks straight to the transport.
        stream = hub.stream(player.vhost, app, name)
        await resp.write(fmt.preamble(stream))
        if transport.is_closing():
            hub.release(stream)
            return resp
        player.on_leave = play.leave
        # No await between these: the stream start() joins is the one whose format we take.
        player.format = fmt.output(hub.stream(player.vhost, app, name))
        subscription = verdict.start()
        log.info("client %s: %s play %s/%s started", player.ip, fmt.protocol, settings.name, stream.url.lstrip("/"))
        try:
            await done
        finally:
            subscription.close()
            log.info("client %s: %s play %s stopped", player.ip, fmt.protocol, stream.url)
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
