"""The registry of live streams and clients, and the one session API every protocol joins through.

`publish`, `play` and `connect` run the same admission for RTMP, HTTP-FLV and
any later protocol: name checks, the drain state, then the gates (security
rules, signed URLs, HTTP hooks, the origin cluster). They answer with a handle
whose `close()` is idempotent, or with a `Refusal`/`Redirect` value that the
adapter turns into its protocol's answer. Observers (HLS, the edge, recorders,
relays) hear of every stream, publish and play from here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tidecast.live.admission import (
    ERROR_BAD_NAME,
    ERROR_SERVER_DRAINING,
    ERROR_STREAM_NOT_FOUND,
    ERROR_SYSTEM_STREAM_BUSY,
    ERROR_VHOST_NOT_FOUND,
    Gate,
    JoinRequest,
    Observer,
    Redirect,
    Refusal,
)
from tidecast.live.client import Client
from tidecast.live.limits import DEFAULT_VHOST
from tidecast.live.names import check_target, sanitize
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream, Scheduler

if TYPE_CHECKING:
    from tidecast.config import Config, Vhost

__all__ = ["DEFAULT_VHOST", "Hub", "PlayTicket", "Publication", "StreamEvents", "Subscription", "Target"]

log = logging.getLogger("tidecast.live")


class Target:
    """What a client asked for: the vhost as requested (host or ?vhost=), app, stream, query."""

    __slots__ = ("app", "query", "stream", "vhost")

    def __init__(self, vhost: str, app: str, stream: str, query: str = "") -> None:
        self.vhost = vhost
        self.app = app
        self.stream = stream
        self.query = query

    @property
    def url(self) -> str:
        return f"/{self.app}/{self.stream}"


class StreamEvents:
    """Base for observers of the hub: override what you need; each call must be quick and never raise."""

    def on_stream_created(self, stream: LiveStream) -> None:
        pass

    def on_stream_removed(self, stream: LiveStream) -> None:
        pass

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        pass

    def on_unpublish(self, stream: LiveStream, client: Client) -> None:
        pass

    def on_play(self, stream: LiveStream, player: Player) -> None:
        pass

    def on_stop(self, stream: LiveStream, player: Player) -> None:
        pass


class Publication:
    """A publisher's hold on a stream; `close()` unpublishes once."""

    __slots__ = ("client", "hub", "request", "stream")

    def __init__(self, hub: Hub, stream: LiveStream, client: Client, request: JoinRequest) -> None:
        self.hub = hub
        self.stream = stream
        self.client = client
        self.request = request

    def close(self) -> None:
        hub, self.hub = self.hub, None  # type: ignore[assignment]
        if hub is not None:
            hub._unpublish(self)


class Subscription:
    """A player's place in a stream; `close()` leaves once."""

    __slots__ = ("hub", "player", "request", "stream")

    def __init__(self, hub: Hub, stream: LiveStream, player: Player, request: JoinRequest) -> None:
        self.hub = hub
        self.stream = stream
        self.player = player
        self.request = request

    def close(self) -> None:
        hub, self.hub = self.hub, None  # type: ignore[assignment]
        if hub is not None:
            hub._stop(self)


class PlayTicket:
    """An admitted play, not joined yet: the adapter answers its client first, then `start()`s."""

    __slots__ = ("hub", "player", "request", "target")

    def __init__(self, hub: Hub, target: Target, player: Player, request: JoinRequest) -> None:
        self.hub = hub
        self.target = target
        self.player = player
        self.request = request

    def start(self) -> Subscription:
        return self.hub._start_play(self)


class Hub:
    def __init__(self, config: Config, scheduler: Scheduler, server_id: str = "") -> None:
        self.config = config
        self.scheduler = scheduler
        self.server_id = server_id
        self.streams: dict[tuple[str, str, str], LiveStream] = {}
        self.clients: dict[str, Client] = {}
        self.departed_send_bytes = 0
        self.departed_recv_bytes = 0
        self.accepting = True  # False once a drain closed the media listeners
        self.gates: list[Gate] = []
        self.observers: list[StreamEvents] = []
        self.notified: list[Observer] = []
        self.refusals = 0

    # ------------------------------------------------------------ settings

    def vhost_settings(self, vhost: str) -> Vhost:
        return self.config.vhost(vhost)

    def chunk_size(self, vhost: Vhost) -> int:
        return vhost.chunk_size or self.config.chunk_size

    # ------------------------------------------------------------ streams

    def find(self, vhost: str, app: str, name: str) -> LiveStream | None:
        return self.streams.get((vhost, app, name))

    def stream(self, vhost: str, app: str, name: str) -> LiveStream:
        """The stream of that (configured) vhost, created on first use."""
        key = (vhost, app, name)
        stream = self.streams.get(key)
        if stream is None:
            settings = self.config.vhost(vhost)
            stream = LiveStream(vhost, app, name, settings, self.chunk_size(settings), self.scheduler)
            self.streams[key] = stream
            for observer in self.observers:
                observer.on_stream_created(stream)
        return stream

    def release(self, stream: LiveStream) -> None:
        """Forget a stream nobody publishes or plays."""
        if stream.idle and self.streams.get((stream.vhost, stream.app, stream.name)) is stream:
            del self.streams[(stream.vhost, stream.app, stream.name)]
            for observer in self.observers:
                observer.on_stream_removed(stream)

    # ------------------------------------------------------------ clients

    def register(self, client: Client) -> None:
        self.clients[client.id] = client

    def unregister(self, client: Client) -> None:
        if self.clients.pop(client.id, None) is not None:
            self.departed_send_bytes += client.send_bytes
            self.departed_recv_bytes += client.recv_bytes

    def total_bytes(self) -> tuple[int, int]:
        """(received, sent) by every client since start."""
        recv = self.departed_recv_bytes + sum(c.recv_bytes for c in self.clients.values())
        send = self.departed_send_bytes + sum(c.send_bytes for c in self.clients.values())
        return recv, send

    # ------------------------------------------------------------ the session API

    def request(self, action: str, client: Client, target: Target | None, protocol: str) -> JoinRequest:
        settings = self.config.vhost(target.vhost if target is not None else client.vhost)
        stream = self.find(settings.name, target.app, target.stream) if target is not None else None
        query = target.query if target is not None else client.query
        return JoinRequest(
            action=action,
            client_id=client.id,
            ip=client.ip,
            vhost=settings.name,
            app=target.app if target is not None else client.app,
            stream=target.stream if target is not None and action != "connect" else "",
            param=f"?{query}" if query else "",
            tc_url=client.tc_url,
            page_url=client.page_url,
            protocol=protocol,
            stream_id=stream.id if stream is not None else "",
            server_id=self.server_id,
        )

    def _precheck(self, target: Target, stream_name: bool, client: Client) -> Refusal | None:
        settings = self.config.vhosts.get(target.vhost) or self.config.vhosts.get(DEFAULT_VHOST)
        if settings is None or not settings.enabled:
            return Refusal(ERROR_VHOST_NOT_FOUND, f"vhost {sanitize(target.vhost)} is not served here")
        reason = check_target(settings.name, target.app, target.stream if stream_name else None)
        if reason is not None:
            return Refusal(ERROR_BAD_NAME, reason)
        if not self.accepting:
            return Refusal(ERROR_SERVER_DRAINING, "this server is draining; connect to another one")
        client.vhost = settings.name
        client.app = target.app
        if stream_name:
            client.query = target.query  # what later notifications (on_dvr, on_stop) carry as `param`
        return None

    async def _gates(self, request: JoinRequest) -> Refusal | Redirect | None:
        for gate in self.gates:
            verdict = await gate.check(request)
            if verdict is not None:
                if isinstance(verdict, Refusal):
                    self.refusals += 1
                return verdict
        return None

    async def connect(self, target: Target, client: Client, protocol: str = "rtmp") -> Refusal | None:
        refusal = self._precheck(target, False, client)
        if refusal is not None:
            return refusal
        verdict = await self._gates(self.request("connect", client, target, protocol))
        if isinstance(verdict, Redirect):
            return None  # redirects apply to plays; a connect gate has no business sending one
        return verdict

    async def publish(self, target: Target, client: Client, protocol: str = "rtmp") -> Publication | Refusal:
        refusal = self._precheck(target, True, client)
        if refusal is not None:
            return refusal
        request = self.request("publish", client, target, protocol)
        verdict = await self._gates(request)
        if verdict is not None:
            return verdict if isinstance(verdict, Refusal) else Refusal(ERROR_SYSTEM_STREAM_BUSY, "publish elsewhere")
        if not self.accepting:
            return Refusal(ERROR_SERVER_DRAINING, "this server is draining; publish to another one")
        # Checked after the gates: another publisher may have taken the name while they ran.
        stream = self.stream(client.vhost, target.app, target.stream)
        if stream.publisher is not None:
            self.release(stream)
            return Refusal(ERROR_SYSTEM_STREAM_BUSY, f"stream {stream.vhost}{stream.url} is already being published")
        request.stream_id = stream.id
        client.stream = stream
        self.register(client)
        stream.on_publish(client)
        for observer in self.observers:
            observer.on_publish(stream, client)
        return Publication(self, stream, client, request)

    async def play(
        self, target: Target, player: Player, protocol: str = "rtmp", require_live: bool = False
    ) -> PlayTicket | Refusal | Redirect:
        """Admit a player; `ticket.start()` then joins it, once the adapter has sent its preamble.

        `require_live`: refuse (not found) rather than wait for a publisher, except on an edge.
        """
        refusal = self._precheck(target, True, player)
        if refusal is not None:
            return refusal
        request = self.request("play", player, target, protocol)
        verdict = await self._gates(request)
        if verdict is not None:
            return verdict
        if not self.accepting:
            return Refusal(ERROR_SERVER_DRAINING, "this server is draining; play from another one")
        settings = self.config.vhost(player.vhost)
        existing = self.find(player.vhost, target.app, target.stream)
        if require_live and settings.cluster.mode != "remote" and (existing is None or existing.idle):
            return Refusal(ERROR_STREAM_NOT_FOUND, f"stream /{target.app}/{target.stream} is not published here")
        return PlayTicket(self, target, player, request)

    def _start_play(self, ticket: PlayTicket) -> Subscription:
        player, target, request = ticket.player, ticket.target, ticket.request
        stream = self.stream(player.vhost, target.app, target.stream)
        request.stream_id = stream.id
        self.register(player)
        stream.add_player(player)
        for observer in self.observers:
            observer.on_play(stream, player)
        return Subscription(self, stream, player, request)

    def closed(self, request: JoinRequest) -> None:
        """A connection that connected has closed (SRS's on_close)."""
        self._notify("close", request)

    def _unpublish(self, publication: Publication) -> None:
        stream, client = publication.stream, publication.client
        if stream.publisher is client:
            stream.on_unpublish()
            for observer in self.observers:
                observer.on_unpublish(stream, client)
        self.unregister(client)
        self.release(stream)
        self._notify("unpublish", publication.request)

    def _stop(self, subscription: Subscription) -> None:
        stream, player = subscription.stream, subscription.player
        stream.remove_player(player)
        for observer in self.observers:
            observer.on_stop(stream, player)
        self.unregister(player)
        self.release(stream)
        self._notify("stop", subscription.request)

    def _notify(self, event: str, request: JoinRequest) -> None:
        for observer in self.notified:
            try:
                observer.on_event(event, request)
            except Exception:
                log.exception("observer of %s failed", event)

    # ------------------------------------------------------------ housekeeping

    def apply_config(self, config: Config) -> None:
        self.config = config
        for stream in self.streams.values():
            stream.apply_settings(config.vhost(stream.vhost))

    def sweep(self) -> None:
        for stream in list(self.streams.values()):
            stream.sweep()
