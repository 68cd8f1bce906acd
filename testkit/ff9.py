"""A current ffmpeg for the codecs Debian's 5.1 cannot put in FLV: the static ffmpeg 9 of the imageio-ffmpeg wheel.

It has libx265, SVT-AV1, libvpx and libopus, writes and reads enhanced FLV
(E-RTMP) and publishes it over RTMP. There is no ffprobe beside it, so
`streams` reads the stream lines `ffmpeg -i` prints.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

try:
    import imageio_ffmpeg

    FFMPEG9: str | None = imageio_ffmpeg.get_ffmpeg_exe()
except (ImportError, RuntimeError):  # the test extra is not installed
    FFMPEG9 = None

needs_ffmpeg9 = pytest.mark.skipif(FFMPEG9 is None, reason="needs the imageio-ffmpeg wheel: pip install -e '.[test]'")

VIDEO_ENCODERS = {
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=25:min-keyint=25"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-g", "25", "-svtav1-params", "lp=1"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "25", "-row-mt", "0"],
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-g", "25"],
}
AUDIO_ENCODERS = {
    "aac": ["-c:a", "aac", "-b:a", "64k"],
    "opus": ["-c:a", "libopus", "-b:a", "64k"],
}


def make_clip(
    path: Path,
    video: str = "hevc",
    audio: str | None = "aac",
    size: str = "320x240",
    seconds: float = 3,
    pix_fmt: str = "yuv420p",
    fmt: str = "flv",
) -> Path:
    """A test clip by ffmpeg 9: 25 fps, a keyframe every second, enhanced FLV for HEVC/AV1/VP9."""
    assert FFMPEG9 is not None
    rate = 48000 if audio == "opus" else 44100
    cmd = [FFMPEG9, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}"]
    cmd += ["-t", str(seconds), "-pix_fmt", pix_fmt, *VIDEO_ENCODERS[video]]
    if audio:
        cmd += AUDIO_ENCODERS[audio]
    cmd += ["-f", fmt, str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return path


_STREAM = re.compile(r"Stream #\d+:\d+[^:]*: (Video|Audio): (\w+)(.*)")
_SIZE = re.compile(r", (\d+)x(\d+)")


def streams(url_or_path: str, *extra: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The streams ffmpeg 9 finds: [{"type": "video", "codec": "hevc", "width": 320, "height": 240}, ...]."""
    assert FFMPEG9 is not None
    out = subprocess.run(
        [FFMPEG9, "-hide_banner", *extra, "-i", url_or_path, "-t", "0.5", "-f", "null", "-"],
        capture_output=True,
        timeout=timeout,
    )
    text = out.stderr.decode(errors="replace")
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        if "Output #" in line:
            break  # the input's streams come first
        m = _STREAM.search(line)
        if m:
            stream: dict[str, Any] = {"type": m.group(1).lower(), "codec": m.group(2)}
            size = _SIZE.search(m.group(3))
            if size and stream["type"] == "video":
                stream["width"], stream["height"] = int(size.group(1)), int(size.group(2))
            found.append(stream)
    assert found, f"ffmpeg 9 found no streams in {url_or_path}:\n{text[-2000:]}"
    return found


def decode_errors(path: str) -> str:
    """What ffmpeg 9 complains about while decoding all of a file (empty: clean)."""
    assert FFMPEG9 is not None
    # The decoded frames keep the file's time base: with the default (one over the frame rate ffmpeg guesses)
    # two frames of a non-constant rate, such as a publisher's `-stream_loop` seam, can round to one
    # timestamp, and the null muxer reports that as if the stream were broken.
    cmd = [FFMPEG9, "-v", "error", "-i", path, "-enc_time_base:v", "demux", "-f", "null", "-"]
    out = subprocess.run(cmd, capture_output=True, timeout=120)
    return out.stderr.decode(errors="replace")
