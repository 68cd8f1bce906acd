"""H.265/HEVC in FLV: the HEVCDecoderConfigurationRecord (hvcC), SPS facts, length-prefixed NALUs → Annex B.

FLV (legacy codec id 12 and E-RTMP `hvc1` alike) carries the hvcC as the
sequence header and NAL units prefixed by their length (usually 4 bytes) in
frames. MPEG-TS wants Annex B: start codes, an access unit delimiter first
(type 35), and before each IRAP picture the VPS, SPS and PPS a decoder joining
mid-stream needs (ISO/IEC 13818-1 2.17, as for H.264).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tidecast.codec.bits import BitReader, unescape
from tidecast.errors import ProtocolError

START_CODE = b"\x00\x00\x00\x01"
NAL_IRAP_FIRST = 16  # BLA_W_LP .. RSV_IRAP_VCL23: random access points
NAL_IRAP_LAST = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_PREFIX_SEI = 39
# nuh_layer_id 0, temporal id 1; pic_type 2 (I, P or B slices) and the stop bit.
AUD = START_CODE + b"\x46\x01\x50"

_U32 = struct.Struct(">I")

PROFILE_NAMES = {1: "Main", 2: "Main10", 3: "Main Still Picture", 4: "Rext"}  # the names SRS's API uses


@dataclass
class HevcConfig:
    """The parts of an hvcC a muxer and the API need."""

    profile_space: int = 0
    tier: int = 0
    profile_idc: int = 0
    compatibility: int = 0  # general_profile_compatibility_flags (32 bits)
    constraints: bytes = b""  # general_constraint_indicator_flags (6 bytes)
    level_idc: int = 0
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    nal_length_size: int = 4
    vps: list[bytes] = field(default_factory=list)
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)
    sei: list[bytes] = field(default_factory=list)  # prefix SEI in the record (x265 puts its settings there)
    _headers: bytes | None = field(default=None, repr=False, compare=False)

    def annexb_headers(self) -> bytes:
        """VPS, SPS and PPS with start codes, computed once: they go before every IRAP picture."""
        if self._headers is None:
            self._headers = b"".join(START_CODE + nal for nal in (*self.vps, *self.sps, *self.pps))
        return self._headers


def parse_config(record: bytes | memoryview) -> HevcConfig:
    """An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), the video sequence header's codec data."""
    record = bytes(record)
    if len(record) < 23:
        raise ProtocolError(f"HEVC sequence header: {len(record)} bytes, an hvcC has at least 23")
    if record[0] != 1:
        raise ProtocolError(f"HEVC sequence header: configurationVersion {record[0]}, expected 1")
    config = HevcConfig(
        profile_space=record[1] >> 6,
        tier=(record[1] >> 5) & 1,
        profile_idc=record[1] & 0x1F,
        compatibility=_U32.unpack_from(record, 2)[0],
        constraints=record[6:12],
        level_idc=record[12],
        chroma_format_idc=record[16] & 0x03,
        bit_depth_luma=(record[17] & 0x07) + 8,
        bit_depth_chroma=(record[18] & 0x07) + 8,
        nal_length_size=(record[21] & 0x03) + 1,
    )
    if config.nal_length_size == 3:
        raise ProtocolError("HEVC sequence header: lengthSizeMinusOne 2 (3-byte NAL lengths) is not allowed")
    targets = {NAL_VPS: config.vps, NAL_SPS: config.sps, NAL_PPS: config.pps, NAL_PREFIX_SEI: config.sei}
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise ProtocolError("HEVC sequence header: truncated NAL unit array")
        target = targets.get(record[pos] & 0x3F)
        count = (record[pos + 1] << 8) | record[pos + 2]
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise ProtocolError("HEVC sequence header: truncated NAL unit array")
            size = (record[pos] << 8) | record[pos + 1]
            pos += 2
            if pos + size > len(record):
                raise ProtocolError("HEVC sequence header: a NAL unit runs past the record")
            if target is not None and size:
                target.append(record[pos : pos + size])
            pos += size
    if not config.sps:
        raise ProtocolError("HEVC sequence header without an SPS")
    return config


@dataclass(frozen=True)
class HevcSps:
    width: int
    height: int
    profile_idc: int
    tier: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int]:
    """H.265 7.3.3 with profilePresentFlag 1: the general profile, tier and level; sub-layers skipped."""
    r.skip(2)  # general_profile_space
    tier = r.bit()
    profile = r.bits(5)
    r.skip(32 + 4 + 43 + 1)  # compatibility flags, source flags, constraint flags, inbld/reserved
    level = r.bits(8)
    present = []
    for _ in range(max_sub_layers_minus1):
        present.append((r.bit(), r.bit()))
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    return profile, tier, level


def parse_sps(nal: bytes | memoryview) -> HevcSps:
    """Width and height (after the conformance window), profile, tier, level, chroma format, bit depths."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != NAL_SPS:
        raise ProtocolError("HEVC: not an SPS NAL unit")
    r = BitReader(unescape(nal[2:], "HEVC SPS"), "HEVC SPS")
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.bits(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile, tier, level = _profile_tier_level(r, max_sub_layers_minus1)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format = r.ue()
    if chroma_format > 3:
        raise ProtocolError(f"HEVC SPS: chroma_format_idc {chroma_format} is out of range")
    separate_planes = r.bit() if chroma_format == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.bit():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # Offsets are in chroma units (H.265 table 6-1).
        sub_w = 2 if chroma_format in (1, 2) and not separate_planes else 1
        sub_h = 2 if chroma_format == 1 and not separate_planes else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise ProtocolError("HEVC SPS: the conformance window exceeds the picture")
    luma = r.ue() + 8
    chroma = r.ue() + 8
    return HevcSps(width, height, profile, tier, level, chroma_format, luma, chroma)


def level_name(level_idc: int) -> str:
    """general_level_idc is 30 × the level: 93 → "3.1", 120 → "4"."""
    major, minor = divmod(level_idc, 30)
    minor //= 3
    return f"{major}.{minor}" if minor else str(major)


def profile_name(profile_idc: int) -> str:
    return PROFILE_NAMES.get(profile_idc, "Other")


def nal_type(nal: bytes | memoryview) -> int:
    return (nal[0] >> 1) & 0x3F


def to_annexb(data: bytes, config: HevcConfig, keyframe: bool, start: int = 0, end: int | None = None) -> bytes:
    """One access unit (length-prefixed NAL units from `start` to `end`) in Annex B.

    An AUD leads unless the frame has one; before a keyframe the VPS/SPS/PPS of
    the sequence header follow it, unless the frame carries its own SPS.
    NAL units are joined as memoryview slices: the frame is copied once.
    """
    view = memoryview(data)
    length_size = config.nal_length_size
    parts: list[bytes | memoryview] = []
    types = 0
    first_type = -1
    pos, stop = start, len(data) if end is None else end
    while pos + length_size <= stop:
        if length_size == 4:
            size = _U32.unpack_from(data, pos)[0]
        else:
            size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > stop:
            break  # truncated: keep what is whole
        if size:
            kind = (data[pos] >> 1) & 0x3F
            if first_type < 0:
                first_type = kind
            types |= 1 << kind
            parts.append(START_CODE)
            parts.append(view[pos : pos + size])
        pos += size
    headers = config.annexb_headers() if keyframe and not types & (1 << NAL_SPS) else b""
    if first_type == NAL_AUD:
        # The AUD must stay the first NAL unit of the access unit: the parameter sets go after it.
        if headers:
            parts.insert(2, headers)
        return b"".join(parts)
    parts.insert(0, AUD + headers)
    return b"".join(parts)
