"""HTTP-FLV playback: a chunked HTTP response fed by the shared fan-out."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from tidecast.codec.flv import flv_header
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
from tidecast.live.names import sanitize
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream
from tidecast.log import connection_id
from tidecast.net.formats import FLV
from tidecast.net.urls import DEFAULT_VHOST

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


def refusal_response(refusal: Refusal) -> web.HTTPException:
    if refusal.code in (ERROR_STREAM_NOT_FOUND, ERROR_VHOST_NOT_FOUND):
        return web.HTTPNotFound(text=f"{refusal.reason}\n", headers=CORS)
    if refusal.code == ERROR_BAD_NAME:
        return web.HTTPBadRequest(text=f"{refusal.reason}\n", headers=CORS)
    if refusal.code == ERROR_SERVER_DRAINING:
        return web.HTTPServiceUnavailable(text=f"{refusal.reason}\n", headers=CORS)
    return web.HTTPForbidden(text=f"{refusal.reason}\n", headers=CORS)


def redirect_url(redirect: Redirect, app: str, name: str) -> str | None:
    """Where an HTTP-FLV player goes; None when the other node did not say where its HTTP server is
    (guessing a port could point back here: a redirect loop)."""
    if not redirect.http:
        return None
    return f"http://{redirect.http}/{app}/{name}.flv"


def _header_flags(stream: LiveStream | None) -> tuple[bool, bool]:
    """(audio, video) flags of the FLV header: configured, or guessed from what the stream carries (SRS's
    guess_has_av), so an audio-only stream does not make ffmpeg or mpegts.js wait for video forever."""
    if stream is None:
        return True, True
    remux = stream.settings.http_remux
    audio, video = remux.has_audio, remux.has_video
    if remux.guess_has_av and stream.active and (stream.video_sh or stream.audio_sh or stream.gop):
        audio = audio and stream.audio_sh is not None
        video = video and (stream.video_sh is not None or any(p.is_video for p in stream.gop))
    return audio, video


async def serve_flv(hub: Hub, request: web.Request, vhost_name: str, app: str, name: str) -> web.StreamResponse:
    if not hub.accepting:
        text = "draining: this server is quitting; play from another one\n"
        raise web.HTTPServiceUnavailable(text=text, headers=CORS)
    settings = hub.vhost_settings(vhost_name)
    if not settings.http_remux.enabled:
        raise web.HTTPNotFound(text=f"http_remux is off for vhost {sanitize(settings.name)}\n")
    transport = request.transport
    if request.method == "HEAD" or transport is None:
        found = hub.find(settings.name, app, name)
        if settings.cluster.mode != "remote" and (found is None or found.idle):
            missing = f"stream /{sanitize(app)}/{sanitize(name)} is not published here\n"
            raise web.HTTPNotFound(text=missing, headers=CORS)
        resp = web.StreamResponse(headers={"Content-Type": "video/x-flv", "Cache-Control": "no-cache", **CORS})
        await resp.prepare(request)
        return resp
    cid = new_client_id()
    token = connection_id.set(cid)
    try:
        player = Player(cid, request.remote or "", "flv-play", transport, transport.close, FLV)
        player.tc_url = str(request.url)
        player.query = request.query_string
        player.page_url = request.headers.get("Referer", "")
        target = Target(vhost_name, app, name, request.query_string)
        verdict = await hub.play(target, player, "flv", require_live=True)
        if isinstance(verdict, Refusal):
            log.info("client %s: flv play /%s/%s refused: %s", player.ip, sanitize(app), sanitize(name), verdict.reason)
            raise refusal_response(verdict)
        if isinstance(verdict, Redirect):
            url = redirect_url(verdict, app, name)
            if url is None:
                raise web.HTTPNotFound(
                    text=f"stream /{app}/{name} is on {verdict.host}, which does not serve HTTP-FLV redirects; "
                    "play it over RTMP\n",
                    headers=CORS,
                )
            raise web.HTTPFound(url, headers=CORS)
        resp = web.StreamResponse(headers={"Content-Type": "video/x-flv", "Cache-Control": "no-cache", **CORS})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # aiohttp holds the headers back until the first body write; after this
        # one the fan-out writes ready-framed chunks straight to the transport.
        await resp.write(flv_header(*_header_flags(hub.find(settings.name, app, name))))
        if transport.is_closing():
            return resp
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def leave() -> None:
            if not done.done():
                done.set_result(None)

        player.on_leave = leave
        subscription = verdict.start()
        stream = subscription.stream
        log.info("client %s: flv play %s/%s started", player.ip, settings.name, stream.url.lstrip("/"))
        try:
            await done
        finally:
            subscription.close()
            log.info("client %s: flv play %s stopped", player.ip, stream.url)
        return resp
    finally:
        connection_id.reset(token)
