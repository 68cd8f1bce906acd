"""A player's side of the fan-out: in sync with the stream, or catching up.

A player in sync receives the stream's shared batch: the same bytes object
written to every in-sync player of that format. A player that falls behind
(its socket buffer is full) leaves sync and queues packets of its own; the
queue is bounded in media time by `queue_length`, past which everything but the
sequence headers is dropped and the player waits for the next keyframe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from tidecast.codec.flv import TAG_VIDEO
from tidecast.live.client import Client
from tidecast.live.packet import Packet

# A transport holding more than this has filled the kernel's socket buffer too:
# the peer is not reading fast enough, so stop writing and start queueing.
CONGESTED_BYTES = 256 * 1024


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


def rtmp_batch(packets: Iterable[Packet]) -> bytes:
    return b"".join([p.rtmp() for p in packets])


def flv_batch(packets: Iterable[Packet]) -> bytes:
    body = b"".join([p.flv() for p in packets])
    # The HTTP response is chunked: frame the batch once for every FLV player.
    return b"%x\r\n%b\r\n" % (len(body), body) if body else b""


class Player(Client):
    __slots__ = ("batch", "dropped", "in_sync", "on_leave", "paused", "queue", "transport", "wait_keyframe")

    def __init__(
        self,
        cid: str,
        ip: str,
        kind: str,
        transport: Transport,
        closer: Callable[[], None],
        batch: Callable[[Iterable[Packet]], bytes],
    ) -> None:
        super().__init__(cid, ip, kind, closer)
        self.transport = transport
        self.batch = batch
        self.in_sync = False
        self.wait_keyframe = False
        self.paused = False
        self.queue: deque[Packet] = deque()
        self.dropped = 0
        self.on_leave: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        if data:
            self.transport.write(data)
            self.send_bytes += len(data)

    def enqueue(self, packets: Iterable[Packet], queue_length_ms: float) -> None:
        queue = self.queue
        for pkt in packets:
            if self.wait_keyframe and pkt.type_id == TAG_VIDEO:
                if not pkt.keyframe and not pkt.sequence_header:
                    self.dropped += 1
                    continue
                if pkt.keyframe:
                    self.wait_keyframe = False
            queue.append(pkt)
        if queue and queue[-1].timestamp - queue[0].timestamp > queue_length_ms:
            self._shrink()

    def _shrink(self) -> None:
        """Drop all but the sequence headers and metadata, then wait for a keyframe."""
        kept = [p for p in self.queue if p.sequence_header or p.type_id == 18]
        self.dropped += len(self.queue) - len(kept)
        self.queue = deque(kept)
        self.wait_keyframe = True

    def try_catch_up(self) -> bool:
        """Write the private queue if the socket has room; True when back in sync."""
        if self.transport.get_write_buffer_size() > CONGESTED_BYTES // 4:
            return False
        if self.queue:
            self.write(self.batch(self.queue))
            self.queue.clear()
        return not self.wait_keyframe and not self.paused
