"""The live core's output formats: how RTMP and HTTP-FLV players receive packets.

A format object is shared by every player of that format on one timeline, so
the fan-out builds one batch per timeline per flush. A player's timeline starts
where it joined, as SRS starts each player near 0 (`at(base)` is the format of
players whose first packet is at `base`). Only a few header bytes depend on
the timeline: they are built once per packet and timeline, and the payload
bytes themselves are shared by every timeline and copied once, into the batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from tidecast.live.packet import TAG_AUDIO, TAG_VIDEO, Packet
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import encode_message, media_body, media_head
from tidecast.rtmp.session import STREAM_ID, encode_status, status_info

_CSID: Final = {TAG_AUDIO: C.CSID_AUDIO, TAG_VIDEO: C.CSID_VIDEO}
_EXTENDED: Final = C.EXTENDED_TIMESTAMP
_U32: Final = struct.Struct(">I")


class _RtmpBody:
    """A message after its first chunk header: the same on every timeline."""

    __slots__ = ()

    def encode(self, packet: Packet) -> bytes:
        return media_body(_CSID.get(packet.type_id, C.CSID_DATA), packet.payload, packet.chunk_size)


_RTMP_BODY: Final = _RtmpBody()


class RtmpFormat:
    """RTMP chunks on the fixed message stream id every player's session uses."""

    __slots__ = ("base",)

    def __init__(self, base: int = 0) -> None:
        self.base = base

    def at(self, base: int) -> RtmpFormat:
        return self if base == self.base else RtmpFormat(base)

    def encode(self, packet: Packet) -> bytes:
        """The timeline's part of a message: its first chunk header, or all of it past the 24-bit timestamps."""
        ts = packet.timestamp - self.base
        csid = _CSID.get(packet.type_id, C.CSID_DATA)
        if ts >= _EXTENDED:  # the extended field repeats in every chunk: nothing to share
            return encode_message(csid, packet.type_id, ts, STREAM_ID, packet.payload, packet.chunk_size)
        return media_head(csid, packet.type_id, ts if ts > 0 else 0, len(packet.payload), STREAM_ID)

    def batch(self, packets: Iterable[Packet]) -> bytes:
        base = self.base
        parts: list[bytes] = []
        append = parts.append
        for p in packets:
            append(p.encoded(self))
            if p.timestamp - base < _EXTENDED:  # else encode() gave the whole message
                payload = p.payload
                append(payload if len(payload) <= p.chunk_size else p.encoded(_RTMP_BODY))
        return b"".join(parts)

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return encode_status(status_info("status", code, description), chunk_size)


class FlvFormat:
    """FLV tags in a chunked HTTP response: each batch is framed once as one HTTP chunk."""

    __slots__ = ("base",)

    def __init__(self, base: int = 0) -> None:
        self.base = base

    def at(self, base: int) -> FlvFormat:
        return self if base == self.base else FlvFormat(base)

    def encode(self, packet: Packet) -> bytes:
        """The 11-byte tag header on this timeline (the payload and PreviousTagSize follow it)."""
        ts = packet.timestamp - self.base
        ts = ts & 0xFFFFFFFF if ts > 0 else 0
        head = (packet.type_id << 80) | (len(packet.payload) << 56) | ((ts & 0xFFFFFF) << 32) | ((ts >> 24) << 24)
        return head.to_bytes(11, "big")

    def batch(self, packets: Iterable[Packet]) -> bytes:
        parts: list[bytes] = [b""]  # the chunk's size line, once the tags are counted
        size = _append_tags(self, packets, parts)
        if not size:
            return b""
        parts[0] = b"%x\r\n" % size
        parts.append(b"\r\n")
        return b"".join(parts)

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return b""


class UnframedFlvFormat(FlvFormat):
    """FLV tags as a plain body that ends when the connection closes: what an HTTP/1.0 player reads.

    Its own format object, so its players share their own timelines and batches and the chunked
    players' hot path carries no check for them."""

    __slots__ = ()

    def at(self, base: int) -> UnframedFlvFormat:
        return self if base == self.base else UnframedFlvFormat(base)

    def batch(self, packets: Iterable[Packet]) -> bytes:
        parts: list[bytes] = []
        _append_tags(self, packets, parts)
        return b"".join(parts)


def _append_tags(fmt: FlvFormat, packets: Iterable[Packet], parts: list[bytes]) -> int:
    """Each packet's tag header (shared by the players of `fmt`'s timeline), payload and PreviousTagSize
    onto `parts`; returns their length in bytes."""
    append = parts.append
    pack = _U32.pack
    size = 0
    for p in packets:
        payload = p.payload
        append(p.encoded(fmt))
        append(payload)
        append(pack(11 + len(payload)))
        size += 15 + len(payload)
    return size


RTMP: Final = RtmpFormat()
FLV: Final = FlvFormat()
FLV_UNFRAMED: Final = UnframedFlvFormat()
