"""H.264 in FLV: the AVC decoder configuration record, AVCC → Annex B, and SPS dimensions.

FLV (like MP4) carries NAL units prefixed by their length; MPEG-TS wants them
separated by start codes, with an access unit delimiter first and, before an
IDR picture, the parameter sets a decoder joining mid-stream needs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from tidecast.errors import ProtocolError

START_CODE: Final = b"\x00\x00\x00\x01"
AUD: Final = START_CODE + b"\x09\xf0"  # access unit delimiter, primary_pic_type 7 (any slice type)
NAL_IDR: Final = 5
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_AUD: Final = 9

_U32: Final = struct.Struct(">I")

# SPS and PPS bytes one sequence header may carry. Real ones are a few hundred
# bytes; all of them go before every IDR picture in HLS, so a huge set would
# multiply every keyframe an attacker sends.
MAX_PARAMETER_SETS_BYTES: Final = 16 * 1024

# Profiles whose SPS carries chroma format, bit depths and scaling lists (H.264 7.3.2.1.1).
_HIGH_PROFILES: Final = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


@dataclass
class AvcConfig:
    nal_length_size: int = 4
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)
    profile: int = 0
    level: int = 0
    _headers: bytes | None = field(default=None, repr=False, compare=False)

    def annexb_headers(self) -> bytes:
        """SPS and PPS with start codes, computed once: they go before every IDR picture."""
        if self._headers is None:
            self._headers = b"".join(START_CODE + nal for nal in (*self.sps, *self.pps))
        return self._headers


def parse_config(record: bytes) -> AvcConfig:
    """An AVCDecoderConfigurationRecord (the video sequence header's body after its 5-byte FLV prefix)."""
    if len(record) < 7 or record[0] != 1:
        raise ProtocolError("AVC sequence header: not an AVCDecoderConfigurationRecord")
    config = AvcConfig(nal_length_size=(record[4] & 0x03) + 1, profile=record[1], level=record[3])
    pos = 5
    for target, mask in ((config.sps, 0x1F), (config.pps, 0xFF)):
        if pos >= len(record):
            break  # some encoders omit the PPS list; the frames then carry it
        count = record[pos] & mask
        pos += 1
        for _ in range(count):
            if pos + 2 > len(record):
                raise ProtocolError("AVC sequence header: truncated SPS/PPS list")
            size = (record[pos] << 8) | record[pos + 1]
            pos += 2
            if size == 0 or pos + size > len(record):
                raise ProtocolError("AVC sequence header: truncated SPS/PPS list")
            target.append(bytes(record[pos : pos + size]))
            pos += size
    if not config.sps:
        raise ProtocolError("AVC sequence header without an SPS")
    total = sum(len(nal) for nal in (*config.sps, *config.pps))
    if total > MAX_PARAMETER_SETS_BYTES:
        raise ProtocolError(
            f"AVC sequence header: {len(config.sps)} SPS and {len(config.pps)} PPS of {total} bytes "
            f"exceed the {MAX_PARAMETER_SETS_BYTES}-byte limit"
        )
    return config


def split_nals(data: bytes, length_size: int, start: int = 0) -> list[bytes]:
    """The NAL units of an AVCC (length-prefixed) buffer; a truncated tail is dropped."""
    nals: list[bytes] = []
    pos, end = start, len(data)
    while pos + length_size <= end:
        if length_size == 4:
            size = _U32.unpack_from(data, pos)[0]
        else:
            size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > end:
            break
        if size:
            nals.append(data[pos : pos + size])
        pos += size
    return nals


def nal_types(nals: list[bytes]) -> int:
    """A bit mask with bit n set when a NAL of type n is present."""
    mask = 0
    for nal in nals:
        mask |= 1 << (nal[0] & 0x1F)
    return mask


_AUD_START: Final = AUD + START_CODE


def single_nal_prefix(data: bytes, config: AvcConfig, keyframe: bool, start: int) -> bytes | None:
    """For a frame (`data[start:]`) that is one NAL unit, as nearly every inter frame is: the Annex B bytes
    that go before the unit's own bytes (`data[start + 4:]`), the same as `to_annexb` puts there, so a
    muxer can copy the unit straight from `data`. None for any other frame: use `to_annexb`."""
    end = len(data)
    if config.nal_length_size != 4 or end - start <= 5 or _U32.unpack_from(data, start)[0] + start + 4 != end:
        return None
    nal_type = data[start + 4] & 0x1F
    if not keyframe or nal_type == NAL_SPS:
        return START_CODE if nal_type == NAL_AUD else _AUD_START
    return (b"" if nal_type == NAL_AUD else AUD) + config.annexb_headers() + START_CODE


def to_annexb(data: bytes, config: AvcConfig, keyframe: bool, start: int = 0) -> bytes:
    """One access unit (an AVCC frame from `start` on) in Annex B.

    An AUD goes first unless the frame has one; before a keyframe the SPS/PPS of
    the sequence header are inserted unless the frame already carries an SPS.
    The NAL units are joined as memoryview slices: the frame is copied once.
    """
    view = memoryview(data)
    length_size = config.nal_length_size
    if length_size == 4 and len(data) - start > 5:
        size = _U32.unpack_from(data, start)[0]
        if size and start + 4 + size == len(data):
            # One NAL unit filling the frame (nearly every inter frame there is): no loop.
            nal_type = data[start + 4] & 0x1F
            prefix = b"" if nal_type == NAL_AUD else AUD
            if keyframe and nal_type != NAL_SPS:
                prefix += config.annexb_headers()
            return b"".join((prefix, START_CODE, view[start + 4 :]))
    parts: list[bytes | memoryview] = [b""]  # [0]: the AUD and parameter sets, once known
    types = 0
    pos, end = start, len(data)
    while pos + length_size < end:
        if length_size == 4:
            size = _U32.unpack_from(data, pos)[0]
        else:
            size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > end:
            break  # truncated: keep what is whole
        if size:
            types |= 1 << (data[pos] & 0x1F)
            parts.append(START_CODE)
            parts.append(view[pos : pos + size])
        pos += size
    prefix = b"" if types & (1 << NAL_AUD) else AUD
    if keyframe and not types & (1 << NAL_SPS):
        prefix += config.annexb_headers()
    parts[0] = prefix
    return b"".join(parts)


def has_parameter_sets(data: bytes, length_size: int, start: int = 0) -> tuple[bool, bool, bool]:
    """Whether an AVCC frame already carries an AUD, an SPS and a PPS."""
    types = nal_types(split_nals(data, length_size, start))
    return bool(types & (1 << NAL_AUD)), bool(types & (1 << NAL_SPS)), bool(types & (1 << NAL_PPS))


# parse_sps reads the fields up to frame cropping, which H.264 places within
# the first ~2 kB even with every scaling list present; what follows (VUI) is
# never read, so only this much is unescaped and looked at.
SPS_PARSE_LIMIT: Final = 4096


class _Bits:
    """A big-endian bit reader over an RBSP: an index into the bytes, so each read costs O(bits read)."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        # Emulation prevention bytes (00 00 03) are not part of the syntax.
        self.data = data[:SPS_PARSE_LIMIT].replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0
        self.end = len(self.data) * 8

    def bits(self, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise ProtocolError("SPS truncated")
        self.pos = pos + n
        data = self.data
        value = 0
        while n:
            byte = data[pos >> 3]
            offset = pos & 7
            take = 8 - offset
            if take > n:
                take = n
            value = (value << take) | ((byte >> (8 - offset - take)) & ((1 << take) - 1))
            pos += take
            n -= take
        return value

    def bit(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise ProtocolError("SPS truncated")
        self.pos = pos + 1
        return (self.data[pos >> 3] >> (7 - (pos & 7))) & 1

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ProtocolError("SPS: bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = next_ = 8
    for _ in range(size):
        if next_:
            next_ = (last + r.se() + 256) % 256
        last = next_ or last


def parse_sps(sps: bytes) -> tuple[int, int]:
    """Width and height in pixels (after cropping) from a sequence parameter set NAL unit."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise ProtocolError("not an SPS NAL unit")
    r = _Bits(sps[1:])
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format = 1  # 4:2:0 unless the profile says otherwise
    separate_planes = 0
    if profile in _HIGH_PROFILES:
        chroma_format = r.ue()
        if chroma_format == 3:
            separate_planes = r.bit()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:  # H.264 7.4.2.1.1: num_ref_frames_in_pic_order_cnt_cycle is 0..255
            raise ProtocolError(f"SPS: {cycle} reference frames in the POC cycle (at most 255)")
        for _ in range(cycle):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if r.bit():
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
    # Crop units depend on chroma subsampling (H.264 table 6-1, equations 7-19..7-22).
    if chroma_format == 0 or separate_planes:
        sub_w, sub_h = 1, 1
    else:
        sub_w = 1 if chroma_format == 3 else 2
        sub_h = 2 if chroma_format == 1 else 1
    fields = 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (left + right)
    height = height_units * 16 * fields - sub_h * fields * (top + bottom)
    if width <= 0 or height <= 0:
        raise ProtocolError("SPS: cropping exceeds the picture")
    return width, height
