"""The web console at `/console/` on the API port: tidecast's own HTML, CSS and JavaScript, no build step.

The pages read the SRS API (`/api/v1/...`) every 2 s; `/console/config.json`
adds what the API has no field for: ready/draining, reload status and where the
HTTP server (the live MP4 endpoint the player fetches) listens. The API's auth
middleware guards every `/console` path when `http_api.auth` is on.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from aiohttp import web

from tidecast import __version__
from tidecast.net.node import NodeStatus

_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript", ".png": "image/png"}
_FILES = ("index.html", "play.html", "console.css", "console.js", "player.js")


def _asset(name: str) -> bytes:
    return resources.files("tidecast.net").joinpath("defaults", "console", name).read_bytes()


def _page(name: str) -> web.Response:
    # no-cache: an upgraded server's console must not run yesterday's script against today's API.
    ext = name[name.rfind(".") :]
    return web.Response(body=_asset(name), content_type=_TYPES[ext], headers={"Cache-Control": "no-cache"})


def console_config(server: NodeStatus) -> dict[str, Any]:
    """The console's view of this node beyond the SRS API."""
    cfg = server.hub.config
    vhosts = list(cfg.vhosts.values())
    roles = set()
    for vhost in vhosts:
        if vhost.cluster.mode == "remote":
            roles.add("edge")
        elif vhost.cluster.origin_cluster:
            roles.add("origin-cluster")
    http = cfg.http_server
    return {
        "version": __version__,
        "uptime_s": int(time.time() - server.started),
        "ready": server.is_ready,
        "draining": server.draining,
        "reload": {**server.reload_state, "reloads": server.reloads, "failures": server.reload_failures},
        "roles": sorted(roles) or ["origin"],
        "http": {
            "enabled": http.enabled,
            "host": http.listen.host,
            "port": http.listen.port,
            "remux": [v.name for v in vhosts if v.http_remux.enabled],
        },
        "api": {"port": cfg.http_api.listen.port, "auth": cfg.http_api.auth.enabled},
    }


def console_routes(server: NodeStatus) -> list[web.RouteDef]:
    """Routes for the API app: the console pages, their assets and config.json."""

    async def to_console(request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def index(request: web.Request) -> web.Response:
        return _page("index.html")

    async def play(request: web.Request) -> web.Response:
        return _page("play.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _FILES:
            raise web.HTTPNotFound(text=f"no console file {name!r}\n")
        return _page(name)

    async def config(request: web.Request) -> web.Response:
        return web.json_response(console_config(server), headers={"Cache-Control": "no-cache"})

    return [
        web.get("/console", to_console),
        web.get("/console/", index),
        web.get("/console/index.html", index),
        web.get("/console/config.json", config),
        web.get("/console/play/{path:.+}", play),
        web.get("/console/static/{name}", asset),
    ]
