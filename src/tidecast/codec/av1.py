"""AV1 in FLV/E-RTMP: the AV1CodecConfigurationRecord (av1C) and the sequence header OBU.

The E-RTMP `av01` sequence start carries an av1C: four bytes of profile,
level, tier and colour facts, then the configOBUs (normally the sequence
header OBU). The size is only in the sequence header, so that is parsed up to
max_frame_width/height; a record without configOBUs is answered from the
sequence header OBU a keyframe's temporal unit starts with.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidecast.codec.bits import MAX_HEADER, BitReader
from tidecast.errors import ProtocolError

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
PROFILE_NAMES = {0: "Main", 1: "High", 2: "Professional"}


@dataclass(frozen=True)
class Av1Config:
    profile: int
    level_idx: int  # seq_level_idx[0]: 0 is level 2.0, 8 is 4.0, 31 "max"
    tier: int
    bit_depth: int
    monochrome: bool
    chroma_subsampling_x: int
    chroma_subsampling_y: int
    config_obus: bytes


@dataclass(frozen=True)
class Av1SequenceHeader:
    profile: int
    level_idx: int
    tier: int
    width: int  # max_frame_width_minus_1 + 1
    height: int


def parse_config(record: bytes | memoryview) -> Av1Config:
    """An av1C record (AV1-ISOBMFF 2.3.3)."""
    record = bytes(record)
    if len(record) < 4:
        raise ProtocolError(f"AV1 sequence header: {len(record)} bytes, an av1C has at least 4")
    if record[0] != 0x81:
        raise ProtocolError(f"AV1 sequence header: marker/version byte {record[0]:#04x}, expected 0x81")
    b2 = record[2]
    high_bitdepth = (b2 >> 6) & 1
    twelve_bit = (b2 >> 5) & 1
    return Av1Config(
        profile=record[1] >> 5,
        level_idx=record[1] & 0x1F,
        tier=b2 >> 7,
        bit_depth=12 if twelve_bit else 10 if high_bitdepth else 8,
        monochrome=bool((b2 >> 4) & 1),
        chroma_subsampling_x=(b2 >> 3) & 1,
        chroma_subsampling_y=(b2 >> 2) & 1,
        config_obus=record[4:],
    )


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ProtocolError("AV1: truncated leb128 OBU size")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise ProtocolError("AV1: leb128 OBU size longer than 8 bytes")


def iter_obus(data: bytes | memoryview, start: int = 0, end: int | None = None) -> list[tuple[int, memoryview]]:
    """(obu_type, payload) of the low-overhead OBU stream in data[start:end]; stops at a truncated OBU."""
    buf = bytes(data) if not isinstance(data, bytes) else data
    view = memoryview(buf)
    stop = len(buf) if end is None else end
    out: list[tuple[int, memoryview]] = []
    pos = start
    while pos < stop:
        header = buf[pos]
        if header & 0x80:
            raise ProtocolError(f"AV1: OBU forbidden bit set at byte {pos}")
        obu_type = (header >> 3) & 0x0F
        pos += 2 if header & 0x04 else 1  # extension header
        if header & 0x02:
            size, pos = _leb128(buf, pos)
        else:
            size = stop - pos  # no size field: the OBU runs to the end
        if pos + size > stop:
            break
        out.append((obu_type, view[pos : pos + size]))
        pos += size
    return out


def parse_sequence_header(payload: bytes | memoryview) -> Av1SequenceHeader:
    """A sequence header OBU's payload (AV1 5.5), read as far as the maximum frame size."""
    r = BitReader(payload[:MAX_HEADER], "AV1 sequence header")
    profile = r.bits(3)
    r.skip(1)  # still_picture
    reduced = r.bit()
    tier = 0
    if reduced:
        level = r.bits(5)
    else:
        decoder_model = False
        buffer_delay_bits = 0
        if r.bit():  # timing_info_present_flag
            r.skip(64)  # num_units_in_display_tick, time_scale
            if r.bit():  # equal_picture_interval
                r.uvlc()
            decoder_model = bool(r.bit())
            if decoder_model:
                buffer_delay_bits = r.bits(5) + 1
                r.skip(32 + 5 + 5)  # num_units_in_decoding_tick, two length fields
        display_delay = r.bit()
        level = 0
        for i in range(r.bits(5) + 1):  # operating points
            r.skip(12)  # operating_point_idc
            idx = r.bits(5)
            seq_tier = r.bit() if idx > 7 else 0
            if i == 0:
                level, tier = idx, seq_tier
            if decoder_model and r.bit():
                r.skip(2 * buffer_delay_bits + 1)
            if display_delay and r.bit():
                r.skip(4)
    width_bits = r.bits(4) + 1
    height_bits = r.bits(4) + 1
    width = r.bits(width_bits) + 1
    height = r.bits(height_bits) + 1
    return Av1SequenceHeader(profile, level, tier, width, height)


def find_sequence_header(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Av1SequenceHeader | None:
    """The sequence header among the OBUs of data[start:end] (configOBUs or a keyframe's temporal unit)."""
    for obu_type, payload in iter_obus(data, start, end):
        if obu_type == OBU_SEQUENCE_HEADER:
            return parse_sequence_header(payload)
    return None


def level_name(level_idx: int) -> str:
    """seq_level_idx → "X.Y" (X = 2 + idx // 4, Y = idx % 4); 31 is the unconstrained level."""
    if level_idx == 31:
        return "max"
    return f"{2 + (level_idx >> 2)}.{level_idx & 3}"


def profile_name(profile: int) -> str:
    return PROFILE_NAMES.get(profile, "Other")
