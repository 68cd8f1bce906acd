"""AAC in FLV: the AudioSpecificConfig, and the ADTS headers MPEG-TS needs in front of each raw frame."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from tidecast.errors import ProtocolError

SAMPLE_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
SAMPLES_PER_FRAME: Final = 1024  # at the core (AAC-LC) rate, also for HE-AAC signalled implicitly

_U32: Final = struct.Struct(">I")


@dataclass(frozen=True)
class AacConfig:
    object_type: int
    rate_index: int
    channels: int
    # The first three ADTS bytes and the constant bits of the last four, precomputed:
    # only the 13-bit frame length varies per frame.
    _prefix: bytes = field(init=False, repr=False, compare=False)
    _base: int = field(init=False, repr=False, compare=False)
    # Duration of one frame in milliseconds (0 when the rate is unknown); read per frame.
    frame_ms: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ADTS has 2 bits of profile (object type - 1): SBR/PS (HE-AAC) streams are
        # signalled implicitly over an LC core, as encoders and ffmpeg do.
        profile = 1 if self.object_type in (5, 29) else max(self.object_type - 1, 0) & 0x03
        first = (profile << 6) | ((self.rate_index & 0x0F) << 2) | ((self.channels >> 2) & 0x01)
        object.__setattr__(self, "_prefix", bytes((0xFF, 0xF1, first)))
        # Bytes 3-6: channel config (2 bits), originality/home/copyright bits 0, the frame
        # length (13 bits, filled per frame), buffer fullness 0x7FF (VBR), one raw data block.
        object.__setattr__(self, "_base", ((self.channels & 0x03) << 30) | (0x7FF << 2))
        rate = self.sample_rate
        object.__setattr__(self, "frame_ms", SAMPLES_PER_FRAME * 1000.0 / rate if rate else 0.0)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.rate_index] if self.rate_index < len(SAMPLE_RATES) else 0

    def adts(self, payload_len: int) -> bytes:
        """The 7-byte ADTS header (no CRC) for one raw frame of `payload_len` bytes."""
        length = payload_len + 7
        if length > 0x1FFF:
            raise ProtocolError(f"AAC frame of {payload_len} bytes does not fit an ADTS header")
        return self._prefix + _U32.pack(self._base | (length << 13))


def parse_config(asc: bytes) -> AacConfig:
    """An AudioSpecificConfig (the AAC sequence header's body after its 2-byte FLV prefix)."""
    if len(asc) < 2:
        raise ProtocolError("AAC sequence header shorter than an AudioSpecificConfig")
    object_type = asc[0] >> 3
    rate_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
    channels = (asc[1] >> 3) & 0x0F
    if object_type == 0 or rate_index == 0x0F:
        # 0 is "null"; an explicit 24-bit rate (index 15) cannot be expressed in ADTS.
        raise ProtocolError(f"AAC config with object type {object_type}, rate index {rate_index} not supported")
    return AacConfig(object_type, rate_index, channels)


def adts_header(config: AacConfig, payload_len: int) -> bytes:
    """The 7-byte ADTS header (no CRC) for one raw AAC frame."""
    return config.adts(payload_len)
