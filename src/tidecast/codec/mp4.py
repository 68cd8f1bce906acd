"""ISO BMFF (MP4) boxes: progressive files and fragmented MP4 / CMAF, from FLV-style inputs.

Pure: bytes in, bytes out, no I/O. Two users:

- `ProgressiveMp4` keeps the sample tables of a file whose media data is
  appended as it arrives (the caller writes `header()` and then each sample's
  bytes); at the end `moov()` and `mdat_header()` give what to append and what
  to patch in. Fast start either way: the moov in space reserved at the start
  (`reserve`, `in_reserve()`), or a copy with shifted offsets
  (`faststart_layout()`).
- `init_segment()` and `media_fragment()` write CMAF: an init segment (ftyp +
  moov with mvex/trex and empty sample tables) and moof + mdat fragments;
  `FragmentWriter` does the bookkeeping for a live muxer (durations from the
  next sample, sequence numbers).
- `flv_video()`, `flv_audio()`, `video_track_from_flv()` and
  `audio_track_from_flv()` take FLV tag bodies, legacy or enhanced RTMP, as
  a live stream hands them over.

A track is described by a `TrackSpec`: the sample-entry FourCC and the codec
configuration record exactly as FLV / enhanced RTMP carry it (avcC, hvcC,
av1C and vpcC bodies; the AAC AudioSpecificConfig; an Opus dOps body or an
OpusHead), so a new codec needs a FourCC here, not a new code path.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tidecast.codec import aac, avc
from tidecast.errors import ProtocolError

MOVIE_TIMESCALE: Final = 1000
_U32_MAX: Final = 0xFFFFFFFF

# trun sample flags (ISO 14496-12 8.8.3.1): a sync sample depends on nothing;
# any other video sample depends on others and is not a sync sample.
SYNC_SAMPLE_FLAGS: Final = 0x02000000
NON_SYNC_SAMPLE_FLAGS: Final = 0x01010000

# Sample-entry FourCC → the box its configuration record goes in.
VIDEO_CONFIG_BOX: Final = {"avc1": b"avcC", "hvc1": b"hvcC", "hev1": b"hvcC", "av01": b"av1C", "vp09": b"vpcC"}
AUDIO_CODECS: Final = ("mp4a", "Opus")

_IDENTITY_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *parts: bytes) -> bytes:
    """One box; a body over 4 GiB uses the 64-bit size form."""
    size = 8 + sum(len(p) for p in parts)
    if size > _U32_MAX:
        return b"".join((struct.pack(">I4sQ", 1, kind, size + 8), *parts))
    return b"".join((struct.pack(">I4s", size, kind), *parts))


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *parts)


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One track: `codec` is the sample-entry FourCC, `config` its configuration record."""

    kind: str  # "video" | "audio"
    codec: str  # avc1 hvc1 hev1 av01 vp09 | mp4a Opus
    config: bytes
    timescale: int
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0

    def __post_init__(self) -> None:
        if self.kind == "video" and self.codec not in VIDEO_CONFIG_BOX:
            raise ProtocolError(f"MP4: no sample entry for video codec {self.codec!r}")
        if self.kind == "audio" and self.codec not in AUDIO_CODECS:
            raise ProtocolError(f"MP4: no sample entry for audio codec {self.codec!r}")
        if self.kind not in ("video", "audio"):
            raise ProtocolError(f"MP4: track kind {self.kind!r} is neither video nor audio")
        if self.timescale <= 0:
            raise ProtocolError(f"MP4: track timescale {self.timescale} must be positive")


def avc_track(record: bytes, width: int, height: int, timescale: int = MOVIE_TIMESCALE) -> TrackSpec:
    """An H.264 track from an AVCDecoderConfigurationRecord."""
    return TrackSpec("video", "avc1", bytes(record), timescale, width=width, height=height)


def aac_track(asc: bytes, sample_rate: int, channels: int) -> TrackSpec:
    """An AAC track from an AudioSpecificConfig; its timescale is the sample rate (1024 per frame)."""
    return TrackSpec("audio", "mp4a", bytes(asc), sample_rate, sample_rate=sample_rate, channels=channels)


def opus_track(config: bytes) -> TrackSpec:
    """An Opus track from a dOps body or an OpusHead packet; Opus runs at 48 kHz in MP4."""
    dops = dops_from_opus_head(config) if config.startswith(b"OpusHead") else bytes(config)
    if len(dops) < 11:
        raise ProtocolError("Opus config shorter than an OpusSpecificBox")
    return TrackSpec("audio", "Opus", dops, 48000, sample_rate=48000, channels=dops[1])


def dops_from_opus_head(head: bytes) -> bytes:
    """OpusHead (RFC 7845, little-endian) → dOps body (Opus in ISO BMFF, big-endian, version 0)."""
    if len(head) < 19 or not head.startswith(b"OpusHead"):
        raise ProtocolError("not an OpusHead packet")
    channels = head[9]
    pre_skip, rate, gain = struct.unpack_from("<HIh", head, 10)
    family = head[18]
    out = struct.pack(">BBHIhB", 0, channels, pre_skip, rate, gain, family)
    if family != 0:
        out += head[19 : 21 + channels]  # stream count, coupled count, channel mapping
    return out


# ---------------------------------------------------------------- sample entries


def _descriptor(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    # The 4-byte form: 7 bits per byte, continuation bit on all but the last.
    return bytes((tag, 0x80 | (n >> 21) & 0x7F, 0x80 | (n >> 14) & 0x7F, 0x80 | (n >> 7) & 0x7F, n & 0x7F)) + body


def esds(asc: bytes, track_id: int = 0) -> bytes:
    """The esds box for AAC: an ES descriptor holding the AudioSpecificConfig."""
    decoder_config = _descriptor(
        0x04,
        # objectTypeIndication 0x40 (MPEG-4 audio), streamType 5 (audio) << 2 | reserved 1,
        # bufferSizeDB, maxBitrate, avgBitrate (0: unknown).
        struct.pack(">BB3sII", 0x40, 0x15, b"\x00\x00\x00", 0, 0) + _descriptor(0x05, asc),
    )
    es = _descriptor(0x03, struct.pack(">HB", track_id & 0xFFFF, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def sample_entry(track: TrackSpec, track_id: int = 0) -> bytes:
    reserved = b"\x00" * 6 + struct.pack(">H", 1)  # data_reference_index 1
    if track.kind == "video":
        compressor = b"\x00" * 32
        body = struct.pack(
            ">HH12sHHIIIH32sHh",
            0,
            0,
            b"\x00" * 12,
            track.width & 0xFFFF,
            track.height & 0xFFFF,
            0x00480000,  # 72 dpi
            0x00480000,
            0,
            1,  # frame_count
            compressor,
            0x0018,  # depth: colour, no alpha
            -1,
        )
        return box(track.codec.encode(), reserved, body, box(VIDEO_CONFIG_BOX[track.codec], track.config))
    rate = track.sample_rate if track.sample_rate < 0x10000 else 0
    body = struct.pack(">8sHHHHI", b"\x00" * 8, track.channels or 2, 16, 0, 0, rate << 16)
    if track.codec == "mp4a":
        config = esds(track.config, track_id)
    else:
        config = box(b"dOps", track.config)
    return box(track.codec.encode(), reserved, body, config)


# ---------------------------------------------------------------- common moov parts


def ftyp(fragmented: bool = False) -> bytes:
    if fragmented:
        return box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcisomdashmp41")
    return box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")


def _mvhd(duration: int, next_track_id: int) -> bytes:
    version = 1 if duration > _U32_MAX else 0
    times = (
        struct.pack(">QQIQ", 0, 0, MOVIE_TIMESCALE, duration)
        if version
        else struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, duration)
    )
    rest = struct.pack(">IH10s", 0x00010000, 0x0100, b"\x00" * 10) + _IDENTITY_MATRIX + b"\x00" * 24
    return full_box(b"mvhd", version, 0, times, rest, struct.pack(">I", next_track_id))


def _tkhd(track: TrackSpec, track_id: int, duration: int) -> bytes:
    version = 1 if duration > _U32_MAX else 0
    if version:
        times = struct.pack(">QQIIQ", 0, 0, track_id, 0, duration)
    else:
        times = struct.pack(">IIIII", 0, 0, track_id, 0, duration)
    volume = 0x0100 if track.kind == "audio" else 0
    rest = struct.pack(">8sHHHH", b"\x00" * 8, 0, 0, volume, 0) + _IDENTITY_MATRIX
    size = struct.pack(">II", (track.width & 0xFFFF) << 16, (track.height & 0xFFFF) << 16)
    return full_box(b"tkhd", version, 0x3, times, rest, size)  # enabled, in movie


def _mdhd(track: TrackSpec, duration: int) -> bytes:
    language = 0x55C4  # "und", ISO 639-2 packed in 5-bit letters
    if duration > _U32_MAX:
        return full_box(b"mdhd", 1, 0, struct.pack(">QQIQHH", 0, 0, track.timescale, duration, language, 0))
    return full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, duration, language, 0))


def _hdlr(track: TrackSpec) -> bytes:
    kind, name = (b"vide", b"VideoHandler\x00") if track.kind == "video" else (b"soun", b"SoundHandler\x00")
    return full_box(b"hdlr", 0, 0, struct.pack(">I4s12s", 0, kind, b"\x00" * 12), name)


def _media_header(track: TrackSpec) -> bytes:
    if track.kind == "video":
        return full_box(b"vmhd", 0, 1, b"\x00" * 8)
    return full_box(b"smhd", 0, 0, b"\x00" * 4)


_DINF: Final = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))


def _stsd(entries: Iterable[bytes]) -> bytes:
    items = list(entries)
    return full_box(b"stsd", 0, 0, struct.pack(">I", len(items)), *items)


def _trak(track: TrackSpec, track_id: int, duration_movie: int, duration_media: int, stbl: bytes, edts: bytes) -> bytes:
    minf = box(b"minf", _media_header(track), _DINF, stbl)
    mdia = box(b"mdia", _mdhd(track, duration_media), _hdlr(track), minf)
    return box(b"trak", _tkhd(track, track_id, duration_movie), edts, mdia)


# ---------------------------------------------------------------- progressive MP4


def _pack(code: str, values: Iterable[int]) -> bytes:
    a = array(code, values)
    if a.itemsize > 1 and struct.pack("=H", 1) == b"\x01\x00":
        a.byteswap()  # MP4 is big-endian
    return a.tobytes()


@dataclass
class _Table:
    """The sample table of one progressive track, kept in compact arrays."""

    spec: TrackSpec
    entries: list[TrackSpec] = field(default_factory=list)  # sample descriptions (a config change adds one)
    dts: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    cts: array = field(default_factory=lambda: array("i"))  # type: ignore[type-arg]
    sizes: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    sync: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]  # 1-based sample numbers
    # Chunks: first sample index, offset in the file, description index (1-based).
    chunk_first: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    chunk_offset: array = field(default_factory=lambda: array("Q"))  # type: ignore[type-arg]
    chunk_entry: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    default_duration: int = 0

    def last_duration(self) -> int:
        """The newest sample's duration, unknown until a next one: the one before it, else the default."""
        dts = self.dts
        last = dts[-1] - dts[-2] if len(dts) > 1 else 0
        return last if last > 0 else self.default_duration

    def media_duration(self) -> int:
        # Decode times never go back (add() sees to it), so the durations sum to this.
        return self.dts[-1] - self.dts[0] + self.last_duration() if self.dts else 0

    def durations(self) -> array:  # type: ignore[type-arg]
        dts = self.dts
        out = array("q", (dts[i + 1] - dts[i] for i in range(len(dts) - 1)))
        if dts:
            out.append(self.last_duration())
        return out

    def stbl(self, shift: int) -> bytes:
        n = len(self.sizes)
        durations = self.durations()
        # Run-length tables in arrays: an hour of video with B-frames has ~90k ctts runs.
        stts_runs = array("q")
        for d in durations:
            if stts_runs and stts_runs[-1] == d:
                stts_runs[-2] += 1
            else:
                stts_runs.extend((1, d))
        parts = [
            _stsd(sample_entry(e, 0) for e in self.entries),
            full_box(b"stts", 0, 0, struct.pack(">I", len(stts_runs) // 2), _pack("I", stts_runs)),
        ]
        if any(self.cts):
            ctts_runs = array("q")
            for c in self.cts:
                if ctts_runs and ctts_runs[-1] == c:
                    ctts_runs[-2] += 1
                else:
                    ctts_runs.extend((1, c))
            negative = any(c < 0 for c in self.cts)
            code = "i" if negative else "I"
            parts.append(
                full_box(
                    b"ctts", 1 if negative else 0, 0, struct.pack(">I", len(ctts_runs) // 2), _pack(code, ctts_runs)
                )
            )
        if self.spec.kind == "video" and len(self.sync) < n:
            parts.append(full_box(b"stss", 0, 0, struct.pack(">I", len(self.sync)), _pack("I", self.sync)))
        stsc = array("q")
        nchunks = len(self.chunk_first)
        for i in range(nchunks):
            count = (self.chunk_first[i + 1] if i + 1 < nchunks else n) - self.chunk_first[i]
            entry = self.chunk_entry[i]
            if stsc and stsc[-2] == count and stsc[-1] == entry:
                continue
            stsc.extend((i + 1, count, entry))
        parts.append(full_box(b"stsc", 0, 0, struct.pack(">I", len(stsc) // 3), _pack("I", stsc)))
        parts.append(full_box(b"stsz", 0, 0, struct.pack(">II", 0, n), _pack("I", self.sizes)))
        offsets = self.chunk_offset if not shift else array("Q", (o + shift for o in self.chunk_offset))
        if offsets and max(offsets) > _U32_MAX:
            parts.append(full_box(b"co64", 0, 0, struct.pack(">I", len(offsets)), _pack("Q", offsets)))
        else:
            parts.append(full_box(b"stco", 0, 0, struct.pack(">I", len(offsets)), _pack("I", offsets)))
        return box(b"stbl", *parts)


class ProgressiveMp4:
    """The sample tables of a progressive MP4 whose media is appended as it comes.

    The caller writes `header()` first, then each sample's bytes right after
    calling `add()` for it, in order; `position` is where the next byte goes.
    At the end it appends `moov()` and overwrites the `MDAT_HEADER_SIZE` bytes
    at `mdat_header_offset` with `mdat_header()`. Tracks are added with
    `set_track()` (again with a new config to start a new sample description).
    """

    MDAT_HEADER_SIZE = 16  # always the 64-bit form: the final size is unknown while writing

    def __init__(self, reserve: int = 0) -> None:
        """`reserve`: bytes of a `free` box after the ftyp where the moov goes if it fits (fast start
        without a second pass over the file); 0 for none."""
        self._tables: dict[str, _Table] = {}
        self._order: list[str] = []
        self._last_track: str | None = None
        head = ftyp()
        self.reserve_offset = len(head)
        self.reserve = reserve if reserve >= 8 else 0
        if self.reserve:
            head += struct.pack(">I4s", self.reserve, b"free") + b"\x00" * (self.reserve - 8)
        self.mdat_header_offset = len(head)
        self._header = head + struct.pack(">I4sQ", 1, b"mdat", 0)
        self.position = len(self._header)

    def in_reserve(self, moov: bytes) -> bytes | None:
        """What to write over the reserved space at `reserve_offset` (the moov and a `free` box for the
        rest), or None when the moov does not fit and goes after the mdat instead."""
        room = self.reserve
        if room and len(moov) == room:
            return moov
        if room and len(moov) + 8 <= room:
            return moov + struct.pack(">I4s", room - len(moov), b"free")
        return None

    def header(self) -> bytes:
        return self._header

    def set_track(self, key: str, spec: TrackSpec, default_duration: int = 0) -> None:
        """Declare track `key` ("video"/"audio"), or a new sample description for it."""
        table = self._tables.get(key)
        if table is None:
            table = _Table(spec, [spec], default_duration=default_duration)
            self._tables[key] = table
            self._order.append(key)
            return
        if spec.timescale != table.spec.timescale or spec.codec != table.spec.codec:
            raise ProtocolError(f"MP4: the {key} track cannot change codec or timescale mid-file")
        if spec != table.entries[-1]:
            table.entries.append(spec)
            self._last_track = None  # the next sample opens a chunk with the new description

    def add(self, key: str, dts: int, cts: int, size: int, sync: bool) -> None:
        """One sample of `size` bytes, about to be written at `position`."""
        table = self._tables[key]
        if table.dts and dts < table.dts[-1]:
            dts = table.dts[-1]  # decode times never go back; the caller's jitter should have seen to it
        n = len(table.sizes)
        if self._last_track != key:
            table.chunk_first.append(n)
            table.chunk_offset.append(self.position)
            table.chunk_entry.append(len(table.entries))
            self._last_track = key
        table.dts.append(dts)
        table.cts.append(cts)
        table.sizes.append(size)
        if sync:
            table.sync.append(n + 1)
        self.position += size

    @property
    def samples(self) -> int:
        return sum(len(t.sizes) for t in self._tables.values())

    def duration_ms(self) -> int:
        """The movie's duration: from the earliest first sample to the latest end."""
        spans = self._spans()
        if not spans:
            return 0
        start = min(s for s, _ in spans.values())
        return max(e for _, e in spans.values()) - start

    def _spans(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for key, t in self._tables.items():
            if not t.dts:
                continue
            scale = t.spec.timescale
            first = t.dts[0] * MOVIE_TIMESCALE // scale
            end = (t.dts[0] + t.media_duration()) * MOVIE_TIMESCALE // scale
            out[key] = (first, end)
        return out

    def moov(self, shift: int = 0) -> bytes:
        """The moov box; `shift` is added to every chunk offset (the moov's own size, for fast start)."""
        spans = self._spans()
        start = min((s for s, _ in spans.values()), default=0)
        traks: list[bytes] = []
        track_id = 0
        end_all = 0
        for key in self._order:
            t = self._tables[key]
            if not t.sizes:
                continue
            track_id += 1
            media_duration = t.media_duration()
            first, end = spans[key]
            end_all = max(end_all, end - start)
            edts = b""
            if first > start:
                # An empty edit: this track starts later than the movie (audio after video, or
                # the reverse); without it both would be played from time 0. The media's own
                # timeline starts at its first sample, hence media_time 0 for the second edit.
                elst = full_box(
                    b"elst", 0, 0, struct.pack(">I", 2),
                    struct.pack(">IiI", first - start, -1, 0x10000),
                    struct.pack(">IiI", end - first, 0, 0x10000),
                )  # fmt: skip
                edts = box(b"edts", elst)
            traks.append(_trak(t.spec, track_id, end - start, media_duration, t.stbl(shift), edts))
        return box(b"moov", _mvhd(end_all, track_id + 1), *traks)

    def mdat_header(self) -> bytes:
        """The final 16-byte mdat header (64-bit size) for `mdat_header_offset`."""
        return struct.pack(">I4sQ", 1, b"mdat", self.position - self.mdat_header_offset)

    def faststart_layout(self) -> tuple[bytes, int]:
        """For a fast-start copy: (ftyp + moov with shifted offsets, where the old mdat header starts).

        The copy is: this prefix, then the original file's bytes from the
        returned offset up to `position` (the mdat header and data, not the
        moov after them), with the mdat header replaced by `mdat_header()`."""
        head = ftyp()
        size = len(self.moov(0))
        # The shift may switch stco to co64 and so grow the moov: settle it.
        for _ in range(3):
            moov = self.moov(len(head) + size - self.mdat_header_offset)
            if len(moov) == size:
                break
            size = len(moov)
        return head + moov, self.mdat_header_offset


# ---------------------------------------------------------------- fragmented MP4 (CMAF)


def init_segment(tracks: Sequence[TrackSpec]) -> bytes:
    """ftyp + moov for fragments: track ids are 1.. in `tracks` order."""
    empty_tables = (
        full_box(b"stts", 0, 0, b"\x00" * 4)
        + full_box(b"stsc", 0, 0, b"\x00" * 4)
        + full_box(b"stsz", 0, 0, b"\x00" * 8)
        + full_box(b"stco", 0, 0, b"\x00" * 4)
    )
    traks = []
    trexs = []
    for i, track in enumerate(tracks, 1):
        stbl = box(b"stbl", _stsd([sample_entry(track, i)]), empty_tables)
        traks.append(_trak(track, i, 0, 0, stbl, b""))
        trexs.append(full_box(b"trex", 0, 0, struct.pack(">IIIII", i, 1, 0, 0, 0)))
    mvex = box(b"mvex", *trexs)
    return ftyp(fragmented=True) + box(b"moov", _mvhd(0, len(tracks) + 1), *traks, mvex)


@dataclass(slots=True)
class Sample:
    """One sample of a fragment; times in the track's timescale."""

    duration: int
    data: bytes
    sync: bool = True
    cts: int = 0  # composition offset, may be negative (trun version 1)


@dataclass(slots=True)
class TrackRun:
    """The samples of one track in a fragment; `track_id` as in `init_segment` (1-based)."""

    track_id: int
    base_dts: int
    samples: list[Sample]


def media_fragment(sequence: int, runs: Sequence[TrackRun]) -> bytes:
    """moof + mdat: one traf per run, their data in the same order in the mdat."""
    runs = [r for r in runs if r.samples]
    # trun flags: data-offset, sample duration, size, flags, composition offset.
    flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
    trafs_without_offsets: list[tuple[bytes, bytes, bytes]] = []
    for run in runs:
        tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))  # default-base-is-moof
        tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_dts))
        table = b"".join(
            struct.pack(">IIIi", s.duration, len(s.data), SYNC_SAMPLE_FLAGS if s.sync else NON_SYNC_SAMPLE_FLAGS, s.cts)
            for s in run.samples
        )
        trafs_without_offsets.append((tfhd, tfdt, table))
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence & _U32_MAX))
    # Every trun is 20 bytes + its table; the data offsets depend only on sizes, known now.
    moof_size = 8 + len(mfhd) + sum(8 + len(h) + len(d) + 20 + len(t) for h, d, t in trafs_without_offsets)
    offset = moof_size + 8
    trafs = []
    for run, (tfhd, tfdt, table) in zip(runs, trafs_without_offsets, strict=True):
        trun = full_box(b"trun", 1, flags, struct.pack(">Ii", len(run.samples), offset), table)
        trafs.append(box(b"traf", tfhd, tfdt, trun))
        offset += sum(len(s.data) for s in run.samples)
    moof = box(b"moof", mfhd, *trafs)
    if len(moof) != moof_size:
        raise AssertionError("moof size mismatch")  # a programming error, never data-dependent
    return moof + box(b"mdat", *(s.data for run in runs for s in run.samples))


# ---------------------------------------------------------------- from FLV tag bodies


def flv_video(payload: bytes) -> tuple[str, int, int, bytes] | None:
    """(sample-entry FourCC, packet kind, composition offset ms, body) of an FLV video tag body, legacy
    (AVC, SRS's HEVC id 12) or enhanced RTMP. Kind 0 is a configuration record, 1 a coded frame; None
    for what MP4 has no sample for (end of sequence, metadata, multitrack, other codecs)."""
    if len(payload) < 5:
        return None
    if payload[0] & 0x80:  # enhanced RTMP: FourCC and packet type in the ExHeader
        fourcc = payload[1:5].decode("latin-1")
        packet = payload[0] & 0x0F
        if packet == 0:
            return fourcc, 0, 0, payload[5:]
        if packet == 1:  # CodedFrames: a composition offset, for AVC and HEVC only
            if fourcc in ("avc1", "hvc1") and len(payload) >= 8:
                return fourcc, 1, int.from_bytes(payload[5:8], "big", signed=True), payload[8:]
            return fourcc, 1, 0, payload[5:]
        if packet == 3:  # CodedFramesX: offset 0
            return fourcc, 1, 0, payload[5:]
        return None
    legacy = {7: "avc1", 12: "hvc1"}.get(payload[0] & 0x0F)
    if legacy is None or payload[1] not in (0, 1):
        return None
    return legacy, payload[1], int.from_bytes(payload[2:5], "big", signed=True), payload[5:]


def flv_audio(payload: bytes) -> tuple[str, int, bytes] | None:
    """(sample-entry FourCC, packet kind, body) of an FLV audio tag body: AAC (legacy or in the enhanced-RTMP
    form, FourCC mp4a) or enhanced-RTMP Opus."""
    if len(payload) < 2:
        return None
    fmt = payload[0] >> 4
    if fmt == 10:
        return "mp4a", payload[1], payload[2:]
    if fmt == 9 and len(payload) >= 5:  # enhanced RTMP audio: packet type and FourCC
        packet = payload[0] & 0x0F
        fourcc = payload[1:5].decode("latin-1")
        if fourcc in ("Opus", "mp4a") and packet in (0, 1):
            return fourcc, packet, payload[5:]
    return None


def video_track_from_flv(
    payload: bytes, timescale: int = MOVIE_TIMESCALE, width: int = 0, height: int = 0
) -> TrackSpec:
    """The track of a video sequence header; H.264 dimensions come from its SPS, other codecs' from the
    caller (0 leaves them to the decoder). ProtocolError for anything else."""
    parts = flv_video(payload)
    if parts is None or parts[1] != 0:
        raise ProtocolError("not a video sequence header MP4 can carry")
    fourcc, _, _, record = parts
    if fourcc not in VIDEO_CONFIG_BOX:
        raise ProtocolError(f"MP4: no sample entry for video codec {fourcc!r}")
    if fourcc == "avc1" and not (width and height):
        width, height = avc.parse_sps(avc.parse_config(record).sps[0])
    return TrackSpec("video", fourcc, bytes(record), timescale, width=width, height=height)


def audio_track_from_flv(payload: bytes) -> TrackSpec:
    """The track of an audio sequence header (AAC AudioSpecificConfig, or enhanced-RTMP Opus)."""
    parts = flv_audio(payload)
    if parts is None or parts[1] != 0:
        raise ProtocolError("not an audio sequence header MP4 can carry")
    fourcc, _, config = parts
    if fourcc == "mp4a":
        asc = aac.parse_config(config)
        return aac_track(config, asc.sample_rate, asc.channels)
    return opus_track(config)


class FragmentWriter:
    """CMAF for live use: samples in as they come, `fragment()` out whenever a segment or part is cut.

    A sample's duration is the distance to the next one of its track, so each
    track's newest sample waits for the next fragment; `fragment(final=True)`
    flushes it too, with the previous duration (or `default_durations`)."""

    def __init__(self, tracks: Sequence[TrackSpec], default_durations: Sequence[int] | None = None) -> None:
        self.tracks = list(tracks)
        self.sequence = 0
        self._defaults = list(default_durations or [0] * len(self.tracks))
        self._pending: list[list[tuple[int, bytes, bool, int]]] = [[] for _ in self.tracks]
        self._last_duration = list(self._defaults)

    def init_segment(self) -> bytes:
        return init_segment(self.tracks)

    def add(self, track: int, dts: int, data: bytes, sync: bool = True, cts: int = 0) -> None:
        """A sample of track `track` (0-based, as in `tracks`), dts in that track's timescale."""
        self._pending[track].append((dts, data, sync, cts))

    def buffered(self, track: int) -> int:
        """Samples of `track` waiting for the next fragment (the newest one always waits)."""
        return len(self._pending[track])

    def fragment(self, final: bool = False) -> bytes:
        """moof + mdat of what is buffered; b"" when there is nothing to write."""
        runs: list[TrackRun] = []
        for i, pending in enumerate(self._pending):
            keep = 0 if final else 1
            if len(pending) <= keep:
                continue
            out = pending[: len(pending) - keep]
            samples = []
            for j, (dts, data, sync, cts) in enumerate(out):
                nxt = pending[j + 1][0] if j + 1 < len(pending) else None
                duration = max(0, nxt - dts) if nxt is not None else self._last_duration[i]
                self._last_duration[i] = duration or self._last_duration[i]
                samples.append(Sample(duration, data, sync, cts))
            runs.append(TrackRun(i + 1, out[0][0], samples))
            del pending[: len(out)]
        if not runs:
            return b""
        self.sequence += 1
        return media_fragment(self.sequence, runs)
