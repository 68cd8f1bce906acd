"""HLS media playlists: the sliding window (by duration, as SRS) and the m3u8 text. Pure, no I/O."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field


@dataclass
class Segment:
    sequence: int
    path: str  # on disk
    uri: str  # as the playlist names it
    duration_ms: int
    discontinuity: bool = False  # the first segment after a republish
    # Its file could not be written: listed with EXT-X-GAP (RFC 8216bis 4.4.4.7) so players skip it
    # and the media sequence numbers of the segments after it stay right.
    gap: bool = False

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
        if seg.gap:
            lines.append("#EXT-X-GAP")
        lines.append(f"#EXTINF:{seg.duration_ms / 1000:.3f},")
        lines.append(seg.uri)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading playlists (serving, edge fetching)

# A live media playlist whose file has not changed for this long, and at least this many target
# durations, is the leftover of a writer that is gone (kill -9, a node that left): see `is_stale_live`.
STALE_MIN_S = 30.0
STALE_TARGETS = 6.0
ENDLIST = "#EXT-X-ENDLIST"
_ATTR_URI = re.compile(r'URI="([^"]*)"')


def _tag_value(text: str, tag: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(tag):
            return line[len(tag) :].strip()
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def target_of(text: str) -> float | None:
    """EXT-X-TARGETDURATION in seconds; None for a master playlist (or a broken one)."""
    return _number(_tag_value(text, "#EXT-X-TARGETDURATION:"))


def part_target_of(text: str) -> float | None:
    """PART-TARGET of EXT-X-PART-INF (low-latency HLS), in seconds."""
    info = _tag_value(text, "#EXT-X-PART-INF:")
    if info is None:
        return None
    for attr in info.split(","):
        name, _, value = attr.partition("=")
        if name.strip() == "PART-TARGET":
            return _number(value)
    return None


def media_sequence_of(text: str) -> int | None:
    value = _tag_value(text, "#EXT-X-MEDIA-SEQUENCE:")
    return int(value) if value is not None and value.isdigit() else None


def listed_seconds(text: str) -> float:
    """The EXTINF durations a playlist lists, added up (each clamped to 0..3600 s, unreadable ones left out)."""
    listed = 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            with contextlib.suppress(ValueError):
                listed += max(0.0, min(float(line[8:].partition(",")[0]), 3600.0))
    return listed


# Tags whose URI attributes name files (the init segment, parts, the next part).
_URI_TAGS = ("#EXT-X-MAP:", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:")


def _lines(text: str) -> list[str]:
    """A playlist's lines, stripped, blank ones left out."""
    return [line for raw in text.splitlines() if (line := raw.strip())]


def discontinuity_sequence_of(text: str) -> int:
    value = _tag_value(text, "#EXT-X-DISCONTINUITY-SEQUENCE:")
    return int(value) if value is not None and value.isdigit() else 0


@dataclass(frozen=True)
class Entry:
    """A segment as a playlist lists it."""

    duration_ms: int
    uri: str
    discontinuity: bool


def entries_of(text: str) -> list[Entry] | None:
    """The segments of a plain MPEG-TS live playlist, in order; None for anything else (fMP4's EXT-X-MAP,
    LL-HLS parts, a finished playlist, unreadable durations), which a new writer must not continue."""
    if has_endlist(text):
        return None
    entries: list[Entry] = []
    duration: float | None = None
    discontinuity = False
    for line in _lines(text):
        if line.startswith("#"):
            if line.startswith(_URI_TAGS):
                return None
            if line == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif line.startswith("#EXTINF:"):
                try:
                    duration = float(line[8:].partition(",")[0])
                except ValueError:
                    return None
                if not 0.0 < duration <= 3600.0:
                    return None
            continue
        if duration is None:
            return None
        entries.append(Entry(round(duration * 1000), line, discontinuity))
        duration, discontinuity = None, False
    return entries


def has_endlist(text: str) -> bool:
    return any(line.strip() == ENDLIST for line in text.splitlines())


def uris_of(text: str) -> list[str]:
    """Every URI a media playlist names: segments, and the URI attributes of EXT-X-MAP, parts and hints."""
    uris: list[str] = []
    for line in _lines(text):
        if line.startswith("#"):
            if line.startswith(_URI_TAGS):
                uris += _ATTR_URI.findall(line)
            continue
        uris.append(line)
    return uris


def stale_after(target: float) -> float:
    """Seconds without a change after which a live playlist of this target duration counts as abandoned."""
    return max(STALE_MIN_S, STALE_TARGETS * target)


def is_stale_live(text: str, age_s: float) -> bool:
    """A live media playlist (no EXT-X-ENDLIST) unchanged for longer than `stale_after` its target duration.

    A writer rewrites its playlist at least once a segment (at most a target duration apart, RFC 8216
    4.3.3.1), so six target durations without a change, and never under 30 s, leave room for a slow disk
    or a shared volume's attribute cache and still end a dead stream well before a player gives up on it.
    Master playlists (no target duration) and finished ones never count."""
    target = target_of(text)
    if target is None or has_endlist(text):
        return False
    return age_s > stale_after(target)
