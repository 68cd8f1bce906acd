"""The asyncio adapter between a TCP connection and the sans-I/O RTMP session.

Connect, publish and play go through the hub's session API, whose admission may
await (hooks, the origin cluster). While a verdict is pending the connection
stops reading and holds what already arrived, so a client that pipelines its
commands is answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from tidecast import SERVER_NAME, __version__
from tidecast.errors import ProtocolError
from tidecast.live.admission import JoinRequest, Redirect, Refusal
from tidecast.live.client import Client, new_client_id
from tidecast.live.hub import Hub, Publication, Subscription, Target
from tidecast.live.names import sanitize
from tidecast.live.player import Player
from tidecast.log import RateLimitedLogger, connection_id
from tidecast.net import readmerge
from tidecast.net.counted import Admission
from tidecast.net.formats import RTMP
from tidecast.net.sockets import close_transport, media_transport, set_nodelay
from tidecast.net.urls import advertised_ip, rtmp_target
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message
from tidecast.rtmp.constants import MESSAGES_PER_TURN

log = logging.getLogger("tidecast.rtmp")
_error_log = RateLimitedLogger(log)

# How long after a refusal or redirect the connection stays open, so the client reads why.
LINGER_AFTER_REFUSAL = 0.1
LINGER_AFTER_REDIRECT = 3.0
# After FCUnpublish/closeStream a publisher that keeps the connection open is closed after this.
AFTER_UNPUBLISH_TIMEOUT = 5.0


class RtmpConnection(asyncio.Protocol):
    """One RTMP client: handshake, commands, then either publishing or playing."""

    kind = "rtmp"  # its connection budget

    def __init__(self, hub: Hub, admission: Admission) -> None:
        self.hub = hub
        self.admission = admission
        self.cid = new_client_id()
        self.session = S.RtmpSession()
        self.session.max_events = MESSAGES_PER_TURN
        self._turn: asyncio.Handle | None = None  # the next slice of a read that held too many messages
        self._paused_for_backlog = False
        self._merging = False  # merged read: reading paused until ReadMerges resumes it
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.started = time.monotonic()
        self.last_media = self.started
        self.unpublished_at = 0.0
        self.target: Target | None = None
        self.connected: JoinRequest | None = None
        self.publication: Publication | None = None
        self.subscription: Subscription | None = None
        self.closed = False
        self.received_any = False
        self.gating = False  # a verdict is pending: hold input until it comes
        # Both empty tuples until a verdict is pending: a connection holds as few objects as it can, since a
        # full garbage collection walks every one of every connection.
        self._held: tuple[bytes, ...] = ()
        self._pending_events: Sequence[Any] = ()  # events decoded after one that started a verdict

    @property
    def client(self) -> Client | None:
        if self.publication is not None:
            return self.publication.client
        if self.subscription is not None:
            return self.subscription.player
        return None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Kept: asyncio.get_running_loop() costs a getpid() system call on every call in CPython 3.11.
        self._loop = asyncio.get_running_loop()
        self._merges = readmerge.for_loop(self._loop)
        self.transport = media_transport(transport)
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        if not self.admission.admit(self):
            self.transport.abort()
            return
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if self.gating:
            self._held = (*self._held, data)  # rare (while a hook decides) and short: no list kept for it
            return
        token = connection_id.set(self.cid)
        try:
            self._receive(data)
        finally:
            connection_id.reset(token)

    def _receive(self, data: bytes) -> None:
        try:
            session = self.session
            sunk = session.media_sunk
            events = session.receive_data(data)
            if self.publication is not None:
                self.publication.client.recv_bytes += len(data)
                if session.media_sunk != sunk:
                    self.last_media = time.monotonic()
            self._dispatch(events)
            self._flush()
        except ProtocolError as exc:
            log.warning("client %s: closing RTMP connection, malformed input: %s", sanitize(self.ip), exc)
            self.close()
            return
        except Exception:
            _error_log.exception("client %s: closing RTMP connection after an internal error", self.ip)
            self.close()
            return
        self._keep_up()

    def _keep_up(self) -> None:
        """A read held more messages than one turn hands on: the rest next turn, reading paused till then,
        so other connections and timers (merged writes) get the loop in between."""
        transport = self.transport
        if self.gating or transport is None or transport.is_closing():
            return  # a gate resumes reading, and calls this, when its verdict is in
        if self.session.backlogged:
            if not self._paused_for_backlog:
                self._paused_for_backlog = True
                transport.pause_reading()
            if self._turn is None:
                self._turn = self._loop.call_soon(self._next_turn)
            return
        if self._paused_for_backlog:
            self._paused_for_backlog = False
            if not self._merging:
                transport.resume_reading()
        if self.publication is not None and not self._merging:
            self._merge_reads(transport)

    def _merge_reads(self, transport: asyncio.Transport) -> None:
        """`mr on`: after a read, let the kernel gather the publisher's next mr_latency ms before the next one.

        One read then carries dozens of messages instead of one, so the per-read cost (the wake-up, the
        system call, the adapter's bookkeeping) is paid a few times a second instead of once per frame.
        The stream is mr_latency later; min_latency turns it off, as in SRS.
        """
        assert self.publication is not None
        settings = self.publication.stream.settings
        publish = settings.publish
        if not publish.mr or publish.mr_latency <= 0 or settings.min_latency:
            return
        transport.pause_reading()
        self._merging = True
        self._merges.later(publish.mr_latency / 1000.0, self._end_merge)

    def _end_merge(self) -> None:
        self._merging = False
        transport = self.transport
        if self.closed or self.gating or self._paused_for_backlog or transport is None or transport.is_closing():
            return
        transport.resume_reading()

    def _next_turn(self) -> None:
        self._turn = None
        if self.closed or self.gating:
            return
        token = connection_id.set(self.cid)
        try:
            self._receive(b"")
        finally:
            connection_id.reset(token)

    def _dispatch(self, events: Sequence[Any]) -> None:
        """Media to the stream, commands to their handlers; stops at a command that awaits a verdict."""
        publication = self.publication
        on_media = publication.stream.on_media if publication is not None else None
        media = False
        for i, event in enumerate(events):
            if type(event) is Message:
                if on_media is not None:
                    t = event.type_id
                    if t == 8 or t == 9:
                        on_media(t, event.timestamp, event.payload)
                    media = True
                continue
            self._on_event(event)
            publication = self.publication
            on_media = publication.stream.on_media if publication is not None else None
            if self.gating:
                # The rest waits for the verdict; bytes cannot be fed twice, so the decoded events are kept.
                self._pending_events = events[i + 1 :]
                break
        if media:
            self.last_media = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        token = connection_id.set(self.cid)
        try:
            self.closed = True
            if self._turn is not None:
                self._turn.cancel()
                self._turn = None
            self._leave()
            if self.connected is not None:
                self.hub.closed(self.connected)
                self.connected = None
            self.admission.release(self)
            if not self.received_any and self.hub.config.empty_ip_ok:
                return  # a TCP health probe: connect and close, nothing to say
            log.debug("client %s: RTMP connection closed", self.ip)
        finally:
            connection_id.reset(token)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            close_transport(self.transport)

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    # ------------------------------------------------------------ admission, asynchronously

    def _gate(self, verdict: Coroutine[Any, Any, None]) -> None:
        """Run an admission step; input is held (and reading paused) until it is done."""
        self.gating = True
        self._pending_events = ()
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._run_gate(verdict))

    async def _run_gate(self, verdict: Coroutine[Any, Any, None]) -> None:
        try:
            await verdict
        except Exception:
            log.exception("client %s: admission failed; closing the connection", self.ip)
            self.close()
        self.gating = False
        if self.closed:
            return
        token = connection_id.set(self.cid)
        try:
            self._flush()
            events, self._pending_events = self._pending_events, ()
            self._dispatch(events)
            while self._held and not self.gating:
                data, self._held = self._held[0], self._held[1:]
                self._receive(data)
            if self.gating:
                return
            self._flush()
            if self.transport is not None and not self.transport.is_closing():
                self._paused_for_backlog = False
                self.transport.resume_reading()
                self._keep_up()
        except ProtocolError as exc:
            log.warning("client %s: closing RTMP connection, malformed input: %s", self.ip, exc)
            self.close()
        finally:
            connection_id.reset(token)

    # ------------------------------------------------------------ housekeeping

    def check_timeouts(self, now: float) -> None:
        """Called about once a second by the server."""
        cfg = self.hub.config
        if not self.session.handshake_done or (self.publication is None and self.subscription is None):
            if self.gating:
                return
            if self.unpublished_at and now - self.unpublished_at > AFTER_UNPUBLISH_TIMEOUT:
                log.info("client %s: closing RTMP connection idle after unpublish", self.ip)
                self.close()
                return
            if not self.unpublished_at and now - self.started > cfg.handshake_timeout / 1000.0:
                log.warning(
                    "client %s: closing RTMP connection: no publish or play within %d ms (handshake_timeout)",
                    self.ip,
                    cfg.handshake_timeout,
                )
                self.close()
            return
        publication = self.publication
        if publication is not None:
            stream = publication.stream
            publish = stream.settings.publish
            limit = publish.firstpkt_timeout if stream.frames == 0 else publish.normal_timeout
            if publish.mr and not stream.settings.min_latency:
                limit += publish.mr_latency  # a merged read leaves the socket unread that long on purpose
            if now - self.last_media > limit / 1000.0:
                log.warning("client %s: publisher of %s sent no media for %d ms, closing", self.ip, stream.url, limit)
                self.close()

    # ------------------------------------------------------------ commands

    def _on_event(self, event: Any) -> None:
        if isinstance(event, S.ConnectRequest):
            self._on_connect(event)
        elif isinstance(event, S.PublishRequest):
            self._check_single()
            self._gate(self._publish(self._resolve(event.name)))
        elif isinstance(event, S.PlayRequest):
            self._check_single()
            self._gate(self._play(self._resolve(event.name)))
        elif isinstance(event, S.Metadata):
            if self.publication is not None:
                self.publication.stream.on_metadata(event.values)
        elif isinstance(event, S.StreamClosed):
            if self.publication is not None:
                self._leave()
                self.unpublished_at = time.monotonic()
        elif isinstance(event, S.PauseRequest) and self.subscription is not None:
            self.subscription.stream.set_paused(self.subscription.player, event.paused)
            self.session.pause_notify(event.paused)

    def _check_single(self) -> None:
        if self.publication is not None or self.subscription is not None or self.unpublished_at:
            raise ProtocolError("a second publish or play on one connection")

    def _resolve(self, name: str) -> Target:
        req = self.session.connect_request
        if req is None:
            raise ProtocolError("publish or play before connect")
        found = rtmp_target(req.tc_url, req.app, name)
        found.stream = _strip_flv(found.stream)
        return found

    def _describe(self, client: Client) -> Client:
        req = self.session.connect_request
        if req is not None:
            client.tc_url = req.tc_url
            client.page_url = _text(req.command_object.get("pageUrl"))
            client.swf_url = _text(req.command_object.get("swfUrl"))
        if self.target is not None:
            client.vhost = self.target.vhost
            client.app = self.target.app
            client.query = self.target.query
        return client

    def _on_connect(self, req: S.ConnectRequest) -> None:
        self.target = rtmp_target(req.tc_url, req.app, "")
        self._gate(self._connect(req, self.target))

    async def _connect(self, req: S.ConnectRequest, target: Target) -> None:
        client = self._describe(Client(self.cid, self.ip, "rtmp-connect", self.close))
        refusal = await self.hub.connect(target, client)
        if self.closed:
            return
        if refusal is not None:
            log.warning("client %s: connect rejected: %s", self.ip, refusal.reason)
            self.session.reject_connect(refusal.reason)
            self._close_soon(LINGER_AFTER_REFUSAL)
            return
        self.target.vhost = client.vhost  # type: ignore[union-attr]
        self.connected = self.hub.request("connect", client, None, "rtmp")
        settings = self.hub.vhost_settings(client.vhost)
        self.session.accept_connect(self.hub.chunk_size(settings), self.server_data())
        log.debug("client %s: connect app=%s tcUrl=%s", self.ip, sanitize(target.app), sanitize(req.tc_url))

    def _close_soon(self, delay: float) -> None:
        self._flush()
        asyncio.get_running_loop().call_later(delay, self.close)

    def server_data(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "srs_sig": SERVER_NAME,
            "srs_server": f"{SERVER_NAME.upper()}/{__version__}",
            "srs_license": "MIT",
            "srs_url": "https://github.com/tidecast/tidecast",
            "srs_version": __version__,
            "srs_authors": "the tidecast developers",
            "srs_server_ip": advertised_ip(self.hub.config),
            "srs_pid": float(os.getpid()),
            "srs_id": self.cid,
        }

    async def _publish(self, target: Target) -> None:
        kind = "fmle-publish" if self.session.fcpublish else "flash-publish"
        client = self._describe(Client(self.cid, self.ip, kind, self.close))
        client.reject = self.reject_publish_late
        result = await self.hub.publish(target, client)
        if isinstance(result, Refusal):
            self.session.reject_publish("NetStream.Publish.BadName", result.reason)
            log.warning("client %s: publish %s rejected: %s", self.ip, sanitize(target.url), result.reason)
            self._close_soon(LINGER_AFTER_REFUSAL)
            return
        if self.closed:
            result.close()
            return
        self.publication = result
        self.last_media = time.monotonic()
        self.session.accept_publish(target.stream)
        self.session.media_sink = result.stream.on_media
        log.info("client %s: publish %s/%s started", self.ip, client.vhost, result.stream.url.lstrip("/"))

    def reject_publish_late(self, reason: str) -> None:
        """A publish accepted here but refused further on (e.g. no origin took an edge's forward)."""
        if self.closed:
            return
        self.session.reject_publish("NetStream.Publish.Rejected", reason)
        self.close()

    def _set_nodelay(self, on: bool) -> None:
        # A bound method rather than a partial: one object per player instead of two for the collector.
        if self.transport is not None:
            set_nodelay(self.transport, on)

    async def _play(self, target: Target) -> None:
        assert self.transport is not None
        player = self._describe(Player(self.cid, self.ip, "rtmp-play", self.transport, self.close, RTMP))
        assert isinstance(player, Player)
        player.set_nodelay = self._set_nodelay
        result = await self.hub.play(target, player, "rtmp")
        if isinstance(result, Refusal):
            self.session.reject_play("NetStream.Play.Rejected", result.reason)
            log.warning("client %s: play %s rejected: %s", self.ip, sanitize(target.url), result.reason)
            self._close_soon(LINGER_AFTER_REFUSAL)
            return
        if isinstance(result, Redirect):
            # SRS's order: Play.Reset/Play.Start first, then the 302 as onStatus.
            self.session.accept_play(target.stream)
            self.session.send_status(_redirect_status(result, target))
            log.info("client %s: play %s redirected to %s:%d", self.ip, target.url, result.host, result.port)
            self._close_soon(LINGER_AFTER_REDIRECT)
            return
        if self.closed:
            return
        self.session.accept_play(target.stream)
        self._flush()  # Play.Start before the join burst
        self.subscription = subscription = result.start()
        log.info("client %s: play %s/%s started", self.ip, player.vhost, subscription.stream.url.lstrip("/"))

    def _leave(self) -> None:
        """Undo publish or play; idempotent."""
        publication, self.publication = self.publication, None
        self.session.media_sink = None
        if publication is not None:
            publication.close()
            log.info("client %s: publish %s stopped", self.ip, publication.stream.url)
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            subscription.close()
            log.info("client %s: play %s stopped", self.ip, subscription.stream.url)


def _redirect_status(redirect: Redirect, target: Target) -> dict[str, Any]:
    base = f"rtmp://{redirect.host}:{redirect.port}/{target.app}"
    query = f"?vhost={redirect.vhost}"
    return {
        "level": "error",
        "code": "NetConnection.Connect.Rejected",
        "description": "RTMP 302 Redirect",
        "ex": {"code": 302, "redirect": base, "redirect2": f"{base}/{target.stream}{query}"},
    }


def _strip_flv(name: str) -> str:
    """An SRS edge asks its origin for `NAME.flv` when its first viewer came over HTTP-FLV: it is NAME."""
    return name[:-4] if name.endswith(".flv") else name


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
