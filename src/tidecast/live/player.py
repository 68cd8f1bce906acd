"""A player's side of the fan-out: in sync with the stream, or catching up.

A player in sync receives the stream's shared batch: the same bytes object
written to every in-sync player of that format. A player that falls behind
(its socket buffer is full) leaves sync and queues packets of its own; the
queue is bounded in media time by `queue_length` and in bytes, past which
everything but the sequence headers is dropped and the player waits for the
next keyframe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from tidecast.live.client import Client
from tidecast.live.limits import CATCH_UP_BYTES, CONGESTED_BYTES, PLAYER_QUEUE_BYTES
from tidecast.live.packet import TAG_SCRIPT, TAG_VIDEO, Packet


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class OutputFormat(Protocol):
    """How one protocol frames packets for its players; `net/` implements it."""

    def batch(self, packets: Iterable[Packet]) -> bytes: ...

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        """A stream event (PublishNotify, UnpublishNotify) for this format's players; b"" when it has none."""
        ...

    def at(self, base: int) -> OutputFormat:
        """This format for players whose timeline starts at stream time `base` (self for 0, or when
        the format keeps no timestamps of its own)."""
        ...


class Player(Client):
    __slots__ = (
        "congested_since",
        "dropped",
        "format",
        "in_sync",
        "on_leave",
        "paused",
        "queue",
        "queued_bytes",
        "set_nodelay",
        "timeline",
        "transport",
        "wait_keyframe",
    )

    def __init__(
        self,
        cid: str,
        ip: str,
        kind: str,
        transport: Transport,
        closer: Callable[[], None],
        fmt: OutputFormat,
    ) -> None:
        super().__init__(cid, ip, kind, closer)
        self.transport = transport
        self.format = fmt
        self.in_sync = False
        self.wait_keyframe = False
        self.paused = False
        self.queue: deque[Packet] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        self.congested_since = 0.0  # when it last left sync; 0 while in sync
        self.on_leave: Callable[[], None] | None = None
        self.timeline: tuple[int, int] | None = None  # the stream's key of the timeline it shares
        # Turns Nagle's algorithm off (True) or on for the player's socket: the vhost's `tcp_nodelay`,
        # applied on joining and on reload. None for a player without a TCP socket of its own.
        self.set_nodelay: Callable[[bool], None] | None = None

    def write(self, data: bytes) -> None:
        if data:
            self.transport.write(data)
            self.send_bytes += len(data)

    def enqueue(self, packets: Iterable[Packet], queue_length_ms: float) -> None:
        queue = self.queue
        added = 0
        for pkt in packets:
            if self.wait_keyframe and pkt.type_id == TAG_VIDEO:
                if not pkt.keyframe and not pkt.sequence_header:
                    self.dropped += 1
                    continue
                if pkt.keyframe:
                    self.wait_keyframe = False
            queue.append(pkt)
            added += len(pkt.payload)
        self.queued_bytes += added
        if not queue:
            return
        if self.queued_bytes > PLAYER_QUEUE_BYTES:
            self._shrink()
            return
        # Measured from the first media packet: sequence headers kept by a skip carry old timestamps.
        for first in queue:
            if not first.sequence_header and first.type_id != TAG_SCRIPT:
                if queue[-1].timestamp - first.timestamp > queue_length_ms:
                    self._shrink()
                return

    def _shrink(self) -> None:
        """Drop all but the sequence headers and metadata, then wait for a keyframe."""
        kept = [p for p in self.queue if p.sequence_header or p.type_id == TAG_SCRIPT]
        self.dropped += len(self.queue) - len(kept)
        self.queue = deque(kept)
        self.queued_bytes = sum(len(p.payload) for p in kept)
        self.wait_keyframe = True

    def try_catch_up(self) -> bool:
        """Write some of the private queue if the socket has room; True when back in sync.

        At most CATCH_UP_BYTES leave per call, so a slow reader's transport
        buffer stays bounded while the queue holds only shared packets.
        """
        if self.transport.get_write_buffer_size() > CONGESTED_BYTES // 4:
            return False
        queue = self.queue
        if queue:
            take: list[Packet] = []
            size = 0
            while queue and size < CATCH_UP_BYTES:
                pkt = queue.popleft()
                take.append(pkt)
                size += len(pkt.payload)
            self.queued_bytes -= size
            self.write(self.format.batch(take))
            if queue:
                return False
        return not self.wait_keyframe and not self.paused
