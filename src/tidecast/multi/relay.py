"""The in-host relay: a worker's players of a stream published to a sibling worker.

A stream lives in the worker that took its publisher. Another worker that gets
a player for it pulls it once over loopback from that sibling's private RTMP
port, with the edge's ingester (`SiblingIngester` is an `EdgeIngester` whose
origin is "the sibling that has it"). The pulled copy feeds only players:
HLS, DVR, hooks' on_publish and relays run in the publisher's worker (the HLS
muxer that the hub attaches to every new stream is parked while it is pulled).
A play that arrives before any publisher waits, and the ingester keeps looking
until the stream appears on some worker, as a single server would wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
from prometheus_client.core import GaugeMetricFamily, Metric

from tidecast.cluster.edge import (
    BACKOFF,
    STATE_CONNECTING,
    STATE_PLAYING,
    EdgeIngester,
    EdgeManager,
)
from tidecast.live.admission import ERROR_SYSTEM_STREAM_BUSY, JoinRequest, Refusal
from tidecast.live.client import Client
from tidecast.live.hub import Hub
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream, MediaSink
from tidecast.log import connection_id
from tidecast.multi.role import TOKEN_HEADER, Sibling, WorkerRole
from tidecast.net.rtmp_client import Redirected, UpstreamError

log = logging.getLogger("tidecast.workers")

LOOKUP_TIMEOUT_S = 1.0
FOUND_TTL_S = 1.0
MISSING_TTL_S = 0.25
RETRY_LOOKUP_S = 0.5  # a waiting player finds a stream published on a sibling within about this
FIRST_MEDIA_WAIT_S = 3.0  # an HTTP-FLV play (which needs a live stream) waits this long for the relay
RELAY_TYPE = "worker-relay"  # the client type of a sibling's pull, on the publisher's worker

Key = tuple[str, str, str]


class Locator:
    """Which sibling has a stream live (published there, not itself relayed): asks their private APIs."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self._answers: dict[Key, tuple[float, Sibling | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.lookups = 0

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=LOOKUP_TIMEOUT_S), headers={TOKEN_HEADER: self.role.token}
            )
        return self._session

    async def _ask(self, sibling: Sibling, query: str) -> bool:
        try:
            async with self.session().get(f"{sibling.api}/tidecast/worker/stream?{query}") as resp:
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False  # a worker being restarted has nothing to give
        return isinstance(doc, dict) and doc.get("live") is True

    async def locate(self, vhost: str, app: str, name: str, fresh: bool = False) -> Sibling | None:
        key = (vhost, app, name)
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        self.lookups += 1
        query = urlencode({"vhost": vhost, "app": app, "stream": name})
        others = self.role.others
        answers = await asyncio.gather(*(self._ask(s, query) for s in others))
        found = next((s for s, live in zip(others, answers, strict=True) if live), None)
        if len(self._answers) > 4096:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
        self._answers[key] = (now + (FOUND_TTL_S if found else MISSING_TTL_S), found)
        return found

    def forget(self, vhost: str, app: str, name: str) -> None:
        self._answers.pop((vhost, app, name), None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def is_local_live(stream: LiveStream | None) -> bool:
    """Published on this worker by a client (not relayed from a sibling or pulled by an edge)."""
    return stream is not None and stream.publisher is not None and stream.publisher.type != "edge-ingest"


class SiblingIngester(EdgeIngester):
    """The one pull of a stream from the sibling worker that has it."""

    manager: SiblingRelays

    def __init__(self, manager: SiblingRelays, stream: LiveStream) -> None:
        super().__init__(manager, stream)
        self.sibling: Sibling | None = None
        self.live = asyncio.Event()
        self.parked: list[MediaSink] = []
        self.park()

    def park(self) -> None:
        """Take the stream's sinks (the HLS muxer) off the pulled copy: they run in the publisher's worker."""
        for sink in list(self.stream.sinks):
            self.stream.sinks.remove(sink)
            self.parked.append(sink)

    def stop(self) -> None:
        if self.state == "stopping":
            return
        super().stop()
        stream = self.stream
        for sink in self.parked:
            if sink not in stream.sinks:
                stream.sinks.append(sink)
                if stream.active:
                    sink.on_publish()  # a local publisher took the stream over
        self.parked = []

    async def _run(self) -> None:
        connection_id.set(self.client.id)
        stream = self.stream
        failures = 0
        while True:
            sibling = await self.manager.locator.locate(stream.vhost, stream.app, stream.name, fresh=failures > 0)
            if sibling is None:
                self.state = STATE_CONNECTING
                await asyncio.sleep(RETRY_LOOKUP_S)
                continue
            self.sibling = sibling
            self.state = STATE_CONNECTING
            self.origin = f"worker {sibling.index} (127.0.0.1:{sibling.rtmp_port})"
            self._got_media = False
            try:
                await self._pull("127.0.0.1", sibling.rtmp_port, stream.app, stream.name, stream.vhost)
            except Redirected as exc:
                log.warning("workers: worker %d redirected %s%s to %s; looking again", sibling.index,
                            stream.vhost, stream.url, exc.url)  # fmt: skip
            except (OSError, TimeoutError, UpstreamError) as exc:
                log.info("workers: relay of %s%s from worker %d ended: %s", stream.vhost, stream.url,
                         sibling.index, exc or type(exc).__name__)  # fmt: skip
            failures = 0 if self._got_media else failures + 1
            self.reconnects += 1
            self.upstream = None
            self.live.clear()
            self.manager.locator.forget(stream.vhost, stream.app, stream.name)
            if stream.publisher is self.client:
                # As on one server: players hear UnpublishNotify, then PublishNotify when it is back.
                stream.on_unpublish()
            await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])

    def on_upstream_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        super().on_upstream_media(type_id, timestamp, payload)
        if not self.live.is_set() and self.stream.publisher is self.client:
            self.state = STATE_PLAYING
            self.live.set()

    def describe(self) -> dict[str, Any]:
        doc = super().describe()
        doc["mode"] = "worker"
        doc["worker"] = self.sibling.index if self.sibling is not None else None
        return doc


class SiblingRelays(EdgeManager):
    """The hub observer and gate that relay streams between workers (plain and origin-cluster vhosts).

    Edge vhosts (`cluster.mode remote`) are left to the edge: each worker pulls
    those from the origin itself.
    """

    def __init__(self, hub: Hub, role: WorkerRole) -> None:
        super().__init__(hub)
        self.role = role
        self.locator = Locator(role)
        self.relayed: dict[Key, SiblingIngester] = self.ingesters  # type: ignore[assignment]

    def source_host(self) -> str | None:
        return None  # loopback to loopback, whatever the public listen address

    def ensure_pull(self, stream: LiveStream) -> SiblingIngester:
        key = (stream.vhost, stream.app, stream.name)
        ingester = self.relayed.get(key)
        if ingester is None:
            ingester = self.relayed[key] = SiblingIngester(self, stream)
            if stream.publisher is None:
                ingester.start()
        return ingester

    # ------------------------------------------------------------ gate (last in hub.gates)

    async def check(self, request: JoinRequest) -> Refusal | None:
        if request.action == "connect":
            return None
        settings = self.hub.config.vhost(request.vhost)
        if settings.cluster.mode == "remote":
            return None
        stream = self.hub.find(settings.name, request.app, request.stream)
        if request.action == "publish":
            if stream is not None and stream.publisher is not None:
                return None  # the hub refuses it as busy
            sibling = await self.locator.locate(settings.name, request.app, request.stream, fresh=True)
            if sibling is None:
                return None
            return Refusal(
                ERROR_SYSTEM_STREAM_BUSY,
                f"stream {request.vhost}/{request.app}/{request.stream} is already being published "
                f"(on worker {sibling.index})",
            )
        if stream is not None and stream.publisher is not None:
            return None
        sibling = await self.locator.locate(settings.name, request.app, request.stream)
        if sibling is None:
            return None  # nobody has it yet: the player waits, and the ingester keeps looking
        ingester = self.ensure_pull(self.hub.stream(settings.name, request.app, request.stream))
        ingester.schedule_check()  # stops again if this play never joins
        try:
            async with asyncio.timeout(FIRST_MEDIA_WAIT_S):
                await ingester.live.wait()
        except TimeoutError:
            pass  # RTMP players wait anyway; HTTP-FLV answers 404 as for a stream not live
        return None

    # ------------------------------------------------------------ hub events

    def on_play(self, stream: LiveStream, player: Player) -> None:
        if self.is_edge(stream) or is_local_live(stream) or player.type == RELAY_TYPE:
            return  # a relay waiting for a stream that left here must not start a pull back
        self.ensure_pull(stream).cancel_linger()

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        if client.type == "edge-ingest":
            return
        ingester = self.relayed.get((stream.vhost, stream.app, stream.name))
        if ingester is not None:
            ingester.stop()  # published here after all: the players waiting on this worker get it directly

    def keep_pulling(self, vhost: str, app: str, name: str) -> None:
        pass  # HLS files are written by the publisher's worker, on the same disk

    # ------------------------------------------------------------ service

    def repark(self) -> None:
        """A reload may have put the HLS muxer back on a pulled stream."""
        for ingester in self.relayed.values():
            if ingester.state != "stopping":
                ingester.park()

    def relay_players(self) -> dict[Key, int]:
        """Players on this worker that are siblings' relays, by stream."""
        found: dict[Key, int] = {}
        for stream in self.hub.streams.values():
            n = sum(1 for p in stream.players if p.type == RELAY_TYPE)
            if n:
                found[(stream.vhost, stream.app, stream.name)] = n
        return found

    def metrics(self) -> Iterator[Metric]:
        labels = ["vhost", "app", "stream"]
        pulled = GaugeMetricFamily("tidecast_worker_pulled", "1 for a stream this worker relays from a sibling",
                                   labels=labels)  # fmt: skip
        for key in self.relayed:
            pulled.add_metric(list(key), 1)
        relays = GaugeMetricFamily("tidecast_worker_relay_players", "siblings' relays playing a stream here",
                                   labels=labels)  # fmt: skip
        for key, n in self.relay_players().items():
            relays.add_metric(list(key), n)
        yield pulled
        yield relays

    async def aclose(self) -> None:
        self.close()
        await self.locator.close()
