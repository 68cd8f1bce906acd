"""`GET /api/v1/relays`: every forward and external process, in the API's SRS envelope.

The API owns the envelope (`reply(request, code=0, **fields)`, as `net.api.Api.reply`),
so this only adds the route; the stream objects of /api/v1/streams get theirs
from `Relays.describe(vhost, app, stream)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tidecast.relay import Relays

Reply = Callable[..., web.Response]


def relay_routes(relays: Callable[[], Relays | None], reply: Reply) -> list[web.RouteDef]:
    """`relays()` returns the live Relays (None before start-up or on an edge that has none)."""

    async def handler(request: web.Request) -> web.Response:
        current = relays()
        fields: dict[str, Any] = current.describe_all() if current else {"forwards": [], "processes": []}
        return reply(request, **fields)

    return [web.get("/api/v1/relays", handler)]
