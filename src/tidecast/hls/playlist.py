"""HLS playlists: the sliding window (by duration, as SRS) and the m3u8 text."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass
class Segment:
    sequence: int
    path: str  # on disk
    uri: str  # as the playlist names it
    duration: float
    discontinuity: bool = False


def slide(segments: list[Segment], window: float) -> list[Segment]:
    """Drop the oldest segments while the rest still cover more than `window` seconds.

    Returns what was dropped. The newest segment always stays.
    """
    dropped: list[Segment] = []
    total = sum(s.duration for s in segments)
    while len(segments) > 1 and total - segments[0].duration >= window:
        total -= segments[0].duration
        dropped.append(segments.pop(0))
    return dropped


def render(segments: list[Segment], fragment: float) -> str:
    longest = max((s.duration for s in segments), default=fragment)
    # RFC 8216: each EXTINF, rounded to the nearest integer, must not exceed the target.
    target = max(math.floor(longest + 0.5), math.ceil(fragment))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
        f"#EXT-X-TARGETDURATION:{target}",
    ]
    for seg in segments:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{seg.duration:.3f}, no desc")
        lines.append(seg.uri)
    return "\n".join(lines) + "\n"


def write_atomically(path: str, data: bytes) -> None:
    """Readers (players, an nginx sharing the volume) see the old file or the new one, never a part."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
