"""HTTP-FLV playback: the FLV file header, then the shared fan-out's FLV batches."""

from __future__ import annotations

from tidecast.codec.flv import flv_header
from tidecast.live.stream import LiveStream
from tidecast.net.formats import FLV, FLV_UNFRAMED
from tidecast.net.http_play import HttpPlayFormat


def header_flags(stream: LiveStream | None) -> tuple[bool, bool]:
    """(audio, video) flags of the FLV header: configured, or guessed from what the stream carries (SRS's
    guess_has_av), so an audio-only stream does not make ffmpeg or mpegts.js wait for video forever."""
    if stream is None:
        return True, True
    remux = stream.settings.http_remux
    audio, video = remux.has_audio, remux.has_video
    if remux.guess_has_av and stream.active and (stream.video_sh or stream.audio_sh or stream.gop_frames):
        audio = audio and stream.audio_sh is not None
        video = video and (stream.video_sh is not None or any(p.is_video for p in stream.gop_packets()))
    return audio, video


def _preamble(stream: LiveStream | None) -> bytes:
    return flv_header(*header_flags(stream))


# HTTP/1.0 has no chunked coding: its players get the same tags as a body the connection's close ends.
HTTP_FLV = HttpPlayFormat(
    "flv-play", ".flv", "video/x-flv", lambda stream: FLV, _preamble,
    http10=HttpPlayFormat("flv-play", ".flv", "video/x-flv", lambda stream: FLV_UNFRAMED, _preamble),
)  # fmt: skip
