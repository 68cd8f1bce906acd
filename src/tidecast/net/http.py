"""The HTTP side: the API port and the HTTP server port (static, HLS, HTTP-FLV).

When `http_api.listen` equals `http_server.listen` both are served on one port,
as SRS does.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tidecast.net.api import Api
from tidecast.net.counted import counted_factory
from tidecast.net.flv import CORS, serve_flv, split_flv_path
from tidecast.net.metrics import make_registry, render

if TYPE_CHECKING:
    from tidecast.config import Listen
    from tidecast.server import Server

log = logging.getLogger("tidecast.http")

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/MP2T",
    ".flv": "video/x-flv",
    ".mp4": "video/mp4",
    ".html": "text/html",
    ".xml": "text/xml",
    ".js": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
}
_BUILTIN = {"index.html", "crossdomain.xml"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _builtin(name: str) -> bytes:
    return resources.files("tidecast.net").joinpath("defaults", name).read_bytes()


def _safe_join(root: str, rel: str) -> str | None:
    """Join without ever leaving `root` (no `..` escapes, no absolute paths)."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, rel.lstrip("/")))
    if path != base and not path.startswith(base + os.sep):
        return None
    return path


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _readiness(server: Server) -> Handler:
    async def readyz(request: web.Request) -> web.Response:
        if server.is_ready:
            return web.Response(text="ready\n")
        reason = "draining" if server.draining else "starting"
        return web.Response(status=503, text=f"{reason}\n")

    return readyz


def _metrics(server: Server) -> Handler:
    registry = make_registry(server)

    async def metrics(request: web.Request) -> web.Response:
        if not server.config.exporter.enabled and not server.config.http_api.enabled:
            return web.json_response({"code": 1090})
        return web.Response(body=render(registry), content_type="text/plain", charset="utf-8")

    return metrics


def _static(server: Server) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith(".flv"):
            parts = split_flv_path(path, request.host.split(":")[0], request.query.get("vhost", ""))
            if parts is not None:
                return await serve_flv(server, request, *parts)
        if request.method == "OPTIONS":
            return web.Response(headers=CORS)
        rel = path.lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        root = server.static_root_for(rel)
        full = _safe_join(root, rel)
        if full is None:
            raise web.HTTPForbidden()
        ext = os.path.splitext(rel)[1].lower()
        headers = dict(CORS)
        if ext == ".m3u8":
            headers["Cache-Control"] = "no-cache"
            if server.edge is not None and "/" in rel:
                # HLS on an edge: the request itself keeps the upstream pull alive.
                app, _, name = rel[: -len(".m3u8")].rpartition("/")
                vhost = request.query.get("vhost") or request.host.split(":")[0]
                settings = server.config.vhost(vhost)
                if settings is not None and settings.hls.enabled:
                    server.edge.keep_pulling(settings.name, app, name)
        if os.path.isfile(full):
            resp = web.FileResponse(full, headers=headers)
            if ext in _CONTENT_TYPES:
                resp.content_type = _CONTENT_TYPES[ext]
            return resp
        if rel in _BUILTIN:
            # An empty shared volume (SRS #1603) still answers probes and players.
            return web.Response(body=_builtin(rel), content_type=_CONTENT_TYPES[ext], headers=headers)
        raise web.HTTPNotFound(headers=CORS)

    return handler


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_middleware(server: Server) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = server.config.http_api.auth
        if cfg.enabled and request.path.startswith("/api/") and request.path != "/api/v1/versions":
            expected = "Basic " + base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="tidecast"'})
        return await handler(request)

    return auth


def _server_header() -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        from tidecast import __version__

        response.headers["Server"] = f"tidecast/{__version__}"

    return on_prepare


def build_apps(server: Server) -> list[tuple[Listen, web.Application]]:
    cfg = server.config
    api = Api(server)
    server.api_service_id = api.service_id
    apps: list[tuple[Listen, web.Application]] = []
    health = [web.get("/healthz", _health), web.get("/readyz", _readiness(server))]
    shared = cfg.http_api.enabled and cfg.http_server.enabled and cfg.http_api.listen == cfg.http_server.listen
    if cfg.http_api.enabled:
        app = web.Application(middlewares=[_auth_middleware(server)], handler_args={"max_field_size": 16384})
        app.add_routes([*api.routes(), web.get("/metrics", _metrics(server)), *health])
        if shared:
            app.add_routes([web.route("*", "/{tail:.*}", _static(server))])
        apps.append((cfg.http_api.listen, app))
        if not cfg.http_api.auth.enabled and not _is_loopback(cfg.http_api.listen.host):
            log.warning(
                "http_api listens on %s without auth: anyone who reaches it can kick clients; "
                "set http_api { auth { enabled on; username ...; password ...; } } or listen on 127.0.0.1",
                cfg.http_api.listen,
            )
    if cfg.http_server.enabled and not shared:
        app = web.Application()
        app.add_routes(
            [web.get("/api/v1/versions", api.versions), *health, web.route("*", "/{tail:.*}", _static(server))]
        )
        apps.append((cfg.http_server.listen, app))
    if cfg.exporter.enabled:
        app = web.Application()
        app.add_routes([web.get("/metrics", _metrics(server))])
        apps.append((cfg.exporter.listen, app))
    for _, app in apps:
        app.on_response_prepare.append(_server_header())
    return apps


async def start_http(server: Server) -> None:
    loop = server.loop
    for listen, app in build_apps(server):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        assert runner.server is not None
        factory = counted_factory(server, runner.server)
        listener = await loop.create_server(factory, listen.host, listen.port, reuse_address=True, backlog=1024)
        server.http_listeners.append(listener)
        server.close_hooks.append(runner.cleanup)
        log.info("HTTP listen at %s", listen)
