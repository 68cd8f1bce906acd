"""FLV tags and file header, the framing of HTTP-FLV and of RTMP aggregate messages."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from tidecast.errors import ProtocolError

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18

_PREV: Final = struct.Struct(">I")
# A tag header (type and size, timestamp with its extension byte, stream id 0) and, after the body,
# the PreviousTagSize: a writer that keeps the body where it is packs these two around it.
TAG_HEADER: Final = struct.Struct(">IIHB")
PREVIOUS_TAG_SIZE: Final = _PREV


def flv_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte file header plus PreviousTagSize0."""
    flags = (4 if has_audio else 0) | (1 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def flv_tag(type_id: int, timestamp_ms: int, payload: bytes) -> bytes:
    """One tag with its trailing PreviousTagSize, as a single bytes object."""
    size = len(payload)
    ts = timestamp_ms & 0xFFFFFFFF
    header = bytes(
        (
            type_id,
            (size >> 16) & 0xFF,
            (size >> 8) & 0xFF,
            size & 0xFF,
            (ts >> 16) & 0xFF,
            (ts >> 8) & 0xFF,
            ts & 0xFF,
            (ts >> 24) & 0xFF,
            0,
            0,
            0,
        )
    )
    return b"".join((header, payload, _PREV.pack(size + 11)))


def is_keyframe(payload: bytes) -> bool:
    """A video tag body that starts a GOP (frame type 1); the enhanced-RTMP flag bit is masked off."""
    return bool(payload) and (payload[0] >> 4) & 0x07 == 1


def is_sequence_header(type_id: int, payload: bytes) -> bool:
    """AVC/HEVC decoder configuration (packet type 0) or AAC AudioSpecificConfig (packet type 0)."""
    if len(payload) < 2:
        return False
    if type_id == TAG_VIDEO:
        if payload[0] & 0x80:  # enhanced RTMP: packet type 0 is the sequence start
            return payload[0] & 0x0F == 0
        return payload[1] == 0 and payload[0] & 0x0F in (7, 12)
    if type_id == TAG_AUDIO:
        return payload[0] >> 4 == 10 and payload[1] == 0
    return False


class FlvReader:
    """Incremental FLV parser: bytes in, (type, timestamp ms, payload) tags out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        if not self._header_done:
            if len(buf) < 13:
                return out
            if bytes(buf[:3]) != b"FLV":
                raise ProtocolError("not an FLV stream: the header does not start with 'FLV'")
            offset = _PREV.unpack_from(buf, 5)[0]
            if offset < 9 or offset > 1024:
                raise ProtocolError(f"FLV header size {offset} is not plausible")
            if len(buf) < offset + 4:
                return out
            pos = offset + 4
            self._header_done = True
        while len(buf) - pos >= 11:
            tag_type = buf[pos] & 0x1F
            size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if tag_type not in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT):
                raise ProtocolError(f"FLV tag type {tag_type} at byte {pos} is not audio, video or script")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            ts = (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6] | (buf[pos + 7] << 24)
            out.append((tag_type, ts, bytes(buf[pos + 11 : pos + 11 + size])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def iter_flv_tags(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The tags of a whole FLV file; a truncated last tag is left out, garbage raises ProtocolError."""
    yield from FlvReader().feed(data)
