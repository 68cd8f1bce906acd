"""Playlists of the fMP4 variants: EXT-X-MAP, and for low-latency HLS (RFC 8216bis) the parts,
the preload hint, server control and delta updates. Pure, no I/O."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

from tidecast.hls.playlist import Segment


@dataclass(slots=True)
class Part:
    uri: str
    duration_ms: int
    independent: bool  # starts with a keyframe (or carries audio only)


@dataclass
class Fmp4Segment(Segment):
    map_uri: str = ""  # the init segment it needs
    pdt: float = 0.0  # EXT-X-PROGRAM-DATE-TIME of its first sample, epoch seconds
    parts: list[Part] = field(default_factory=list)


def target_duration(longest_ms: int, fragment: float) -> int:
    """EXT-X-TARGETDURATION: the longest segment rounded to the nearest second, as RFC 8216 4.3.3.1 allows,
    and at least the fragment. Not rounded up as the MPEG-TS playlist does (SRS's way): a segment of 1.015 s
    (B-frames at a publisher's loop) would double a 1 s target, and with it every low-latency hold time."""
    return max((longest_ms + 500) // 1000, math.ceil(fragment), 1)


def _pdt(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(version: int, target: int, sequence: int, discontinuity_sequence: int) -> list[str]:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}"]
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{sequence}")
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    return lines


def _segment_head(lines: list[str], seg: Fmp4Segment, previous_map: str, with_pdt: bool) -> None:
    if seg.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if seg.map_uri != previous_map:
        lines.append(f'#EXT-X-MAP:URI="{seg.map_uri}"')
    if with_pdt:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(seg.pdt)}")


def render_fmp4(
    segments: list[Fmp4Segment], fragment: float, longest_ms: int = 0, discontinuity_sequence: int = 0
) -> str:
    """The plain fMP4 playlist (what goes to disk): version 7 for EXT-X-MAP, no parts. No EXT-X-ENDLIST,
    as for MPEG-TS: a stopped stream may come back."""
    longest = max([longest_ms, *(s.duration_ms for s in segments)])
    first = segments[0].sequence if segments else 0
    lines = _header(7, target_duration(longest, fragment), first, discontinuity_sequence)
    previous = ""
    for seg in segments:
        _segment_head(lines, seg, previous, True)
        previous = seg.map_uri
        lines.append(f"#EXTINF:{seg.duration_ms / 1000:.3f},")
        lines.append(seg.uri)
    return "\n".join(lines) + "\n"


def render_ll(
    segments: list[Fmp4Segment],
    current: Fmp4Segment | None,
    hint_uri: str | None,
    part_target: float,
    fragment: float,
    longest_ms: int = 0,
    discontinuity_sequence: int = 0,
    skip: bool = False,
) -> tuple[str, int]:
    """The low-latency playlist and its target duration. `current` is the segment being cut (its parts
    so far, no EXTINF yet); `hint_uri` the part that comes next. With `skip`, the segments older than
    CAN-SKIP-UNTIL become one EXT-X-SKIP (a delta update, RFC 8216bis 6.2.5.1)."""
    longest = max([longest_ms, *(s.duration_ms for s in segments)])
    target = target_duration(longest, fragment)
    first = segments[0].sequence if segments else (current.sequence if current else 0)
    lines = _header(9, target, first, discontinuity_sequence)
    skip_until = 6 * target
    lines.insert(
        3,
        f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.1f},"
        f"PART-HOLD-BACK={3 * part_target:.3f}",
    )
    lines.insert(4, f"#EXT-X-PART-INF:PART-TARGET={part_target:.3f}")
    skipped = 0
    if skip:
        remaining = sum(s.duration_ms for s in segments)
        while skipped < len(segments) and remaining - segments[skipped].duration_ms >= skip_until * 1000:
            remaining -= segments[skipped].duration_ms
            skipped += 1
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    # Parts are listed for the last three target durations only (RFC 8216bis 4.4.4.9).
    with_parts = len(segments)
    recent = current.duration_ms if current else 0
    while with_parts > 0 and recent < 3 * target * 1000:
        with_parts -= 1
        recent += segments[with_parts].duration_ms
    previous = ""
    for i, seg in enumerate(segments[skipped:], skipped):
        _segment_head(lines, seg, previous, True)
        previous = seg.map_uri
        if i >= with_parts:
            lines.extend(_part_lines(seg.parts))
        lines.append(f"#EXTINF:{seg.duration_ms / 1000:.3f},")
        lines.append(seg.uri)
    if current is not None and (current.parts or current.discontinuity or current.map_uri != previous):
        # A date only with a part to carry it: a trailing tag without a media line confuses parsers.
        _segment_head(lines, current, previous, bool(current.parts))
        lines.extend(_part_lines(current.parts))
    if hint_uri is not None:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint_uri}"')
    return "\n".join(lines) + "\n", target


def _part_lines(parts: list[Part]) -> list[str]:
    return [
        f'#EXT-X-PART:DURATION={p.duration_ms / 1000:.3f},URI="{p.uri}"' + (",INDEPENDENT=YES" if p.independent else "")
        for p in parts
    ]
