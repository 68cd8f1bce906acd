"""Test clips made with ffmpeg, one recipe for tests/ and bench/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def make_clip(
    path: Path,
    seconds: int = 6,
    kbps: int = 600,
    size: str = "320x240",
    noise: bool = False,
    cbr: bool = False,
) -> Path:
    """H.264 + AAC FLV at 25 fps with a keyframe every second; reused when it already exists.

    `noise` (testsrc2 with temporal noise) and `cbr` are for the bench: plain testsrc encodes to under
    half the asked bitrate and repeats identical frames, which would make both the rate and the
    content-matched latency wrong.
    """
    if path.exists() and path.stat().st_size > 0:
        return path
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is needed to make the test clip (apt-get install -y ffmpeg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    source = f"testsrc2=size={size}:rate=25" if noise else f"testsrc=size={size}:rate=25"
    filters = ["-vf", "noise=alls=12:allf=t"] if noise else []
    rate = ["-minrate", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k"] if cbr else []
    # Per-process temporary name: benches start several loads at once on a fresh machine, and each
    # makes the clip; the last rename wins and every one finds a whole file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.flv")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", source,
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", str(seconds), *filters,
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k", *rate,
         "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k",
         "-f", "flv", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.rename(path)
    return path
