"""Edge mode (`cluster { mode remote; origin …; }`): pull on demand, forward publishes.

One `EdgeIngester` per stream pulls from an origin while the stream has
players (RTMP, HTTP-FLV, or recent HLS requests), shared by all of them. When
the upstream fails the ingester moves to the next origin with a short backoff;
players stay connected and simply receive the new sequence headers when data
flows again. A publish to an edge is forwarded by one `EdgeForwarder`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tidecast.live.admission import ERROR_SYSTEM_SECURITY_DENY, JoinRequest, Refusal
from tidecast.live.client import Client, new_client_id
from tidecast.live.hub import Hub, StreamEvents
from tidecast.live.limits import DEFAULT_VHOST
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream
from tidecast.log import connection_id
from tidecast.net.flv_client import pull_flv
from tidecast.net.rtmp_client import Redirected, RtmpUpstream, UpstreamError, open_connection, open_upstream
from tidecast.net.urls import parse_rtmp_url, split_origin

if TYPE_CHECKING:
    from tidecast.config import Vhost

log = logging.getLogger("tidecast.edge")

CONNECT_TIMEOUT = 5.0
TRAVERSE_TIMEOUT = 5.0
RECEIVE_TIMEOUT = 5.0  # no media for this long: the upstream is as good as dead
LINGER = 2.0  # after the last player leaves, before the upstream stops
HLS_KEEPALIVE = 30.0  # an HLS request keeps the pull going this long
MAX_REDIRECTS = 3
BACKOFF = (0.0, 0.5, 1.0, 2.0, 3.0)
FORWARD_BUFFER_MESSAGES = 3000

Key = tuple[str, str, str]

STATE_INIT = "init"
STATE_CONNECTING = "connecting"
STATE_PLAYING = "ingesting"
STATE_STOPPING = "stopping"


def upstream_vhost(settings: Vhost, vhost: str) -> str:
    wanted = settings.cluster.vhost or "[vhost]"
    return wanted.replace("[vhost]", vhost)


def tc_url_for(host: str, port: int, app: str, vhost: str) -> str:
    query = f"?vhost={vhost}" if vhost and vhost != DEFAULT_VHOST else ""
    return f"rtmp://{host}:{port}/{app}{query}"


class _RoundRobin:
    """SRS's per-stream origin choice: the first attempt hits origin[0], retries move on."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def pick(self, origins: list[str], avoid: tuple[str, int] | None = None, default_port: int = 1935) -> str:
        """The next origin; not `avoid` (the one that just failed, perhaps reached by a redirect) when another
        is listed: a draining origin picked again costs a refused connection and a backoff."""
        origin = origins[self.count % len(origins)]
        self.count += 1
        if avoid is not None and len(origins) > 1 and split_origin(origin, default_port) == avoid:
            origin = origins[self.count % len(origins)]
            self.count += 1
        return origin


class EdgeIngester:
    """The one upstream play of a stream on this edge."""

    def __init__(self, manager: EdgeManager, stream: LiveStream) -> None:
        self.manager = manager
        self.stream = stream
        self.client = Client(new_client_id(), "", "edge-ingest", self.stop)
        self.client.vhost = stream.vhost
        self.client.app = stream.app
        self.client.stream = stream
        self.state = STATE_INIT
        self.origin = ""
        self.reconnects = 0
        self.redirects = 0
        self.connected_since = 0.0
        self.started = time.time()
        self.keep_until = 0.0
        self.upstream: RtmpUpstream | None = None
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._got_media = False
        self._redirect: str | None = None
        stream.upstream = self

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def keep_alive(self, seconds: float) -> None:
        self.keep_until = max(self.keep_until, time.monotonic() + seconds)
        self.schedule_check()

    def schedule_check(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        delay = max(LINGER, self.keep_until - time.monotonic())
        self._linger = asyncio.get_running_loop().call_later(delay, self._check_wanted)

    def cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _check_wanted(self) -> None:
        self._linger = None
        if self.stream.players:
            return
        if time.monotonic() < self.keep_until:
            self.schedule_check()
            return
        self.stop()

    def stop(self) -> None:
        if self.state == STATE_STOPPING:
            return
        self.state = STATE_STOPPING
        self.cancel_linger()
        if self._task is not None:
            self._task.cancel()
        if self.upstream is not None:
            self.upstream.close()
        stream = self.stream
        if stream.publisher is self.client:
            stream.on_unpublish()
        stream.upstream = None
        self.manager.ingester_stopped(self)
        log.info("edge: stopped pulling %s%s from %s", stream.vhost, stream.url, self.origin or "no origin")

    # ------------------------------------------------------------ the pull loop

    async def _run(self) -> None:
        connection_id.set(self.client.id)  # the task's own context: its logs carry the ingest id
        picker = _RoundRobin()
        failures = 0
        failed: tuple[str, int] | None = None  # the upstream the last attempt lost
        warned_empty = False
        while True:
            settings = self.manager.hub.config.vhost(self.stream.vhost)
            origins = list(settings.cluster.origin) if settings is not None else []
            if not origins and self._redirect is None:
                if not warned_empty:
                    log.warning(
                        "edge: vhost %s has no cluster.origin; %s waits for one (add `origin` and reload)",
                        self.stream.vhost,
                        self.stream.url,
                    )
                    warned_empty = True
                await asyncio.sleep(3.0)
                continue
            warned_empty = False
            protocol = "rtmp"
            if self._redirect is not None:
                url, self._redirect = self._redirect, None
                try:
                    host, port, app, name = parse_rtmp_url(url)
                except ValueError:
                    log.warning("edge: ignoring a bad redirect target %r", url)
                    continue
                name = name or self.stream.name
            else:
                protocol = settings.cluster.protocol if settings is not None else "rtmp"
                default_port = {"flv": 80, "flvs": 443}.get(protocol, 1935)
                host, port = split_origin(picker.pick(origins, failed, default_port), default_port)
                app, name = self.stream.app, self.stream.name
            vhost = upstream_vhost(settings, self.stream.vhost) if settings else self.stream.vhost
            self.state = STATE_CONNECTING
            self.origin = f"{host}:{port}"
            self._got_media = False
            try:
                if protocol in ("flv", "flvs"):
                    await self._pull_flv(protocol, host, port, app, name, vhost)
                else:
                    await self._pull(host, port, app, name, vhost)
            except Redirected as exc:
                self.redirects += 1
                if self.redirects_in_row < MAX_REDIRECTS:
                    self.redirects_in_row += 1
                    log.info(
                        "edge: RTMP redirect %s%s from %s to %s",
                        self.stream.vhost,
                        self.stream.url,
                        self.origin,
                        exc.url,
                    )
                    self._redirect = exc.url
                    continue
                log.warning("edge: too many redirects for %s; trying the next origin", self.stream.url)
            except (OSError, TimeoutError, UpstreamError) as exc:
                log.warning(
                    "edge: pull %s%s over %s from %s failed: %s; trying the next origin",
                    self.stream.vhost,
                    self.stream.url,
                    protocol,
                    self.origin,
                    exc or type(exc).__name__,
                )
            failed = (host, port)
            # It worked until now: retry at once, on the next origin; else back off.
            failures = 0 if self._got_media else failures + 1
            self.redirects_in_row = 0
            self.reconnects += 1
            self.upstream = None
            self.state = STATE_CONNECTING
            self.stream.on_source_restart()
            await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])

    redirects_in_row = 0

    async def _pull(self, host: str, port: int, app: str, name: str, vhost: str) -> None:
        upstream = await open_upstream(
            host,
            port,
            app,
            tc_url_for(host, port, app, vhost),
            name,
            "play",
            self,
            CONNECT_TIMEOUT,
            self.manager.source_host(),
        )
        self.upstream = upstream
        self.state = STATE_PLAYING
        self.connected_since = time.time()
        log.info("edge: pulling %s%s from %s", self.stream.vhost, self.stream.url, self.origin)
        loop = asyncio.get_running_loop()
        try:
            while True:
                waiters: list[asyncio.Future[Any]] = [upstream.closed, upstream.redirect]
                await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if upstream.redirect.done():
                    raise Redirected(upstream.redirect.result())
                if upstream.closed.done():
                    raise UpstreamError(upstream.error or "upstream closed the connection")
                if loop.time() - upstream.last_data > RECEIVE_TIMEOUT:
                    raise UpstreamError(f"no media for {RECEIVE_TIMEOUT:.0f} s")
        finally:
            upstream.close()

    async def _pull_flv(self, protocol: str, host: str, port: int, app: str, name: str, vhost: str) -> None:
        scheme = "https" if protocol == "flvs" else "http"
        query = f"?vhost={vhost}" if vhost and vhost != DEFAULT_VHOST else ""
        url = f"{scheme}://{host}:{port}/{app}/{name}.flv{query}"

        def connected(final_url: str) -> None:
            self.state = STATE_PLAYING
            self.connected_since = time.time()
            if final_url != url:
                self.redirects += 1
                log.info("edge: HTTP redirect %s%s from %s to %s", self.stream.vhost, self.stream.url, url, final_url)
            log.info("edge: pulling %s%s from %s", self.stream.vhost, self.stream.url, final_url)

        await pull_flv(url, self, CONNECT_TIMEOUT, RECEIVE_TIMEOUT, connected, self.manager.source_host())

    # ------------------------------------------------------------ UpstreamHandler

    def on_upstream_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        stream = self.stream
        if stream.publisher is None:
            stream.on_publish(self.client)
        elif stream.publisher is not self.client:
            return  # a local publisher took over this stream
        self._got_media = True
        self.client.recv_bytes += len(payload)
        stream.on_media(type_id, timestamp, payload)

    def on_upstream_read(self) -> None:
        # The origin already merged these messages for mw_latency; merging them again
        # here would add a second mw_latency to every edge player's delay.
        if self.stream.publisher is self.client:
            self.stream.flush()

    def on_upstream_metadata(self, values: Any) -> None:
        stream = self.stream
        if stream.publisher is None:
            stream.on_publish(self.client)
        if stream.publisher is self.client:
            stream.on_metadata(values)

    # ------------------------------------------------------------ API view

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "pull",
            "origin": self.origin,
            "state": self.state,
            "reconnects": self.reconnects,
            "redirects": self.redirects,
            "connected_since": int(self.connected_since) if self.upstream else 0,
            "recv_bytes": self.client.recv_bytes,
        }


class EdgeForwarder:
    """Forwards a publish on this edge to an origin: one upstream publish per stream."""

    def __init__(self, manager: EdgeManager, stream: LiveStream, client: Client) -> None:
        self.manager = manager
        self.stream = stream
        self.client = client
        self.state = STATE_CONNECTING
        self.origin = ""
        self.upstream: RtmpUpstream | None = None
        self.buffer: list[tuple[int, int, bytes]] = []
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        stream.upstream = self

    def start(self) -> None:
        self.stream.sinks.append(self)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        connection_id.set(self.client.id)
        settings = self.manager.hub.config.vhost(self.stream.vhost)
        origins = list(settings.cluster.origin) if settings is not None else []
        vhost = upstream_vhost(settings, self.stream.vhost) if settings is not None else self.stream.vhost
        errors: list[str] = []
        for origin in origins:
            host, port = split_origin(origin)
            self.origin = f"{host}:{port}"
            try:
                upstream = await open_upstream(
                    host,
                    port,
                    self.stream.app,
                    tc_url_for(host, port, self.stream.app, vhost),
                    self.stream.name,
                    "publish",
                    None,
                    CONNECT_TIMEOUT,
                    self.manager.source_host(),
                )
            except (OSError, TimeoutError, UpstreamError) as exc:
                errors.append(f"{self.origin}: {exc or type(exc).__name__}")
                continue
            self.upstream = upstream
            self.state = "forwarding"
            log.info("edge: forwarding publish %s%s to %s", self.stream.vhost, self.stream.url, self.origin)
            if self.stream.metadata_values is not None:
                upstream.send_metadata(self.stream.metadata_values)
            for type_id, ts, payload in self.buffer:
                upstream.send_media(type_id, ts, payload)
            self.buffer = []
            await upstream.closed
            if self.state == STATE_STOPPING:
                return
            errors.append(f"{self.origin}: {upstream.error or 'connection closed'}")
            break
        reason = "no origin accepted the publish" + (f" ({'; '.join(errors)})" if errors else " (no origin configured)")
        log.warning("edge: publish %s%s rejected: %s", self.stream.vhost, self.stream.url, reason)
        self.state = "failed"
        reject = getattr(self.client, "reject", None)
        if callable(reject):
            reject(reason)
        else:
            self.client.kick()

    # ------------------------------------------------------------ MediaSink

    def on_publish(self) -> None:
        pass

    def on_metadata(self, payload: bytes) -> None:
        pass  # the upstream gets the stream's metadata when it connects

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.send_media(type_id, timestamp_ms, payload)
        elif len(self.buffer) < FORWARD_BUFFER_MESSAGES:
            self.buffer.append((type_id, timestamp_ms, payload))
        else:
            self.dropped += 1

    def on_unpublish(self) -> None:
        self.stop()

    def stop(self) -> None:
        self.state = STATE_STOPPING
        if self in self.stream.sinks:
            self.stream.sinks.remove(self)
        if self._task is not None:
            self._task.cancel()
        if self.upstream is not None:
            self.upstream.close()
        if self.stream.upstream is self:
            self.stream.upstream = None
        self.manager.forwarder_stopped(self)

    def describe(self) -> dict[str, Any]:
        return {"mode": "push", "origin": self.origin, "state": self.state, "dropped": self.dropped}


class EdgeManager(StreamEvents):
    """Edge streams: pull on a play, forward a publish; also the `token_traverse` connect gate."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ingesters: dict[Key, EdgeIngester] = {}
        self.forwarders: dict[Key, EdgeForwarder] = {}

    async def check(self, request: JoinRequest) -> Refusal | None:
        """`token_traverse`: the origin judges each client's connect (its tcUrl carries the token)."""
        if request.action != "connect":
            return None
        cluster = self.hub.config.vhost(request.vhost).cluster
        if cluster.mode != "remote" or not cluster.token_traverse:
            return None
        verdict = "no origin reachable to check the token (token_traverse)"
        for origin in cluster.origin:
            host, port = split_origin(origin)
            try:
                probe = await open_connection(host, port, request.app + request.param, request.tc_url, TRAVERSE_TIMEOUT)
            except (OSError, TimeoutError):
                continue  # unreachable: ask the next origin
            except UpstreamError as exc:
                verdict = f"origin {host}:{port} rejected the connect: {exc}"
                break
            probe.close()
            return None
        return Refusal(ERROR_SYSTEM_SECURITY_DENY, verdict)

    def source_host(self) -> str | None:
        """Connect upstream from the address this node listens on, when it names one."""
        listen = self.hub.config.listen
        host = listen[0].host if listen else ""
        return None if host in ("", "0.0.0.0", "::") else host

    @staticmethod
    def is_edge(stream: LiveStream) -> bool:
        return stream.settings.cluster.mode == "remote"

    def on_play(self, stream: LiveStream, player: Player) -> None:
        if not self.is_edge(stream):
            return
        if stream.publisher is not None and stream.publisher.type != "edge-ingest":
            return  # published on this edge itself: play it locally
        self.ensure_pull(stream).cancel_linger()

    def ensure_pull(self, stream: LiveStream) -> EdgeIngester:
        key = (stream.vhost, stream.app, stream.name)
        ingester = self.ingesters.get(key)
        if ingester is None:
            ingester = self.ingesters[key] = EdgeIngester(self, stream)
            if stream.publisher is None:
                ingester.start()
        return ingester

    def keep_pulling(self, vhost: str, app: str, name: str) -> None:
        """An HLS request on the edge: pull the stream so its playlist appears and stays fresh."""
        stream = self.hub.stream(vhost, app, name)
        if not self.is_edge(stream) or (stream.publisher is not None and stream.upstream is None):
            return
        self.ensure_pull(stream).keep_alive(HLS_KEEPALIVE)

    def on_stop(self, stream: LiveStream, player: Player) -> None:
        ingester = self.ingesters.get((stream.vhost, stream.app, stream.name))
        if ingester is not None and not stream.players:
            ingester.schedule_check()

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        if not self.is_edge(stream) or client.type == "edge-ingest":
            return
        key = (stream.vhost, stream.app, stream.name)
        ingester = self.ingesters.get(key)
        if ingester is not None:
            ingester.stop()
        forwarder = EdgeForwarder(self, stream, client)
        self.forwarders[key] = forwarder
        forwarder.start()

    def metrics(self) -> Iterator[Metric]:
        labels = ["vhost", "app", "stream", "mode", "origin", "state"]
        up = GaugeMetricFamily("tidecast_edge_upstream", "edge upstreams (1 each), by origin and state", labels=labels)
        reconnects = CounterMetricFamily(
            "tidecast_edge_upstream_reconnects", "upstream reconnects of a stream on this edge", labels=labels[:3]
        )
        for ingester in self.ingesters.values():
            s = ingester.stream
            up.add_metric([s.vhost, s.app, s.name, "pull", ingester.origin, ingester.state], 1)
            reconnects.add_metric([s.vhost, s.app, s.name], ingester.reconnects)
        for forwarder in self.forwarders.values():
            s = forwarder.stream
            up.add_metric([s.vhost, s.app, s.name, "push", forwarder.origin, forwarder.state], 1)
        yield up
        yield reconnects

    def ingester_stopped(self, ingester: EdgeIngester) -> None:
        stream = ingester.stream
        key = (stream.vhost, stream.app, stream.name)
        if self.ingesters.get(key) is ingester:
            del self.ingesters[key]
        self.hub.release(stream)

    def forwarder_stopped(self, forwarder: EdgeForwarder) -> None:
        stream = forwarder.stream
        key = (stream.vhost, stream.app, stream.name)
        if self.forwarders.get(key) is forwarder:
            del self.forwarders[key]

    def close(self) -> None:
        for ingester in list(self.ingesters.values()):
            ingester.stop()
        for forwarder in list(self.forwarders.values()):
            forwarder.stop()
