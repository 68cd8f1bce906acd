"""H.264 in FLV: the AVC decoder configuration record, AVCC → Annex B, and SPS dimensions."""

from __future__ import annotations

from dataclasses import dataclass, field

from tidecast.errors import ProtocolError

START_CODE = b"\x00\x00\x00\x01"
AUD = START_CODE + b"\x09\xf0"
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


@dataclass
class AvcConfig:
    nal_length_size: int = 4
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)

    def annexb_headers(self) -> bytes:
        return b"".join(START_CODE + nal for nal in (*self.sps, *self.pps))


def parse_config(record: bytes) -> AvcConfig:
    """An AVCDecoderConfigurationRecord (the body of an AVC sequence header after its 5-byte prefix)."""
    if len(record) < 7 or record[0] != 1:
        raise ProtocolError("AVC sequence header: not an AVCDecoderConfigurationRecord")
    config = AvcConfig(nal_length_size=(record[4] & 0x03) + 1)
    pos = 5
    count = record[pos] & 0x1F
    pos += 1
    for _ in range(count):
        size = int.from_bytes(record[pos : pos + 2], "big")
        config.sps.append(record[pos + 2 : pos + 2 + size])
        pos += 2 + size
    if pos < len(record):
        count = record[pos]
        pos += 1
        for _ in range(count):
            size = int.from_bytes(record[pos : pos + 2], "big")
            config.pps.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
    if pos > len(record):
        raise ProtocolError("AVC sequence header: truncated SPS/PPS list")
    return config


def split_nals(data: bytes, length_size: int) -> list[bytes]:
    nals: list[bytes] = []
    pos, end = 0, len(data)
    while pos + length_size <= end:
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > end:
            break
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def to_annexb(data: bytes, config: AvcConfig, keyframe: bool) -> bytes:
    """One access unit in Annex B: AUD, SPS/PPS before keyframes (unless present), then the NALs."""
    nals = split_nals(data, config.nal_length_size)
    types = {nal[0] & 0x1F for nal in nals if nal}
    parts = [] if NAL_AUD in types else [AUD]
    if keyframe and NAL_SPS not in types:
        parts.append(config.annexb_headers())
    for nal in nals:
        parts.append(START_CODE)
        parts.append(nal)
    return b"".join(parts)


class _Bits:
    def __init__(self, data: bytes) -> None:
        # Emulation prevention bytes (00 00 03) are not part of the syntax.
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise ProtocolError("SPS truncated")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

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


def parse_sps(sps: bytes) -> tuple[int, int]:
    """Width and height in pixels from a sequence parameter set NAL."""
    r = _Bits(sps[1:])
    profile = r.bits(8)
    r.bits(16)  # constraint flags and level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = r.ue()
        if chroma_format == 3:
            r.bit()
        r.ue()
        r.ue()
        r.bit()
        if r.bit():  # scaling matrices
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    last, next_ = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if next_:
                            next_ = (last + r.se() + 256) % 256
                        last = next_ or last
    r.ue()  # log2_max_frame_num
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()
    crop = (0, 0, 0, 0)
    if r.bit():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w = 1 if chroma_format == 3 else 2
    sub_h = 2 if chroma_format == 1 else 1
    if chroma_format == 0:
        sub_w, sub_h = 1, 1
    height_mul = 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = height_units * 16 * height_mul - sub_h * height_mul * (crop[2] + crop[3])
    return width, height
