"""The live core's output formats: how RTMP and HTTP-FLV players receive packets.

Each format object is shared by all players of that format, so the fan-out
builds one batch per format per flush and every packet is encoded once.
"""

from __future__ import annotations

from collections.abc import Iterable

from tidecast.codec.flv import flv_tag
from tidecast.live.packet import TAG_AUDIO, TAG_VIDEO, Packet
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import encode_message
from tidecast.rtmp.session import STREAM_ID, encode_status, status_info

_CSID = {TAG_AUDIO: C.CSID_AUDIO, TAG_VIDEO: C.CSID_VIDEO}


class RtmpFormat:
    """RTMP chunks on the fixed message stream id every player's session uses."""

    __slots__ = ()

    def encode(self, packet: Packet) -> bytes:
        csid = _CSID.get(packet.type_id, C.CSID_DATA)
        return encode_message(csid, packet.type_id, packet.timestamp, STREAM_ID, packet.payload, packet.chunk_size)

    def batch(self, packets: Iterable[Packet]) -> bytes:
        return b"".join([p.encoded(self) for p in packets])

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return encode_status(status_info("status", code, description), chunk_size)


class FlvFormat:
    """FLV tags in a chunked HTTP response: each batch is framed once as one HTTP chunk."""

    __slots__ = ()

    def encode(self, packet: Packet) -> bytes:
        return flv_tag(packet.type_id, packet.timestamp, packet.payload)

    def batch(self, packets: Iterable[Packet]) -> bytes:
        body = b"".join([p.encoded(self) for p in packets])
        return b"%x\r\n%b\r\n" % (len(body), body) if body else b""

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return b""


RTMP = RtmpFormat()
FLV = FlvFormat()
