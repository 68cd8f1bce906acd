"""HLS media playlists: the sliding window (by duration, as SRS) and the m3u8 text. Pure, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Segment:
    sequence: int
    path: str  # on disk
    uri: str  # as the playlist names it
    duration_ms: int
    discontinuity: bool = False  # the first segment after a republish

    @property
    def duration(self) -> float:
        return self.duration_ms / 1000.0


def slide(segments: list[Segment], window: float) -> list[Segment]:
    """Drop the oldest segments (in place) while all of them together last longer than `window` seconds.

    Returns what was dropped. The newest segment always stays, however long.
    Durations are summed in whole milliseconds so the comparison is exact.
    """
    limit = window * 1000.0
    total = sum(s.duration_ms for s in segments)
    cut = 0
    while len(segments) - cut > 1 and total > limit:
        total -= segments[cut].duration_ms
        cut += 1
    dropped = segments[:cut]
    del segments[:cut]
    return dropped


def target_duration(longest_ms: int, fragment: float) -> int:
    """EXT-X-TARGETDURATION: the longest segment rounded up, and at least the configured fragment.

    Rounding up (as SRS) also satisfies RFC 8216 4.3.3.1, which only asks that no
    EXTINF, rounded to the nearest integer, exceed it.
    """
    return max(-(-longest_ms // 1000), math.ceil(fragment), 1)


@dataclass
class Playlist:
    """A live playlist's state: the segments in the window and what the header needs."""

    segments: list[Segment] = field(default_factory=list)
    # Only ever grows while the playlist lives: RFC 8216 6.2.1 forbids changing it.
    longest_ms: int = 0
    # Discontinuity tags that slid out of the window (EXT-X-DISCONTINUITY-SEQUENCE, RFC 8216 6.2.2).
    discontinuity_sequence: int = 0

    def add(self, segment: Segment, window: float) -> list[Segment]:
        """Append a finished segment and slide the window; returns the segments dropped from it."""
        self.segments.append(segment)
        self.longest_ms = max(self.longest_ms, segment.duration_ms)
        dropped = slide(self.segments, window)
        self.discontinuity_sequence += sum(1 for s in dropped if s.discontinuity)
        return dropped

    def render(self, fragment: float) -> str:
        return render(self.segments, fragment, self.longest_ms, self.discontinuity_sequence)


def render(segments: list[Segment], fragment: float, longest_ms: int = 0, discontinuity_sequence: int = 0) -> str:
    """The m3u8 text. No EXT-X-ENDLIST: like SRS, a stream that stopped may come back."""
    longest = max([longest_ms, *(s.duration_ms for s in segments)])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    lines.append(f"#EXT-X-TARGETDURATION:{target_duration(longest, fragment)}")
    for seg in segments:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{seg.duration_ms / 1000:.3f},")
        lines.append(seg.uri)
    return "\n".join(lines) + "\n"
