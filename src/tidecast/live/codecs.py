"""Codec facts for the API, read from sequence headers (SRS's `video`/`audio` objects)."""

from __future__ import annotations

from typing import Any

from tidecast.codec import avc
from tidecast.errors import ProtocolError

_AVC_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High10", 122: "High422", 244: "High444"}
_AAC_PROFILES = {1: "Main", 2: "LC", 3: "SSR", 5: "HE", 29: "HEv2"}
_AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]


def describe_video(payload: bytes) -> dict[str, Any]:
    codec = payload[0] & 0x0F if payload else 0
    if codec == 7 and len(payload) >= 9:
        record = payload[5:]
        profile = _AVC_PROFILES.get(record[1], str(record[1]))
        level = f"{record[3] // 10}.{record[3] % 10}" if record[3] % 10 else str(record[3] // 10)
        width = height = 0
        try:
            config = avc.parse_config(record)
            if config.sps:
                width, height = avc.parse_sps(config.sps[0])
        except ProtocolError:
            pass  # the API shows 0x0 rather than failing on an odd SPS
        return {"codec": "H264", "profile": profile, "level": level, "width": width, "height": height}
    if codec == 12 or (payload[:1] and payload[0] & 0x80):
        return {"codec": "HEVC", "profile": "", "level": "", "width": 0, "height": 0}
    return {"codec": f"video-{codec}", "profile": "", "level": "", "width": 0, "height": 0}


def describe_audio(payload: bytes) -> dict[str, Any]:
    fmt = payload[0] >> 4 if payload else 0
    if fmt == 10 and len(payload) >= 4:
        object_type = payload[2] >> 3
        rate_index = ((payload[2] & 0x07) << 1) | (payload[3] >> 7)
        channels = (payload[3] >> 3) & 0x0F
        rate = _AAC_RATES[rate_index] if rate_index < len(_AAC_RATES) else 0
        return {"codec": "AAC", "sample_rate": rate, "channel": channels, "profile": _AAC_PROFILES.get(object_type, "")}
    names = {2: "MP3", 11: "Speex", 7: "PCMA", 8: "PCMU", 13: "Opus"}
    return {"codec": names.get(fmt, f"audio-{fmt}"), "sample_rate": 0, "channel": 0, "profile": ""}
