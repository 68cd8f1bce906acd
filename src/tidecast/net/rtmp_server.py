"""The asyncio adapter between a TCP connection and the sans-I/O RTMP session."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tidecast import SERVER_NAME, __version__
from tidecast.errors import ProtocolError
from tidecast.live.client import Client, new_client_id
from tidecast.live.hub import PublishRejected
from tidecast.live.player import Player, rtmp_batch
from tidecast.live.stream import LiveStream
from tidecast.log import connection_id
from tidecast.net.rtmp_client import UpstreamError, open_connection
from tidecast.net.sockets import media_transport
from tidecast.net.urls import StreamTarget, rtmp_target, split_origin
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message

if TYPE_CHECKING:
    from tidecast.server import Server

log = logging.getLogger("tidecast.rtmp")

TRAVERSE_TIMEOUT = 5.0


class RtmpConnection(asyncio.Protocol):
    """One RTMP client: handshake, commands, then either publishing or playing."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cid = new_client_id()
        self.session = S.RtmpSession(max_message_size=server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.started = time.monotonic()
        self.last_media = self.started
        self.target: StreamTarget | None = None
        self.client: Client | None = None
        self.stream: LiveStream | None = None
        self.vhost_name = "__defaultVhost__"
        self.publishing = False
        self.closed = False
        self.received_any = False
        self.gating = False  # a publish or play waits for a check that asks other nodes

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = media_transport(transport)
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        if not self.server.admit(self):
            self.transport.abort()
            return
        out = self.session.data_to_send()
        if out:
            self.transport.writelines(out)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        token = connection_id.set(self.cid)
        try:
            events = self.session.receive_data(data)
            if self.client is not None:
                self.client.recv_bytes += len(data)
            stream = self.stream
            for event in events:
                if type(event) is Message:
                    if self.publishing and stream is not None:
                        if event.type_id == 8 or event.type_id == 9:
                            stream.on_media(event.type_id, event.timestamp, event.payload)
                        self.last_media = time.monotonic()
                else:
                    self._on_event(event)
                    stream = self.stream
            out = self.session.data_to_send()
            if out and self.transport is not None:
                self.transport.writelines(out)
        except ProtocolError as exc:
            log.warning("client %s: closing RTMP connection, malformed input: %s", self.ip, exc)
            self.close()
        except PublishRejected as exc:
            log.warning("client %s: %s", self.ip, exc)
            self.close()
        finally:
            connection_id.reset(token)

    def connection_lost(self, exc: Exception | None) -> None:
        token = connection_id.set(self.cid)
        try:
            self.closed = True
            self._leave()
            self.server.release(self)
            if not self.received_any and self.server.config.empty_ip_ok:
                return  # a TCP health probe: connect and close, nothing to say
            log.debug("client %s: RTMP connection closed", self.ip)
        finally:
            connection_id.reset(token)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            out = self.session.data_to_send()
            if out:
                self.transport.writelines(out)
            self.transport.close()

    # ------------------------------------------------------------ housekeeping

    def check_timeouts(self, now: float) -> None:
        """Called about once a second by the server."""
        cfg = self.server.config
        if not self.session.handshake_done or self.client is None:
            if now - self.started > cfg.handshake_timeout / 1000.0:
                log.warning(
                    "client %s: closing RTMP connection: no publish or play within %d ms (handshake_timeout)",
                    self.ip,
                    cfg.handshake_timeout,
                )
                self.close()
            return
        if self.publishing and self.stream is not None:
            publish = self.stream.settings.publish
            limit = publish.firstpkt_timeout if self.stream.frames == 0 else publish.normal_timeout
            if now - self.last_media > limit / 1000.0:
                log.warning(
                    "client %s: publisher of %s sent no media for %d ms, closing",
                    self.ip,
                    self.stream.url,
                    limit,
                )
                self.close()

    # ------------------------------------------------------------ commands

    def _on_event(self, event: Any) -> None:
        if isinstance(event, S.ConnectRequest):
            self._on_connect(event)
        elif isinstance(event, S.PublishRequest):
            self._on_publish(event)
        elif isinstance(event, S.PlayRequest):
            self._on_play(event)
        elif isinstance(event, S.Metadata):
            if self.publishing and self.stream is not None:
                self.stream.on_metadata(event.values)
        elif isinstance(event, S.StreamClosed):
            if self.publishing:
                self._leave()
        elif isinstance(event, S.PauseRequest) and isinstance(self.client, Player) and self.stream is not None:
            self.stream.set_paused(self.client, event.paused)
            self.session.pause_notify(event.paused)

    def _on_connect(self, req: S.ConnectRequest) -> None:
        target = rtmp_target(req.tc_url, req.app, "")
        settings = self.server.config.vhost(target.vhost)
        if settings is None or not settings.enabled:
            self.session.reject_connect(f"vhost {target.vhost} is not served here")
            log.warning("client %s: connect rejected: vhost %s is not configured", self.ip, target.vhost)
            self.close()
            return
        self.vhost_name = settings.name
        self.target = target
        cluster = settings.cluster
        if cluster.mode == "remote" and cluster.token_traverse:
            self.gating = True
            self.server.loop.create_task(self._traverse(req, list(cluster.origin)))
            return
        self.session.accept_connect(self.server.hub.chunk_size(settings), self.server_data())
        log.debug("client %s: connect app=%s tcUrl=%s", self.ip, target.app, req.tc_url)

    async def _traverse(self, req: S.ConnectRequest, origins: list[str]) -> None:
        """`token_traverse`: the origin judges the client's connect (its tcUrl carries the token)."""
        verdict: str | None = "no origin reachable to check the token (token_traverse)"
        for origin in origins:
            host, port = split_origin(origin)
            try:
                probe = await open_connection(host, port, req.app, req.tc_url, TRAVERSE_TIMEOUT)
            except (OSError, TimeoutError):
                continue  # unreachable: ask the next origin
            except UpstreamError as exc:
                verdict = f"origin {host}:{port} rejected the connect: {exc}"
                break
            probe.close()
            verdict = None
            break
        self.gating = False
        if self.closed:
            return
        token = connection_id.set(self.cid)
        try:
            settings = self.server.config.vhost(self.vhost_name)
            if verdict is None:
                self.session.accept_connect(self.server.hub.chunk_size(settings), self.server_data())
            else:
                log.warning("client %s: connect rejected: %s", self.ip, verdict)
                self.session.reject_connect(verdict)
                self.server.loop.call_later(0.1, self.close)
            self._flush()
        finally:
            connection_id.reset(token)

    def server_data(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "srs_sig": SERVER_NAME,
            "srs_server": f"{SERVER_NAME.upper()}/{__version__}",
            "srs_license": "MIT",
            "srs_url": "https://github.com/tidecast/tidecast",
            "srs_version": __version__,
            "srs_authors": "the tidecast developers",
            "srs_server_ip": self.server.advertised_ip(),
            "srs_pid": float(os.getpid()),
            "srs_id": self.cid,
        }

    def _resolve(self, name: str) -> StreamTarget:
        req = self.session.connect_request
        if req is None:
            raise ProtocolError("publish or play before connect")
        return rtmp_target(req.tc_url, req.app, name)

    def _new_client(self, kind: str, target: StreamTarget, client: Client | None = None) -> Client:
        c = client or Client(self.cid, self.ip, kind, self.close)
        req = self.session.connect_request
        c.vhost = self.vhost_name
        c.app = target.app
        if req is not None:
            c.tc_url = req.tc_url
            c.page_url = str(req.command_object.get("pageUrl") or "")
            c.swf_url = str(req.command_object.get("swfUrl") or "")
        return c

    def _on_publish(self, req: S.PublishRequest) -> None:
        if self.client is not None or self.gating:
            raise ProtocolError("a second publish or play on one connection")
        target = self._resolve(req.name)
        if self.server.publish_gates:
            self.gating = True
            self.server.loop.create_task(self._gated_publish(target))
            return
        self._start_publish(target)

    async def _gated_publish(self, target: StreamTarget) -> None:
        hub = self.server.hub
        probe = hub.stream(self.vhost_name, target.app, target.stream)
        try:
            reason = await self.server.check_publish_remote(probe, target)
        except Exception:
            log.exception("client %s: publish check for %s failed; allowing it", self.ip, target.url)
            reason = None
        self.gating = False
        hub.release(probe)
        if self.closed:
            return
        token = connection_id.set(self.cid)
        try:
            if reason is not None:
                self.session.reject_publish("NetStream.Publish.BadName", reason)
                log.warning("client %s: publish %s rejected: %s", self.ip, target.url, reason)
                self.close()
                return
            self._start_publish(target)
            self._flush()
        except PublishRejected as exc:
            log.warning("client %s: %s", self.ip, exc)
            self.close()
        finally:
            connection_id.reset(token)

    def _start_publish(self, target: StreamTarget) -> None:
        hub = self.server.hub
        stream = hub.stream(self.vhost_name, target.app, target.stream)
        reason = self.server.check_publish(stream, target)
        if reason is not None:
            self.session.reject_publish("NetStream.Publish.BadName", reason)
            log.warning("client %s: publish %s rejected: %s", self.ip, stream.url, reason)
            hub.release(stream)
            self.close()
            return
        kind = "fmle-publish" if self.session.fcpublish else "flash-publish"
        client = self._new_client(kind, target)
        client.stream = stream
        client.reject = self.reject_publish_late
        self.client = client
        self.stream = stream
        self.publishing = True
        self.last_media = time.monotonic()
        hub.register(client)
        self.session.accept_publish(target.stream)
        self._flush()
        stream.on_publish(client)
        self.server.on_publish(stream, client)
        log.info("client %s: publish %s/%s started", self.ip, self.vhost_name, stream.url.lstrip("/"))

    def reject_publish_late(self, reason: str) -> None:
        """A publish accepted here but refused further on (e.g. no origin took an edge's forward)."""
        if self.closed:
            return
        self.session.reject_publish("NetStream.Publish.Rejected", reason)
        self.close()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _on_play(self, req: S.PlayRequest) -> None:
        if self.client is not None or self.gating:
            raise ProtocolError("a second publish or play on one connection")
        target = self._resolve(req.name)
        if self.server.play_gates:
            self.gating = True
            self.server.loop.create_task(self._gated_play(target))
            return
        self._start_play(target)

    def _asked_host(self) -> str:
        req = self.session.connect_request
        if req is None:
            return ""
        try:
            return urlsplit(req.tc_url).hostname or ""
        except ValueError:
            return ""

    async def _gated_play(self, target: StreamTarget) -> None:
        try:
            redirect = await self.server.check_play(self.vhost_name, target, self._asked_host())
        except Exception:
            log.exception("client %s: play check for %s failed; playing locally", self.ip, target.url)
            redirect = None
        self.gating = False
        if self.closed:
            return
        token = connection_id.set(self.cid)
        try:
            if redirect is not None:
                # SRS's order: Play.Reset/Play.Start first, then the 302 as onStatus.
                self.session.accept_play(target.stream)
                self.session.send_status(redirect)
                self._flush()
                log.info("client %s: play %s redirected to %s", self.ip, target.url, redirect["ex"]["redirect2"])
                self.server.loop.call_later(3.0, self.close)
                return
            self._start_play(target)
        except PublishRejected as exc:
            log.warning("client %s: %s", self.ip, exc)
            self.close()
        finally:
            connection_id.reset(token)

    def _start_play(self, target: StreamTarget) -> None:
        hub = self.server.hub
        stream = hub.stream(self.vhost_name, target.app, target.stream)
        assert self.transport is not None
        player = Player(self.cid, self.ip, "rtmp-play", self.transport, self.close, rtmp_batch)
        self._new_client("rtmp-play", target, player)
        self.client = player
        self.stream = stream
        hub.register(player)
        self.session.accept_play(target.stream)
        self._flush()
        stream.add_player(player)
        self.server.on_play(stream, player)
        log.info("client %s: play %s/%s started", self.ip, self.vhost_name, stream.url.lstrip("/"))

    def _leave(self) -> None:
        """Undo publish or play; idempotent."""
        stream, client = self.stream, self.client
        if stream is None or client is None:
            return
        self.stream = None
        hub = self.server.hub
        if self.publishing:
            self.publishing = False
            if stream.publisher is client:
                stream.on_unpublish()
                self.server.on_unpublish(stream, client)
            log.info("client %s: publish %s stopped", self.ip, stream.url)
        elif isinstance(client, Player):
            stream.remove_player(client)
            self.server.on_stop_play(stream, client)
            log.info("client %s: play %s stopped", self.ip, stream.url)
        hub.unregister(client)
        hub.release(stream)
