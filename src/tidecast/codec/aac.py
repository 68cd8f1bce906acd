"""AAC in FLV: the AudioSpecificConfig and ADTS headers for MPEG-TS."""

from __future__ import annotations

from dataclasses import dataclass

from tidecast.errors import ProtocolError

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class AacConfig:
    object_type: int
    rate_index: int
    channels: int

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.rate_index] if self.rate_index < len(SAMPLE_RATES) else 0


def parse_config(asc: bytes) -> AacConfig:
    if len(asc) < 2:
        raise ProtocolError("AAC sequence header shorter than an AudioSpecificConfig")
    return AacConfig(asc[0] >> 3, ((asc[0] & 0x07) << 1) | (asc[1] >> 7), (asc[1] >> 3) & 0x0F)


def adts_header(config: AacConfig, payload_len: int) -> bytes:
    """The 7-byte ADTS header (no CRC) for one raw AAC frame."""
    # ADTS carries the AAC profile; SBR/PS streams are signalled implicitly over LC.
    profile = 1 if config.object_type in (5, 29) else max(config.object_type - 1, 0) & 0x03
    length = payload_len + 7
    channels = config.channels
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | ((config.rate_index & 0x0F) << 2) | ((channels >> 2) & 0x01),
            ((channels & 0x03) << 6) | ((length >> 11) & 0x03),
            (length >> 3) & 0xFF,
            ((length & 0x07) << 5) | 0x1F,
            0xFC,
        )
    )
