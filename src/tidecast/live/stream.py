"""A live stream: one publisher, its sequence headers and GOP cache, its players.

Everything a publisher sends passes through `on_media` once: timestamps are
corrected here (so every player gets the same bytes), packets are cached for
late joiners, and pending packets leave in merged writes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from tidecast import SERVER_NAME, __version__
from tidecast.codec import amf0
from tidecast.codec.audio import classify_audio
from tidecast.codec.video import classify
from tidecast.live.client import Client
from tidecast.live.limits import CONGESTED_BYTES, DIRECT_BURST_BYTES, GOP_CACHE_BYTES, SEND_TIMEOUT_S
from tidecast.live.packet import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, Packet
from tidecast.live.player import OutputFormat, Player

if TYPE_CHECKING:
    from tidecast.config import Vhost

MAX_JITTER_MS: Final = 250
DEFAULT_FRAME_MS: Final = 10
# Distinct player timelines per stream: each costs a few header bytes per packet and a batch per flush.
# Past this, a joiner shares the newest timeline and starts a little after 0.
MAX_TIMELINES: Final = 32
# A joiner whose first packet is at most this far into the newest timeline shares it (starting there, not
# at 0): a crowd joining over a few seconds costs one batch per flush, not one per keyframe it joined on.
TIMELINE_SHARE_MS: Final = 5000
_stream_ids = itertools.count(1)


class MediaSink(Protocol):
    """Something besides players that consumes a stream: the HLS muxer, a recorder, a forward."""

    def on_publish(self) -> None: ...

    def on_metadata(self, payload: bytes) -> None:
        """An onMetaData script-data body (AMF0) as relayed to players."""
        ...

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        """An audio (8) or video (9) FLV tag body; timestamps already jitter-corrected."""
        ...

    def on_unpublish(self) -> None: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock and timers the adapter lends the live core (an asyncio loop fits as it is)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle: ...


class TimeJitter:
    """SRS's `time_jitter`: full (monotonic, from 0, big jumps smoothed), zero, off."""

    __slots__ = ("base", "gap", "last_correct", "last_time", "mode")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.last_time: int | None = None
        self.last_correct = 0
        self.base: int | None = None
        self.gap = 0

    def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.last_time = None  # only `full` keeps it: the stream's fast path takes a set one for `full`

    def rebase(self) -> None:
        """A new source: in `full` mode continue from the last output time, so
        players that stay connected (edge failover, republish) see no jump back."""
        self.last_time = None
        self.base = None
        # One frame's gap so the first new frame never repeats the last timestamp.
        self.gap = DEFAULT_FRAME_MS if self.last_correct else 0

    def correct(self, ts: int) -> int:
        mode = self.mode
        if mode == "full":
            last = self.last_time
            if last is None:
                delta = self.gap
            else:
                delta = ts - last
                if delta < -MAX_JITTER_MS or delta > MAX_JITTER_MS:
                    delta = DEFAULT_FRAME_MS
            if delta < 0:
                # Small backward steps (interleaving, encoder jitter) would make DTS go back in HLS and DVR.
                delta = 0
            corrected = self.last_correct + delta
            self.last_correct = corrected
            self.last_time = ts
            return corrected
        if mode == "zero":
            if self.base is None:
                self.base = ts
            return max(0, ts - self.base)
        return ts


class LiveStream:
    def __init__(self, vhost: str, app: str, name: str, settings: Vhost, chunk_size: int, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.id = f"vid-{next(_stream_ids)}"
        self.vhost = vhost
        self.app = app
        self.name = name
        self.settings = settings
        self._read_settings()
        self.chunk_size = chunk_size
        self.created = time.monotonic()
        self.publisher: Client | None = None
        self.players: list[Player] = []
        self.sinks: list[MediaSink] = []
        # What an output format keeps for the stream's lifetime (net/mp4: one shared Mp4Format), by the
        # format's name; it goes with the stream.
        self.format_state: dict[str, object] = {}
        self.metadata: Packet | None = None
        self.metadata_values: Any = None
        self.video_sh: Packet | None = None
        self.audio_sh: Packet | None = None
        # From the last keyframe on: Packets, then what came while nobody played, kept flat in _gop_raw
        # as type id, timestamp, payload, keyframe, ... (no object per message for the garbage collector
        # to walk: at 1,000 streams a tuple each made its young-generation passes take 40 ms).
        # `gop_packets()` turns the raw part into Packets when a player joins.
        self.gop: list[Packet] = []
        self._gop_raw: list[Any] = []
        self.gop_frames = 0
        self.gop_bytes = 0
        self.pending: list[Packet] = []
        self.last_timestamp = 0  # of the newest media packet, after jitter correction
        # (id of a player format, base) -> [that format on the timeline starting at base, players on it]
        self.timelines: dict[tuple[int, int], list[Any]] = {}
        self._pending_since = 0.0
        self._timer: TimerHandle | None = None
        self.jitter = TimeJitter(settings.play.time_jitter)
        self.frames = 0
        self.recv_bytes = 0
        self.dropped_frames = 0
        self._codecs: tuple[Packet | None, Packet | None, dict[str, Any] | None, dict[str, Any] | None] | None = None
        self.sent_by_departed = 0
        self.publish_count = 0
        self.upstream: Any = None  # set by the edge for the API's view

    # ------------------------------------------------------------ identity

    @property
    def url(self) -> str:
        return f"/{self.app}/{self.name}"

    @property
    def active(self) -> bool:
        return self.publisher is not None

    def apply_settings(self, settings: Vhost) -> None:
        if settings.tcp_nodelay != self.settings.tcp_nodelay:
            for player in self.players:
                if player.set_nodelay is not None:
                    player.set_nodelay(settings.tcp_nodelay)
        self.settings = settings
        self._read_settings()
        self.jitter.set_mode(settings.play.time_jitter)
        if not settings.play.gop_cache:
            self._drop_gop()

    def _read_settings(self) -> None:
        """What every media message consults, read once per (re)load instead of through three attributes."""
        play = self.settings.play
        self._gop_cache = play.gop_cache
        self._gop_max_frames = play.gop_cache_max_frames
        if self.settings.min_latency:
            self._mw_latency, self._mw_msgs = 0, 0
        else:
            self._mw_latency, self._mw_msgs = play.mw_latency, play.mw_msgs
        # A sparse stream (audio only, a stalled encoder) still leaves within about one merge window of wall time.
        self._mw_wait = max(self._mw_latency, 20) / 1000.0

    def gop_packets(self) -> list[Packet]:
        """The GOP cache as Packets, made once from what was kept raw while nobody played (so players
        joining together share each packet's serializations)."""
        raw = self._gop_raw
        if raw:
            chunk = self.chunk_size
            self.gop.extend(Packet(raw[i], raw[i + 1], raw[i + 2], chunk, raw[i + 3]) for i in range(0, len(raw), 4))
            raw.clear()
        return self.gop

    @property
    def gop_first_payload(self) -> bytes | None:
        """The GOP's keyframe, without making Packets."""
        if self.gop:
            return self.gop[0].payload
        return self._gop_raw[2] if self._gop_raw else None

    def _drop_gop(self) -> None:
        self.gop = []
        self._gop_raw = []
        self.gop_frames = 0
        self.gop_bytes = 0

    # ------------------------------------------------------------ publisher side

    def on_publish(self, publisher: Client) -> None:
        self.publisher = publisher
        self.publish_count += 1
        self.jitter.rebase()
        self._drop_gop()
        self.metadata = self.video_sh = self.audio_sh = None
        for sink in self.sinks:
            sink.on_publish()
        if self.publish_count > 1:
            self._notify_players("NetStream.Play.PublishNotify", f"{self.name} is now published.")

    def on_source_restart(self) -> None:
        """The edge's upstream changed: forget the old GOP; new headers will follow."""
        self.flush()
        self._drop_gop()
        self.jitter.rebase()

    def on_unpublish(self) -> None:
        self.flush()
        self.publisher = None
        self._drop_gop()
        self.metadata = self.video_sh = self.audio_sh = None
        for sink in self.sinks:
            sink.on_unpublish()
        self._notify_players("NetStream.Play.UnpublishNotify", f"{self.name} is now unpublished.")

    def _notify_players(self, code: str, description: str) -> None:
        built: dict[OutputFormat, bytes] = {}
        for player in self.players:
            if player.in_sync:
                fmt = player.format
                data = built.get(fmt)
                if data is None:
                    data = built[fmt] = fmt.notice(code, description, self.chunk_size)
                player.write(data)

    def on_metadata(self, values: Any) -> None:
        if isinstance(values, dict):
            values = amf0.EcmaArray(values)
            # A live stream has no duration; players that trust `duration: 0` stop at once.
            if values.get("duration") in (0, 0.0):
                del values["duration"]
            values["server"] = f"{SERVER_NAME.upper()}/{__version__}"
            values["server_version"] = __version__
        self.metadata_values = values
        payload = amf0.encode("onMetaData", values)
        pkt = Packet(TAG_SCRIPT, 0, payload, self.chunk_size)
        self.metadata = pkt
        for sink in self.sinks:
            sink.on_metadata(payload)
        self._queue(pkt)

    def on_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        # Every published message passes here: the common cases are tested inline, without calls.
        jitter = self.jitter
        last = jitter.last_time
        # Only `full` sets last_time (set_mode clears it), so a set one means full mode.
        if last is not None and 0 <= timestamp - last <= MAX_JITTER_MS:
            # A frame a little after the last one: what TimeJitter.correct would do, without the call.
            ts = jitter.last_correct + timestamp - last
            jitter.last_correct = ts
            jitter.last_time = timestamp
        else:
            ts = jitter.correct(timestamp)
        self.last_timestamp = ts
        self.frames += 1
        size = len(payload)
        self.recv_bytes += size
        keyframe = False
        seq = False
        if type_id == TAG_VIDEO:
            b0 = payload[0] if size else 0
            if (b0 == 0x27 or b0 == 0x17) and size >= 5:
                # Legacy H.264, an inter or key frame: nearly all video there is.
                packet_type = payload[1]
                keyframe = b0 == 0x17 and packet_type == 1
                seq = packet_type == 0
            else:
                tag = classify(payload)  # enhanced RTMP (HEVC, AV1, VP9), the rest of legacy FLV
                seq, keyframe = tag.is_sequence_header, tag.is_keyframe
        elif type_id == TAG_AUDIO:
            if size >= 2 and payload[0] >> 4 == 10:
                seq = payload[1] == 0  # AAC
            else:
                seq = classify_audio(payload).is_sequence_header
        if seq:
            pkt: Packet | None = Packet(type_id, ts, payload, self.chunk_size, keyframe, True)
            if type_id == TAG_VIDEO:
                self.video_sh = pkt
            else:
                self.audio_sh = pkt
        else:
            pkt = Packet(type_id, ts, payload, self.chunk_size, keyframe) if self.players else None
            if self._gop_cache:
                if keyframe:
                    self.gop.clear()
                    raw = self._gop_raw
                    raw.clear()
                    if pkt is None:
                        raw += (type_id, ts, payload, True)
                    else:
                        self.gop.append(pkt)
                    self.gop_frames = 1
                    self.gop_bytes = size
                elif self.gop_frames:
                    if pkt is None:
                        raw = self._gop_raw
                        raw += (type_id, ts, payload, False)
                    else:
                        self.gop.append(pkt)
                    self.gop_frames += 1
                    self.gop_bytes += size
                    if self.gop_frames > self._gop_max_frames or self.gop_bytes > GOP_CACHE_BYTES:
                        self._drop_gop()
        if self.sinks:
            for sink in self.sinks:
                sink.on_message(type_id, ts, payload)
        if pkt is not None and self.players:  # what _queue does, without the call for a stream nobody plays
            self._window(pkt)
        elif self.pending:
            self.flush()

    # ------------------------------------------------------------ merged writes

    def _queue(self, pkt: Packet) -> None:
        if self.players:
            self._window(pkt)
        elif self.pending:
            # Nobody to write to (an origin whose viewers read HLS files, a stream only recorded): no merge
            # window, no timer. A player joining now starts from the GOP cache and the cached headers.
            self.flush()  # what the last players to leave had queued: the next joiner must not get it late

    def _window(self, pkt: Packet) -> None:
        """Into the players' merge window: out at once when it spans mw_latency, else when the timer fires."""
        pending = self.pending
        pending.append(pkt)
        if len(pending) > self._mw_msgs and pkt.timestamp - pending[0].timestamp >= self._mw_latency:
            self.flush()
        elif self._timer is None:
            self._timer = self.scheduler.call_later(self._mw_wait, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self.pending
        if not pending:
            return
        self.pending = []
        queue_ms = self.settings.play.queue_length * 1000.0
        shared: dict[OutputFormat, bytes] = {}
        gone: list[Player] = []
        for player in self.players:
            transport = player.transport
            if transport.is_closing():
                gone.append(player)
                continue
            if player.in_sync:
                if transport.get_write_buffer_size() <= CONGESTED_BYTES:
                    fmt = player.format
                    data = shared.get(fmt)
                    if data is None:
                        data = shared[fmt] = fmt.batch(pending)
                    transport.write(data)
                    player.send_bytes += len(data)
                    continue
                player.in_sync = False
                player.congested_since = self.scheduler.time()
            if player.paused:
                continue
            before = player.dropped
            player.enqueue(pending, queue_ms)
            self.dropped_frames += player.dropped - before
            if player.try_catch_up():
                player.in_sync = True
                player.congested_since = 0.0
        for player in gone:
            self.remove_player(player)

    # ------------------------------------------------------------ players

    def add_player(self, player: Player) -> None:
        """Send the join burst (metadata, headers, GOP), then keep the player in sync.

        The burst leaves out what is still pending: the player gets that with
        everyone else at the next flush. (Flushing here instead made every join
        write to every player: thousands joining at once cost O(N²) writes.)
        """
        if player.set_nodelay is not None:
            player.set_nodelay(self.settings.tcp_nodelay)
        burst: list[Packet] = [p for p in (self.metadata, self.video_sh, self.audio_sh) if p is not None]
        gop = self.gop_packets()
        if gop and self.pending:
            pending = {id(p) for p in self.pending}
            gop = [p for p in gop if id(p) not in pending]
        if self.settings.play.time_jitter != "off":
            self._join_timeline(player, gop[0].timestamp if gop else self._next_timestamp())
        if gop:
            burst.extend(gop)
            player.in_sync = True
            if self.gop_bytes > DIRECT_BURST_BYTES:
                # A big GOP leaves through the player's budgeted queue, as its socket drains:
                # a hundred players that never read must not each hold a copy of it.
                player.in_sync = False
                player.congested_since = self.scheduler.time()
                player.queue.extend(burst)
                player.queued_bytes = sum(len(p.payload) for p in burst)
                player.stream = self
                self.players.append(player)
                if player.try_catch_up():
                    player.in_sync = True
                    player.congested_since = 0.0
                return
        elif self.gop_frames or self.video_sh is not None or self.publisher is None:
            # No cached keyframe to start from (or it is still pending): the player
            # catches up on its own, dropping video until a keyframe.
            player.wait_keyframe = self.video_sh is not None or bool(self.gop_frames)
            player.in_sync = not player.wait_keyframe
        else:
            player.in_sync = True
        player.stream = self
        if burst:
            player.write(player.format.batch(burst))
        self.players.append(player)

    def _next_timestamp(self) -> int:
        """Stream time of the first media packet a player joining now will get."""
        for p in self.pending:
            if p.type_id != TAG_SCRIPT and not p.sequence_header:
                return p.timestamp
        return self.last_timestamp

    def _join_timeline(self, player: Player, base: int) -> None:
        """Start the player's timestamps near 0, as SRS does, sharing bytes with players who joined with it."""
        source = player.format
        key = (id(source), base)
        entry = self.timelines.get(key)
        if entry is None:
            # The newest timeline that starts no later than `base` keeps timestamps from going negative.
            own = [k for k in self.timelines if k[0] == key[0]]
            earlier = [k for k in own if k[1] <= base]
            newest = max(earlier, key=lambda k: k[1]) if earlier else None
            if newest is not None and base - newest[1] <= TIMELINE_SHARE_MS:
                key = newest
            elif own and len(self.timelines) >= MAX_TIMELINES:
                key = newest if newest is not None else min(own, key=lambda k: k[1])
            entry = self.timelines.get(key)
            if entry is None:
                entry = self.timelines[key] = [source.at(base), 0]
        entry[1] += 1
        player.format = entry[0]
        player.timeline = key

    def _leave_timeline(self, player: Player) -> None:
        key = player.timeline
        if key is None:
            return
        player.timeline = None
        entry = self.timelines.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self.timelines[key]

    def remove_player(self, player: Player) -> None:
        try:
            self.players.remove(player)
        except ValueError:
            return
        self._leave_timeline(player)
        player.stream = None
        self.sent_by_departed += player.send_bytes
        if player.on_leave is not None:
            player.on_leave()

    def set_paused(self, player: Player, paused: bool) -> None:
        player.paused = paused
        if paused:
            player.in_sync = False
            player.queue.clear()
        else:
            player.wait_keyframe = self.video_sh is not None

    def sweep(self) -> None:
        """Drop players whose sockets closed while no media flowed; close those that read nothing for too long."""
        now = self.scheduler.time()
        for player in list(self.players):
            if player.transport.is_closing():
                self.remove_player(player)
            elif player.congested_since and now - player.congested_since > SEND_TIMEOUT_S:
                if player.transport.get_write_buffer_size() > CONGESTED_BYTES // 4:
                    player.kick()
                else:
                    player.congested_since = now  # it reads, slowly: give it another window

    @property
    def send_bytes(self) -> int:
        return self.sent_by_departed + sum(p.send_bytes for p in self.players)

    @property
    def idle(self) -> bool:
        return self.publisher is None and not self.players

    def describe_codecs(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The codecs as the API shows them; kept while the sequence headers stay (the API asks for every
        stream on every poll, and parsing an SPS each time adds up)."""
        from tidecast.live.codecs import describe_audio, describe_video

        known = self._codecs
        if known is not None and known[0] is self.video_sh and known[1] is self.audio_sh:
            return known[2], known[3]
        keyframe = self.gop_first_payload  # VP9 carries its size only in keyframes
        video = describe_video(self.video_sh.payload, keyframe) if self.video_sh else None
        audio = describe_audio(self.audio_sh.payload) if self.audio_sh else None
        if video is None or video.get("width"):  # a size still to come from a keyframe: ask again next time
            self._codecs = (self.video_sh, self.audio_sh, video, audio)
        return video, audio
