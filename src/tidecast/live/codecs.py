"""Codec facts for the API, read from sequence headers (SRS's `video`/`audio` objects).

Video: H.264 (legacy id 7 or E-RTMP `avc1`), HEVC (legacy id 12 or `hvc1`),
AV1 (`av01`) and VP9 (`vp09`), each with profile, level and size. VP9's
record has no size, and an av1C may lack its sequence header: then the
stream's current keyframe (`keyframe`, optional) is read for it. A header
that does not parse shows its codec with empty facts rather than failing the
API.
"""

from __future__ import annotations

from typing import Any, Final

from tidecast.codec import av1, avc, hevc, vp9
from tidecast.codec import video as v
from tidecast.codec.audio import AAC, FLAC, OPUS, classify_audio
from tidecast.errors import ProtocolError

_AVC_PROFILES: Final = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High10",
    122: "High422",
    244: "High444",
}
_AAC_PROFILES: Final = {1: "Main", 2: "LC", 3: "SSR", 5: "HE", 29: "HEv2"}
_AAC_RATES: Final = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]
_NAMES: Final = {v.AVC: "H264", v.HEVC: "HEVC", v.AV1: "AV1", v.VP9: "VP9", v.VP8: "VP8", v.VVC: "VVC"}
_AUDIO_NAMES: Final = {
    AAC: "AAC",
    OPUS: "Opus",
    FLAC: "FLAC",
    "ac3": "AC3",
    "eac3": "EAC3",
    "mp3": "MP3",
    "speex": "Speex",
    "pcma": "PCMA",
    "pcmu": "PCMU",
    "nellymoser": "Nellymoser",
}
_LEGACY_AUDIO: Final = {2: "MP3", 11: "Speex", 7: "PCMA", 8: "PCMU", 13: "Opus"}  # 13: SRS's pre-E-RTMP Opus id


def _video(codec: str, profile: str = "", level: str = "", width: int = 0, height: int = 0) -> dict[str, Any]:
    return {"codec": codec, "profile": profile, "level": level, "width": width, "height": height}


def describe_video(payload: bytes, keyframe: bytes | None = None) -> dict[str, Any]:
    """The API's `video` object from a video sequence header (and, for VP9/AV1 sizes, a keyframe's body)."""
    tag = v.classify(payload)
    codec = tag.codec
    name = _NAMES.get(codec) or codec or _unknown_video(payload, tag.enhanced)
    if not tag.is_sequence_header:
        return _video(name)
    record = payload[tag.offset : tag.end]
    try:
        if codec is v.AVC:
            return _describe_avc(record)
        if codec is v.HEVC:
            config = hevc.parse_config(record)
            out = _video("HEVC", hevc.profile_name(config.profile_idc), hevc.level_name(config.level_idc))
            sps = hevc.parse_sps(config.sps[0])
            out["width"], out["height"] = sps.width, sps.height
            return out
        if codec is v.AV1:
            a = av1.parse_config(record)
            out = _video("AV1", av1.profile_name(a.profile), av1.level_name(a.level_idx))
            seq = av1.find_sequence_header(a.config_obus)
            if seq is None and keyframe is not None:
                frame = v.classify(keyframe)
                if frame.codec is v.AV1 and frame.is_keyframe:
                    seq = av1.find_sequence_header(keyframe, frame.offset, frame.end)
            if seq is not None:
                out["width"], out["height"] = seq.width, seq.height
            return out
        if codec is v.VP9:
            c = vp9.parse_config(record)
            out = _video("VP9", f"Profile {c.profile}", vp9.level_name(c.level))
            if keyframe is not None:
                frame = v.classify(keyframe)
                if frame.codec is v.VP9 and frame.is_keyframe:
                    size = vp9.keyframe_size(keyframe[frame.offset : frame.end])
                    if size is not None:
                        out["width"], out["height"] = size
            return out
    except ProtocolError:
        pass  # the API shows what it could read rather than failing on an odd header
    return _video(name)


def _unknown_video(payload: bytes, enhanced: bool) -> str:
    if enhanced and len(payload) >= 5:
        # An E-RTMP FourCC tidecast has no parser for: show it, it is what the operator will search for.
        return payload[1:5].decode("latin-1")
    return f"video-{payload[0] & 0x0F if payload else 0}"


def _describe_avc(record: bytes) -> dict[str, Any]:
    if len(record) < 4:
        return _video("H264")
    profile = _AVC_PROFILES.get(record[1], str(record[1]))
    level = f"{record[3] // 10}.{record[3] % 10}" if record[3] % 10 else str(record[3] // 10)
    out = _video("H264", profile, level)
    try:
        config = avc.parse_config(record)
        if config.sps:
            out["width"], out["height"] = avc.parse_sps(config.sps[0])
    except ProtocolError:
        pass
    return out


def _audio(codec: str, sample_rate: int = 0, channel: int = 0, profile: str = "") -> dict[str, Any]:
    return {"codec": codec, "sample_rate": sample_rate, "channel": channel, "profile": profile}


def describe_audio(payload: bytes) -> dict[str, Any]:
    """The API's `audio` object from an audio sequence header (legacy AAC, or E-RTMP AAC/Opus/FLAC)."""
    tag = classify_audio(payload)
    codec = tag.codec
    if not tag.enhanced and codec != AAC:
        fmt = payload[0] >> 4 if payload else 0
        return _audio(_LEGACY_AUDIO.get(fmt, f"audio-{fmt}"))
    name = _AUDIO_NAMES.get(codec, codec or "audio-ex")
    data = payload[tag.offset : tag.end]
    if not tag.is_sequence_header:
        return _audio(name)
    if codec == AAC and len(data) >= 2:
        object_type = data[0] >> 3
        rate_index = ((data[0] & 0x07) << 1) | (data[1] >> 7)
        channels = (data[1] >> 3) & 0x0F
        rate = _AAC_RATES[rate_index] if rate_index < len(_AAC_RATES) else 0
        return _audio("AAC", rate, channels, _AAC_PROFILES.get(object_type, ""))
    if codec == OPUS and len(data) >= 19 and data[:8] == b"OpusHead":
        # RFC 7845 5.1; Opus always decodes at 48 kHz (the header's rate is the input's, informative).
        return _audio("Opus", 48000, data[9])
    if codec == FLAC and len(data) >= 4 + 4 + 18 and data[:4] == b"fLaC":
        info = data[8:]  # after the signature and the STREAMINFO block header
        rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
        channels = ((info[12] >> 1) & 0x07) + 1
        return _audio("FLAC", rate, channels)
    return _audio(name)
