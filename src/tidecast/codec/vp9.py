"""VP9 in FLV/E-RTMP: the VP codec configuration record (vpcC) and a keyframe's size.

The `vp09` sequence start carries a VPCodecConfigurationRecord; ffmpeg writes
it with the vpcC box's version and flags in front (01 00 00 00), others may
not: a record whose third and fourth bytes are zero has that prefix (they
would otherwise say bit depth 0, which no stream has). The record has no
picture size: that comes from a keyframe's uncompressed header.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidecast.codec.bits import BitReader
from tidecast.errors import ProtocolError

_SYNC_CODE = 0x498342
_CS_RGB = 7


@dataclass(frozen=True)
class Vp9Config:
    profile: int
    level: int  # 10 × the level: 31 is 3.1
    bit_depth: int
    chroma_subsampling: int  # 0 4:2:0 vertical, 1 4:2:0 colocated, 2 4:2:2, 3 4:4:4
    full_range: bool


def parse_config(record: bytes | memoryview) -> Vp9Config:
    record = bytes(record)
    if len(record) >= 12 and record[0] == 1 and record[2] == 0 and record[3] == 0:
        record = record[4:]  # the FullBox version and flags
    if len(record) < 8:
        raise ProtocolError(f"VP9 sequence header: {len(record)} bytes, a vpcC record has at least 8")
    return Vp9Config(
        profile=record[0],
        level=record[1],
        bit_depth=record[2] >> 4,
        chroma_subsampling=(record[2] >> 1) & 0x07,
        full_range=bool(record[2] & 1),
    )


def keyframe_size(frame: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a VP9 keyframe's uncompressed header (VP9 6.2); None for other frames."""
    r = BitReader(frame[:64], "VP9 frame header")
    if r.bits(2) != 2:
        raise ProtocolError("VP9 frame header: bad frame marker")
    profile = r.bit() | (r.bit() << 1)
    if profile == 3:
        r.skip(1)
    if r.bit():  # show_existing_frame
        return None
    if r.bit():  # frame_type 1: not a keyframe
        return None
    r.skip(2)  # show_frame, error_resilient_mode
    if r.bits(24) != _SYNC_CODE:
        raise ProtocolError("VP9 frame header: bad sync code")
    if profile >= 2:
        r.skip(1)  # ten_or_twelve_bit
    if r.bits(3) != _CS_RGB:
        r.skip(1)  # color_range
        if profile in (1, 3):
            r.skip(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        r.skip(1)
    width = r.bits(16) + 1
    height = r.bits(16) + 1
    return width, height


def level_name(level: int) -> str:
    return f"{level // 10}.{level % 10}" if level % 10 else str(level // 10)
