"""What a worker adds to an `App`: private ports, the in-host relay and the aggregated public API.

The composition root calls `install()` while it builds the hub (observers,
gates, metrics, services) and `start()` once its public listeners are up; the
public HTTP listeners take `middlewares` and bind with SO_REUSEPORT.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tidecast.config import Config
from tidecast.live import stream as live_stream
from tidecast.multi.aggregate import Aggregator
from tidecast.multi.relay import RELAY_TYPE, SiblingRelays, is_local_live
from tidecast.multi.role import TOKEN_HEADER, WorkerRole
from tidecast.net import acceptor
from tidecast.net.api import Api
from tidecast.net.metrics import make_registry, render
from tidecast.net.node import ClusterDirectory, NodeStatus
from tidecast.net.rtmp_server import RtmpConnection

log = logging.getLogger("tidecast.workers")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Stream ids stay SRS-like ("vid-N") and unique across the server: each worker counts in its own range.
STREAM_ID_RANGE = 10_000_000


def relay_config(config: Config, role: WorkerRole | None) -> Config:
    """The config the relays see: `ingest` runs in worker 0 only (each ingest publishes one stream to the
    server's port; N copies would race to publish it). Forward, exec and transcode follow publishes,
    which happen in one worker each, so they need no such care."""
    if role is None or role.index == 0 or not any(v.ingest for v in config.vhosts.values()):
        return config
    vhosts = {name: dataclasses.replace(v, ingest=[]) for name, v in config.vhosts.items()}
    return dataclasses.replace(config, vhosts=vhosts)


class RelayConnection(RtmpConnection):
    """A sibling's pull on the private RTMP port: a player, but the server's own plumbing, not a client."""

    kind = "worker-relay"  # its own connection budget: relays never crowd out clients

    def _describe(self, client: Any) -> Any:
        client = super()._describe(client)
        if client.type == "rtmp-play":
            client.type = RELAY_TYPE
        return client


class WorkerNode:
    def __init__(self, app: Any, role: WorkerRole, cluster: ClusterDirectory) -> None:
        """`app`: the `App` (a `NodeStatus` with `hub`, `loop`, `services`, `metric_sources`, ...)."""
        self.app = app
        self.server: NodeStatus = app
        self.role = role
        self.cluster = cluster
        self.relays = SiblingRelays(app.hub, role)
        self.aggregator = Aggregator(role)
        self.private_rtmp: acceptor.Acceptor | None = None
        self.private_api: web.AppRunner | None = None
        live_stream._stream_ids = itertools.count(role.index * STREAM_ID_RANGE + 1)

    @property
    def middlewares(self) -> list[Any]:
        """For the public API and exporter apps."""
        return [self.aggregator.middleware]

    def install(self) -> None:
        hub = self.app.hub
        hub.observers.append(self.relays)
        hub.gates.append(self.relays)  # last: security, hooks and the origin cluster judge first
        self.app.metric_sources.append(self.relays.metrics)
        self.app.stream_details.append(self._stream_details)
        self.app.services.append(self)

    def _stream_details(self, vhost: str, app: str, name: str) -> dict[str, Any]:
        stream = self.app.hub.find(vhost, app, name)
        if stream is None:
            return {}
        relays = sum(1 for p in stream.players if p.type == RELAY_TYPE)
        pulled = (vhost, app, name) in self.relays.relayed
        return {"worker": {"index": self.role.index, "players": len(stream.players) - relays, "relays": relays,
                           "pulled": pulled}}  # fmt: skip

    # ------------------------------------------------------------ private ports

    async def start(self) -> None:
        me = self.role.me
        # After a worker restarts, every stream it has players of is pulled again at once: a storm too.
        self.private_rtmp = acceptor.listen(
            lambda: RelayConnection(self.app.hub, self.app), "127.0.0.1", me.rtmp_port, f"worker relays {me.rtmp_port}"
        )
        api = Api(self.server, self.cluster)
        web_app = web.Application(middlewares=[self._token])
        registry = make_registry(self.server)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=render(registry), content_type="text/plain", charset="utf-8")

        web_app.add_routes([*api.routes(), web.get("/metrics", metrics), web.get("/tidecast/worker/stream", self._has)])
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", me.api_port, reuse_address=True)
        await site.start()
        self.private_api = runner
        log.info("worker %d of %d: private api 127.0.0.1:%d, relays 127.0.0.1:%d, pid %d", self.role.index,
                 self.role.count, me.api_port, me.rtmp_port, os.getpid())  # fmt: skip

    @web.middleware
    async def _token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.role.token.encode()):
            raise web.HTTPForbidden(text="tidecast worker port: for the server's own workers only\n")
        return await handler(request)

    async def _has(self, request: web.Request) -> web.Response:
        settings = self.app.hub.config.vhost(request.query.get("vhost", ""))
        stream = self.app.hub.find(settings.name, request.query.get("app", ""), request.query.get("stream", ""))
        return web.json_response({"code": 0, "live": is_local_live(stream)})

    # ------------------------------------------------------------ Service

    def tick(self, now: float) -> None:
        if os.getppid() != self.role.supervisor_pid:
            # The supervisor is gone (killed with -9): nobody would restart or signal us any more.
            log.error("worker %d: supervisor %d is gone; quitting", self.role.index, self.role.supervisor_pid)
            os.kill(os.getpid(), signal.SIGTERM)
        self.relays.repark()

    def reload(self) -> None:
        self.relays.repark()

    async def close(self) -> None:
        await self.relays.aclose()
        if self.private_rtmp is not None:
            self.private_rtmp.close()
        await self.aggregator.close()
        if self.private_api is not None:
            await self.private_api.cleanup()
