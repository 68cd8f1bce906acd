"""What an FLV/RTMP video tag body is: codec, sequence header or frame, keyframe, composition time.

Two wire forms share the first byte. Legacy FLV: frame type (4 bits) and
codec id (4 bits: 7 AVC, 12 the HEVC extension SRS and Chinese CDNs use), then
for AVC/HEVC an AVCPacketType byte and an SI24 composition time. Enhanced RTMP
(E-RTMP v1/v2): the top bit is IsExHeader, then a 3-bit frame type and a 4-bit
VideoPacketType, optional ModEx blocks, an optional multitrack header, and a
FourCC (`avc1`, `hvc1`, `av01`, `vp09`, `vp08`, `vvc1`). Only CodedFrames of the
NAL-unit codecs (AVC, HEVC, VVC) carry the SI24 composition time; CodedFramesX
means "composition time 0"; AV1 and VP8/VP9 frames never have one.

`classify` runs once per video message on the ingest path: it reads a handful
of bytes, never copies the payload and never raises. Legacy AVC/HEVC packet
types are reported with the E-RTMP numbers they match (0 sequence start, 1
coded frames, 2 sequence end), so callers test one set of values.

A multitrack message is described by its first track; `offset`/`end` bound
that track's codec data.
"""

from __future__ import annotations

from typing import NamedTuple

from tidecast.codec.exheader import read_exheader

# VideoPacketType (E-RTMP).
SEQUENCE_START = 0
CODED_FRAMES = 1
SEQUENCE_END = 2
CODED_FRAMES_X = 3
METADATA = 4
MPEG2TS_SEQUENCE_START = 5
MULTITRACK = 6
MOD_EX = 7

# VideoFrameType.
KEY_FRAME = 1
INTER_FRAME = 2
DISPOSABLE_INTER_FRAME = 3
GENERATED_KEY_FRAME = 4
COMMAND_FRAME = 5

# AvMultitrackType.
ONE_TRACK = 0
MANY_TRACKS = 1
MANY_TRACKS_MANY_CODECS = 2

# Codec names (interned strings: comparing them is an identity test).
AVC = "avc"
HEVC = "hevc"
AV1 = "av1"
VP9 = "vp9"
VP8 = "vp8"
VVC = "vvc"
UNKNOWN = ""

FOURCCS: dict[bytes, str] = {b"avc1": AVC, b"hvc1": HEVC, b"av01": AV1, b"vp09": VP9, b"vp08": VP8, b"vvc1": VVC}
# Legacy FLV codec ids. 12 is not in Adobe's table: it is the HEVC extension SRS 4+ reads and writes.
LEGACY_CODECS: dict[int, str] = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: AVC, 12: HEVC}
LEGACY_CODEC_IDS: dict[str, int] = {AVC: 7, HEVC: 12}
# Codecs whose CodedFrames carry an SI24 composition time offset.
_CTS_CODECS = frozenset((AVC, HEVC, VVC))


class VideoTag(NamedTuple):
    """One video message, classified. `offset`..`end` is the codec data (configuration record, frame, AMF)."""

    codec: str  # AVC, HEVC, AV1, VP9, VP8, VVC, a legacy name ("h263", "vp6", ...) or UNKNOWN
    packet_type: int  # E-RTMP VideoPacketType; legacy AVC/HEVC mapped onto it, other legacy codecs CODED_FRAMES
    frame_type: int  # VideoFrameType: KEY_FRAME, INTER_FRAME, ..., COMMAND_FRAME
    is_sequence_header: bool  # decoder configuration to cache for late joiners
    is_keyframe: bool  # a coded frame a decoder can start at (frame type 1): a GOP starts here
    cts: int  # composition time offset in ms (PTS - DTS), 0 where the form has none
    offset: int  # where the codec data starts in the payload
    end: int  # where it ends (the payload's length unless multitrack)
    enhanced: bool  # the E-RTMP form (IsExHeader set)


# A payload too short or malformed to say anything about: relayed as is, never cached or cut on.
INVALID = VideoTag(UNKNOWN, -1, 0, False, False, 0, 0, 0, False)

_new = tuple.__new__  # builds the NamedTuple without its keyword-handling __new__ (about 3x faster)


def classify(payload: bytes) -> VideoTag:
    """Classify a video tag body (an RTMP type-9 message or FLV video tag); never raises."""
    size = len(payload)
    if not size:
        return INVALID
    b0 = payload[0]
    if not b0 & 0x80:
        # Legacy FLV.
        frame_type = b0 >> 4
        codec_id = b0 & 0x0F
        codec = AVC if codec_id == 7 else LEGACY_CODECS.get(codec_id, UNKNOWN)
        if frame_type == COMMAND_FRAME:
            return _new(VideoTag, (codec, CODED_FRAMES, frame_type, False, False, 0, 1, size, False))
        if codec is AVC or codec is HEVC:
            if size < 5:
                return INVALID
            packet_type = payload[1]
            if packet_type == 1:
                cts = (payload[2] << 16) | (payload[3] << 8) | payload[4]
                if cts & 0x800000:
                    cts -= 0x1000000
                return _new(VideoTag, (codec, CODED_FRAMES, frame_type, False, frame_type == 1, cts, 5, size, False))
            return _new(VideoTag, (codec, packet_type, frame_type, packet_type == 0, False, 0, 5, size, False))
        return _new(VideoTag, (codec, CODED_FRAMES, frame_type, False, frame_type == 1, 0, 1, size, False))
    # Enhanced RTMP.
    frame_type = (b0 >> 4) & 0x07
    packet_type = b0 & 0x0F
    header = read_exheader(payload, packet_type, MOD_EX, MULTITRACK, FOURCCS)
    if header is None:
        return INVALID
    codec, packet_type, pos, end = header
    if packet_type == CODED_FRAMES:
        if codec in _CTS_CODECS:
            if pos + 3 > end:
                return INVALID
            cts = (payload[pos] << 16) | (payload[pos + 1] << 8) | payload[pos + 2]
            if cts & 0x800000:
                cts -= 0x1000000
            return _new(VideoTag, (codec, packet_type, frame_type, False, frame_type == 1, cts, pos + 3, end, True))
        return _new(VideoTag, (codec, packet_type, frame_type, False, frame_type == 1, 0, pos, end, True))
    if packet_type == CODED_FRAMES_X:
        return _new(VideoTag, (codec, packet_type, frame_type, False, frame_type == 1, 0, pos, end, True))
    if packet_type == METADATA:
        # The frame type is to be ignored on metadata (ffmpeg sends 5 there).
        return _new(VideoTag, (codec, packet_type, 0, False, False, 0, pos, end, True))
    if frame_type == COMMAND_FRAME:
        return _new(VideoTag, (codec, packet_type, frame_type, False, False, 0, pos, end, True))
    is_header = packet_type in (SEQUENCE_START, MPEG2TS_SEQUENCE_START)
    return _new(VideoTag, (codec, packet_type, frame_type, is_header, False, 0, pos, end, True))


def is_coded_frame(tag: VideoTag) -> bool:
    """A frame with picture data (not a header, end of sequence, metadata or command)."""
    return (tag.packet_type == CODED_FRAMES or tag.packet_type == CODED_FRAMES_X) and tag.frame_type != COMMAND_FRAME


def sequence_header(codec: str, record: bytes, enhanced: bool | None = None) -> bytes:
    """A video tag body carrying a decoder configuration record (tests, and re-muxing edges).

    AVC defaults to the legacy form (every player reads it); other codecs use
    E-RTMP unless `enhanced` is False and a legacy id exists (HEVC: 12).
    """
    return _tag(codec, SEQUENCE_START, KEY_FRAME, record, 0, enhanced)


def coded_frame(codec: str, data: bytes, keyframe: bool, cts: int = 0, enhanced: bool | None = None) -> bytes:
    """A video tag body carrying one frame (CodedFramesX when the composition time is 0)."""
    frame_type = KEY_FRAME if keyframe else INTER_FRAME
    return _tag(codec, CODED_FRAMES, frame_type, data, cts, enhanced)


def _tag(codec: str, packet_type: int, frame_type: int, data: bytes, cts: int, enhanced: bool | None) -> bytes:
    if enhanced is None:
        enhanced = codec != AVC
    if not enhanced:
        codec_id = LEGACY_CODEC_IDS.get(codec)
        if codec_id is None:
            raise ValueError(f"video codec {codec!r} has no legacy FLV codec id; use the enhanced form")
        legacy_type = 0 if packet_type == SEQUENCE_START else 1
        return bytes((frame_type << 4 | codec_id, legacy_type)) + (cts & 0xFFFFFF).to_bytes(3, "big") + data
    fourcc = next((k for k, v in FOURCCS.items() if v == codec), None)
    if fourcc is None:
        raise ValueError(f"video codec {codec!r} has no E-RTMP FourCC")
    if packet_type == CODED_FRAMES and codec in _CTS_CODECS:
        if cts:
            return bytes((0x80 | frame_type << 4 | CODED_FRAMES,)) + fourcc + (cts & 0xFFFFFF).to_bytes(3, "big") + data
        packet_type = CODED_FRAMES_X  # as ffmpeg does: no SI24 when it is 0
    return bytes((0x80 | frame_type << 4 | packet_type,)) + fourcc + data
