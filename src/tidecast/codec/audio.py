"""What an FLV/RTMP audio tag body is: codec, sequence header or frames (legacy and E-RTMP FourCC audio).

Legacy FLV: SoundFormat (4 bits: 10 AAC, 2 MP3, ...) and rate/size/type bits;
AAC adds an AACPacketType byte (0 AudioSpecificConfig, 1 raw frame). E-RTMP v2:
SoundFormat 9 (ExHeader) turns the low nibble into an AudioPacketType, then
optional ModEx blocks, an optional multitrack header and a FourCC (`Opus`,
`fLaC`, `ac-3`, `ec-3`, `.mp3`, `mp4a`). Like `codec.video.classify`, this
reads a few bytes, never copies the payload and never raises; legacy AAC
packet types are reported as the E-RTMP numbers they match.
"""

from __future__ import annotations

from typing import NamedTuple

from tidecast.codec.exheader import read_exheader

# AudioPacketType (E-RTMP).
SEQUENCE_START = 0
CODED_FRAMES = 1
SEQUENCE_END = 2
MULTICHANNEL_CONFIG = 4
MULTITRACK = 5
MOD_EX = 7

EX_HEADER = 9  # the SoundFormat value that signals E-RTMP audio

AAC = "aac"
OPUS = "opus"
FLAC = "flac"
AC3 = "ac3"
EAC3 = "eac3"
MP3 = "mp3"
UNKNOWN = ""

FOURCCS: dict[bytes, str] = {b"Opus": OPUS, b"fLaC": FLAC, b"ac-3": AC3, b"ec-3": EAC3, b".mp3": MP3, b"mp4a": AAC}
LEGACY_CODECS: dict[int, str] = {
    0: "pcm",
    1: "adpcm",
    2: MP3,
    3: "pcm_le",
    4: "nellymoser16k",
    5: "nellymoser8k",
    6: "nellymoser",
    7: "pcma",
    8: "pcmu",
    10: AAC,
    11: "speex",
    14: MP3,  # MP3 at 8 kHz
    15: "native",
}


class AudioTag(NamedTuple):
    """One audio message, classified. `offset`..`end` is the codec data."""

    codec: str
    packet_type: int  # E-RTMP AudioPacketType; legacy AAC mapped onto it, other legacy codecs CODED_FRAMES
    is_sequence_header: bool  # decoder configuration to cache (AAC AudioSpecificConfig, OpusHead, fLaC STREAMINFO)
    offset: int
    end: int
    enhanced: bool


INVALID = AudioTag(UNKNOWN, -1, False, 0, 0, False)

_new = tuple.__new__


def classify_audio(payload: bytes) -> AudioTag:
    """Classify an audio tag body (an RTMP type-8 message or FLV audio tag); never raises."""
    size = len(payload)
    if not size:
        return INVALID  # the "silence" message of the spec
    b0 = payload[0]
    sound_format = b0 >> 4
    if sound_format != EX_HEADER:
        if sound_format == 10:
            if size < 2:
                return INVALID
            packet_type = payload[1]
            return _new(AudioTag, (AAC, packet_type, packet_type == 0, 2, size, False))
        return _new(AudioTag, (LEGACY_CODECS.get(sound_format, UNKNOWN), CODED_FRAMES, False, 1, size, False))
    packet_type = b0 & 0x0F
    header = read_exheader(payload, packet_type, MOD_EX, MULTITRACK, FOURCCS)
    if header is None:
        return INVALID
    codec, packet_type, pos, end = header
    return _new(AudioTag, (codec, packet_type, packet_type == SEQUENCE_START, pos, end, True))


def sequence_start(codec: str, config: bytes) -> bytes:
    """An E-RTMP audio sequence start (tests, and re-muxing)."""
    return _tag(codec, SEQUENCE_START, config)


def coded_frames(codec: str, data: bytes) -> bytes:
    return _tag(codec, CODED_FRAMES, data)


def _tag(codec: str, packet_type: int, data: bytes) -> bytes:
    fourcc = next((k for k, v in FOURCCS.items() if v == codec), None)
    if fourcc is None:
        raise ValueError(f"audio codec {codec!r} has no E-RTMP FourCC")
    return bytes((EX_HEADER << 4 | packet_type,)) + fourcc + data
