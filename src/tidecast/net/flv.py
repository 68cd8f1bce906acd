"""HTTP-FLV playback: a chunked HTTP response fed by the shared fan-out."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from tidecast.codec.flv import flv_header
from tidecast.live.client import new_client_id
from tidecast.live.player import Player, flv_batch
from tidecast.log import connection_id
from tidecast.net.urls import DEFAULT_VHOST

if TYPE_CHECKING:
    from tidecast.server import Server

log = logging.getLogger("tidecast.flv")

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Server, Content-Length, Content-Type",
}


def split_flv_path(path: str, host: str, query_vhost: str) -> tuple[str, str, str] | None:
    """`/app/stream.flv` or `/vhost/app/stream.flv` into (vhost, app, stream)."""
    if not path.endswith(".flv"):
        return None
    parts = [p for p in path[: -len(".flv")].split("/") if p]
    if len(parts) < 2:
        return None
    stream = parts[-1]
    app = parts[-2]
    vhost = query_vhost or (parts[-3] if len(parts) >= 3 else "") or host
    return vhost or DEFAULT_VHOST, app, stream


async def serve_flv(server: Server, request: web.Request, vhost_name: str, app: str, name: str) -> web.StreamResponse:
    if server.draining:
        raise web.HTTPServiceUnavailable(
            text="draining: this server is quitting; play from another one\n", headers=CORS
        )
    settings = server.config.vhost(vhost_name)
    if settings is None or not settings.http_remux.enabled:
        raise web.HTTPNotFound(text=f"http_remux is off for vhost {vhost_name}\n")
    hub = server.hub
    stream = hub.find(settings.name, app, name)
    is_edge = settings.cluster.mode == "remote"
    if (stream is None or (stream.publisher is None and not stream.players)) and not is_edge:
        redirect = await server.http_play_redirect(settings.name, app, name, request)
        if redirect is not None:
            raise web.HTTPFound(redirect, headers=CORS)
        raise web.HTTPNotFound(text=f"stream /{app}/{name} is not published here\n", headers=CORS)
    resp = web.StreamResponse(headers={"Content-Type": "video/x-flv", "Cache-Control": "no-cache", **CORS})
    resp.enable_chunked_encoding()
    if request.method == "HEAD":
        await resp.prepare(request)
        return resp
    stream = hub.stream(settings.name, app, name)
    transport = request.transport
    if transport is None:
        return resp
    cid = new_client_id()
    token = connection_id.set(cid)
    await resp.prepare(request)
    # aiohttp holds the headers back until the first body write; after this
    # one the fan-out writes ready-framed chunks straight to the transport.
    await resp.write(flv_header(True, True))
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    player = Player(cid, request.remote or "", "flv-play", transport, transport.close, flv_batch)
    player.vhost = settings.name
    player.app = app
    player.tc_url = str(request.url)

    def leave() -> None:
        if not done.done():
            done.set_result(None)

    player.on_leave = leave
    hub.register(player)
    stream.add_player(player)
    server.on_play(stream, player)
    log.info("client %s: flv play %s/%s started", player.ip, settings.name, stream.url.lstrip("/"))
    try:
        await done
    finally:
        stream.remove_player(player)
        server.on_stop_play(stream, player)
        hub.unregister(player)
        hub.release(stream)
        log.info("client %s: flv play %s stopped", player.ip, stream.url)
        connection_id.reset(token)
    return resp
