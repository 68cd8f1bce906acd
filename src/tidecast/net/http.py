"""The HTTP side: the API port and the HTTP server port (static, HLS, HTTP-FLV).

When `http_api.listen` equals `http_server.listen` both are served on one port,
as SRS does.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from tidecast.hls.fetchcache import kind_of
from tidecast.hls.playlist import ENDLIST, STALE_MIN_S, is_stale_live
from tidecast.live.hub import Hub
from tidecast.live.limits import DEFAULT_VHOST
from tidecast.live.names import sanitize
from tidecast.log import RateLimitedLogger
from tidecast.net import acceptor
from tidecast.net.api import Api
from tidecast.net.console import console_routes
from tidecast.net.counted import KEEPALIVE_TIMEOUT_S, counted_factory
from tidecast.net.flv import HTTP_FLV
from tidecast.net.hls_admission import HlsAdmission
from tidecast.net.hls_fetch import HlsFetcher
from tidecast.net.http_lane import PlayLane
from tidecast.net.http_play import CORS, serve_http_play, split_stream_path
from tidecast.net.llhls import LlHlsHandler
from tidecast.net.metrics import make_registry, render
from tidecast.net.mp4 import LIVE_MP4
from tidecast.net.node import ClusterDirectory, HlsDemand, HlsWriting, NodeStatus

if TYPE_CHECKING:
    from tidecast.config import Config, Listen

log = logging.getLogger("tidecast.http")
_error_log = RateLimitedLogger(log)

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/MP2T",
    ".m4s": "video/iso.segment",
    ".flv": "video/x-flv",
    ".mp4": "video/mp4",
    ".html": "text/html",
    ".xml": "text/xml",
    ".js": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
}
_BUILTIN = {"index.html", "crossdomain.xml"}
MAX_STALE_CHECK_BYTES = 1024 * 1024  # what is read of a playlist to decide whether it is stale

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _builtin(name: str) -> bytes:
    return resources.files("tidecast.net").joinpath("defaults", name).read_bytes()


def _safe_join(root: str, rel: str) -> str | None:
    """Join without ever leaving `root` (no `..` escapes, no absolute paths)."""
    if "\x00" in rel:
        return None
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, rel.lstrip("/")))
    if path != base and not path.startswith(base + os.sep):
        return None
    return path


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def static_root_for(config: Config, rel: str) -> str:
    """HLS files come from the vhost's hls_path; everything else from http_server.dir."""
    if rel.endswith((".m3u8", ".ts", ".m4s", ".mp4")):
        vhost = config.vhost(DEFAULT_VHOST)
        if vhost.hls.enabled:
            candidate = _safe_join(vhost.hls.hls_path, rel)
            if candidate is not None and os.path.exists(candidate):
                return vhost.hls.hls_path
    return config.http_server.dir


def _readiness(server: NodeStatus) -> Handler:
    async def readyz(request: web.Request) -> web.Response:
        if server.is_ready:
            return web.Response(text="ready\n")
        reason = "draining" if server.draining else "starting"
        return web.Response(status=503, text=f"{reason}\n")

    return readyz


def _metrics(server: NodeStatus) -> Handler:
    registry = make_registry(server)

    async def metrics(request: web.Request) -> web.Response:
        config = server.hub.config
        if not config.exporter.enabled and not config.http_api.enabled:
            return web.json_response({"code": 1090})
        return web.Response(body=render(registry), content_type="text/plain", charset="utf-8")

    return metrics


class HlsServed:
    """HLS files this node's HTTP server answered from its disk, by kind: what an origin behind
    fetching edges serves (each edge asks once per segment, whatever its player count)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.missing = 0
        self.ended_stale = 0

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def metrics(self) -> Iterator[Metric]:
        served = CounterMetricFamily("tidecast_hls_files_served", "HLS files served from disk", labels=["kind"])
        for kind in ("playlist", "media"):
            served.add_metric([kind], self.counts.get(kind, 0))
        yield served
        yield CounterMetricFamily("tidecast_hls_files_missing", "HLS file requests answered 404", value=self.missing)
        yield CounterMetricFamily(
            "tidecast_hls_stale_playlists_ended",
            "abandoned live playlists served with EXT-X-ENDLIST appended",
            value=self.ended_stale,
        )


def _ended_if_stale(full: str, hls_writing: HlsWriting | None) -> bytes | None:
    """A live playlist its writer abandoned (kill -9, a node that left), with EXT-X-ENDLIST appended; else None.

    Abandoned: no EXT-X-ENDLIST, unchanged for longer than max(30 s, 6 target durations)
    (hls/playlist.py `is_stale_live`), and no publisher of this process writes it. Appending the end
    rather than answering 404: the segments it lists are still there, so a player plays them out and
    stops, the defined end of a live stream, instead of polling a dead playlist for ever (or retrying a
    404 as a network error). A shared volume another process writes stays fresh (its mtime moves with
    every segment), so origins sharing an hls_path are never affected. Only the response changes: the
    file stays as it is, and a republish continues it as before.
    """
    try:
        age = time.time() - os.stat(full).st_mtime
        if age <= STALE_MIN_S:  # the cheap test first: a live playlist is rewritten every segment
            return None
        with open(full, "rb") as f:
            body = f.read(MAX_STALE_CHECK_BYTES + 1)
    except OSError:
        return None
    if len(body) > MAX_STALE_CHECK_BYTES:
        return None
    text = body.decode(errors="replace")
    if not is_stale_live(text, age) or (hls_writing is not None and hls_writing(full)):
        return None
    return body + (b"" if body.endswith(b"\n") else b"\n") + ENDLIST.encode() + b"\n"


@dataclass(frozen=True)
class HlsServing:
    """What serving HLS takes besides files: each part is optional.

    `demand`: an edge's local-mux pull kept alive by playlist requests; `live`: LL-HLS from memory;
    `fetch`: an edge's HLS from its origins; `writing(path)`: whether a publisher of this process writes
    that playlist (a stale one nobody writes is served ended); `admission`: the access checks of a play.
    """

    demand: HlsDemand | None = None
    live: LlHlsHandler | None = None
    fetch: HlsFetcher | None = None
    writing: HlsWriting | None = None
    admission: HlsAdmission | None = None


def _static(hub: Hub, hls: HlsServing, served: HlsServed | None = None) -> Handler:
    hls_demand, hls_live, hls_fetch, hls_writing = hls.demand, hls.live, hls.fetch, hls.writing
    admission = hls.admission

    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith(".flv"):
            parts = split_stream_path(path, ".flv", request.host.split(":")[0], request.query.get("vhost", ""))
            if parts is not None:
                return await serve_http_play(hub, request, HTTP_FLV, *parts)
        if request.method == "OPTIONS":
            return web.Response(headers=CORS)
        if admission is not None and path.endswith(".m3u8"):
            refused = await admission(request)
            if refused is not None:
                return refused
        if hls_fetch is not None:
            # An edge with hls_fetch on: HLS comes from the origins, not from local files or a local mux.
            fetched = await hls_fetch(request)
            if fetched is not None:
                return fetched
        if path.endswith(".mp4"):
            # A file of that name (a recording, an HLS init segment) wins; else the live stream as fragmented MP4.
            found = _safe_join(static_root_for(hub.config, path.lstrip("/")), path)
            parts = split_stream_path(path, ".mp4", request.host.split(":")[0], request.query.get("vhost", ""))
            if parts is not None and (found is None or not os.path.isfile(found)):
                return await serve_http_play(hub, request, LIVE_MP4, *parts)
        rel = path.lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        root = static_root_for(hub.config, rel)
        full = _safe_join(root, rel)
        if full is None:
            raise web.HTTPForbidden()
        ext = os.path.splitext(rel)[1].lower()
        headers = dict(CORS)
        if ext == ".m3u8":
            headers["Cache-Control"] = "no-cache"
            if hls_demand is not None and "/" in rel:
                # HLS on an edge: the request itself keeps the upstream pull alive.
                app, _, name = rel[: -len(".m3u8")].rpartition("/")
                vhost = request.query.get("vhost") or request.host.split(":")[0]
                settings = hub.config.vhost(vhost)
                if settings.hls.enabled and settings.cluster.mode == "remote":
                    hls_demand(settings.name, app, name)
        if hls_live is not None and ext in (".m3u8", ".m4s"):
            # Low-latency HLS: playlists (blocking reloads) and parts come from memory.
            live = await hls_live(request, rel)
            if live is not None:
                return live
        if os.path.isfile(full):
            if ext == ".m3u8":
                ended = _ended_if_stale(full, hls_writing)
                if ended is not None:
                    if served is not None:
                        served.ended_stale += 1
                    return web.Response(body=ended, content_type=_CONTENT_TYPES[ext], headers=headers)
            hls_kind = kind_of(rel) if served is not None else None
            if served is not None and hls_kind is not None:
                served.add(hls_kind)
            resp = web.FileResponse(full, headers=headers)
            if ext in _CONTENT_TYPES:
                resp.content_type = _CONTENT_TYPES[ext]
            return resp
        if rel in _BUILTIN:
            # An empty shared volume (SRS #1603) still answers probes and players.
            return web.Response(body=_builtin(rel), content_type=_CONTENT_TYPES[ext], headers=headers)
        if served is not None and kind_of(rel) is not None:
            served.missing += 1
        raise web.HTTPNotFound(headers=CORS)

    return handler


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_middleware(hub: Hub) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = hub.config.http_api.auth
        guarded = (
            request.path.startswith("/api/")
            or request.path in ("/metrics", "/console")
            or (request.path.startswith("/console/"))
        )
        if cfg.enabled and guarded and request.path.rstrip("/") != "/api/v1/versions":
            expected = "Basic " + base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="tidecast"'})
        return await handler(request)

    return auth


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any unexpected exception is one line in tidecast's log (rate-limited) and a 500, never a bare traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        _error_log.exception("HTTP %s %s failed", request.method, sanitize(request.path))
        raise web.HTTPInternalServerError(text="internal error; see the server log\n") from None


def _server_header() -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        from tidecast import __version__

        response.headers["Server"] = f"tidecast/{__version__}"

    return on_prepare


def build_apps(
    server: NodeStatus,
    cluster: ClusterDirectory | None = None,
    hls: HlsServing | None = None,
    api_middlewares: Sequence[Any] = (),
) -> list[tuple[Listen, web.Application, str]]:
    """`api_middlewares` wrap the API and exporter apps (after auth): a multi-worker server aggregates there.

    Each app's kind: "http" for the port that serves static files and plays, "api" (or "api+http" when the
    HTTP server shares the API's port), "exporter"."""
    hub = server.hub
    served = HlsServed()
    server.metric_sources.append(served.metrics)
    static = _static(hub, hls or HlsServing(), served)
    cfg = hub.config
    api = Api(server, cluster)
    server.api_service_id = api.service_id
    apps: list[tuple[Listen, web.Application, str]] = []
    health = [web.get("/healthz", _health), web.get("/readyz", _readiness(server))]
    shared = cfg.http_api.enabled and cfg.http_server.enabled and cfg.http_api.listen == cfg.http_server.listen
    if cfg.http_api.enabled:
        app = web.Application(
            middlewares=[_errors, _auth_middleware(hub), *api_middlewares], handler_args={"max_field_size": 16384}
        )
        app.add_routes([*api.routes(), web.get("/metrics", _metrics(server)), *health, *console_routes(server)])
        if shared:
            app.add_routes([web.route("*", "/{tail:.*}", static)])
        apps.append((cfg.http_api.listen, app, "api+http" if shared else "api"))
        if not cfg.http_api.auth.enabled and not _is_loopback(cfg.http_api.listen.host):
            log.warning(
                "http_api listens on %s without auth: anyone who reaches it can kick clients; "
                "set http_api { auth { enabled on; username ...; password ...; } } or listen on 127.0.0.1",
                cfg.http_api.listen,
            )
    if cfg.http_server.enabled and not shared:
        app = web.Application(middlewares=[_errors])
        app.add_routes(
            [
                web.get("/api/v1/versions", api.versions),
                *health,
                web.route("*", "/{tail:.*}", static),
            ]
        )
        apps.append((cfg.http_server.listen, app, "http"))
    if cfg.exporter.enabled:
        app = web.Application(middlewares=list(api_middlewares))
        app.add_routes([web.get("/metrics", _metrics(server))])
        apps.append((cfg.exporter.listen, app, "exporter"))
    for _, app, _kind in apps:
        app.on_response_prepare.append(_server_header())
    return apps


async def start_http(
    server: NodeStatus,
    cluster: ClusterDirectory | None = None,
    hls: HlsServing | None = None,
    api_middlewares: Sequence[Any] = (),
    reuse_port: bool = False,
    lane: PlayLane | None = None,
) -> tuple[list[acceptor.Acceptor], list[web.AppRunner]]:
    """Bind every HTTP port; the caller closes the listeners and cleans the runners up.

    `reuse_port`: the workers of one server bind the same ports (SO_REUSEPORT). `lane`: HTTP-FLV plays
    answered below aiohttp on the ports that serve plays."""
    listeners: list[acceptor.Acceptor] = []
    runners: list[web.AppRunner] = []
    for listen, app, kind in build_apps(server, cluster, hls, api_middlewares):
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        await runner.setup()
        runners.append(runner)
        assert runner.server is not None
        plays = kind in ("http", "api+http")
        factory = counted_factory(server, runner.server, kind.partition("+")[0], lane if plays else None)
        listener = acceptor.listen(factory, listen.host, listen.port, f"HTTP {listen}", reuse_port=reuse_port)
        listeners.append(listener)
        log.info("HTTP listen at %s", listen)
    return listeners, runners
