"""Live fragmented MP4 over chunked HTTP (`/app/stream.mp4`): a tidecast extension for Media Source Extensions.

A player gets an init segment (ftyp + moov, built once per stream and codec
configuration and cached), then one moof + mdat per merged write. The format
object is per stream (its track layout is the stream's), and like FLV each
flush builds one fragment that every in-sync player of the stream receives as
the same bytes object. MSE ignores mfhd sequence numbers and places samples by
tfdt, so a shared fragment needs no per-player state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tidecast.codec.mp4 import (
    MOVIE_TIMESCALE,
    Sample,
    TrackRun,
    TrackSpec,
    audio_track_from_flv,
    flv_audio,
    flv_video,
    init_segment,
    media_fragment,
    video_track_from_flv,
)
from tidecast.errors import ProtocolError
from tidecast.live.codecs import describe_video
from tidecast.live.packet import TAG_AUDIO, TAG_VIDEO, Packet
from tidecast.live.stream import LiveStream
from tidecast.net.http_play import HttpPlayFormat

log = logging.getLogger("tidecast.mp4")

PLAYER_KIND = "mp4-play"
CONTENT_TYPE = "video/mp4"
_DEFAULT_VIDEO_MS = 40  # a newest frame's duration before a second frame says better
_AAC_FRAME = 1024
_OPUS_FRAME = 960  # 20 ms at 48 kHz, what encoders send by default


class _Track:
    __slots__ = ("frame", "index", "last_duration", "spec")

    def __init__(self, index: int, spec: TrackSpec, frame: int) -> None:
        self.index = index  # 1-based track id in the init segment
        self.spec = spec
        self.frame = frame  # a sample's duration when nothing better is known, in the track's timescale
        self.last_duration = frame


class Mp4Format:
    """The fMP4 output format of one stream.

    `batch()` turns FLV-style packets into an init segment (when the batch
    holds sequence headers: the join burst, or a codec change) and one media
    fragment. The sequence headers seen last define the track layout, as the
    stream's `video_sh`/`audio_sh` do.
    """

    __slots__ = (
        "_audio_sh",
        "_init",
        "_init_key",
        "_size_keyframe",
        "_sized",
        "_tracks",
        "_video_sh",
        "fragments",
    )

    def __init__(self) -> None:
        self._video_sh: bytes | None = None
        self._audio_sh: bytes | None = None
        self._init_key: tuple[bytes | None, bytes | None, bytes | None] | None = None
        # VP9 carries its frame size only in keyframes: the init segment is rebuilt once one is seen,
        # since MSE refuses a 0x0 sample entry.
        self._size_keyframe: bytes | None = None
        self._sized = True
        self._init = b""
        self._tracks: dict[int, _Track] = {}  # TAG_VIDEO / TAG_AUDIO -> track
        self.fragments = 0  # batches built: one per flush however many players share it

    # ------------------------------------------------------------ init segment

    def init_segment(self) -> bytes:
        """ftyp + moov for the current sequence headers, cached until they change; b"" before any."""
        key = (self._video_sh, self._audio_sh, self._size_keyframe)
        if key == self._init_key:
            return self._init
        tracks: dict[int, _Track] = {}
        specs: list[TrackSpec] = []
        for type_id, payload in ((TAG_VIDEO, self._video_sh), (TAG_AUDIO, self._audio_sh)):
            if payload is None:
                continue
            try:
                if type_id == TAG_VIDEO:
                    spec = _video_track(payload, self._size_keyframe)
                    self._sized = bool(spec.width and spec.height)
                else:
                    spec = audio_track_from_flv(payload)
            except ProtocolError as exc:
                log.warning("mp4: a %s sequence header MP4 cannot carry: %s", _kind(type_id), exc)
                continue
            if type_id == TAG_VIDEO:
                frame = _DEFAULT_VIDEO_MS * spec.timescale // MOVIE_TIMESCALE
            else:
                frame = _AAC_FRAME if spec.codec == "mp4a" else _OPUS_FRAME
            tracks[type_id] = _Track(len(specs) + 1, spec, frame)
            specs.append(spec)
        self._tracks = tracks
        self._init_key = key
        self._init = init_segment(specs) if specs else b""
        return self._init

    @property
    def codecs(self) -> list[str]:
        return [t.spec.codec for t in self._tracks.values()]

    # ------------------------------------------------------------ OutputFormat

    def at(self, base: int) -> Mp4Format:
        return self  # each fragment carries its decode time: MSE players start wherever it is

    def encode(self, packet: Packet) -> bytes:
        """The MP4 sample of a packet: the FLV body without its tag header (AVCC NALUs, OBUs, raw AAC)."""
        if packet.type_id == TAG_VIDEO:
            parts = flv_video(packet.payload)
            return parts[3] if parts is not None and parts[1] == 1 else b""
        if packet.type_id == TAG_AUDIO:
            audio = flv_audio(packet.payload)
            return audio[2] if audio is not None and audio[1] == 1 else b""
        return b""

    def batch(self, packets: Iterable[Packet]) -> bytes:
        items = list(packets)
        headers = False
        for pkt in items:
            if pkt.sequence_header and pkt.type_id in (TAG_VIDEO, TAG_AUDIO):
                headers = True
                if pkt.type_id == TAG_VIDEO:
                    if pkt.payload != self._video_sh:
                        self._size_keyframe = None
                        self._sized = True
                    self._video_sh = pkt.payload
                else:
                    self._audio_sh = pkt.payload
        if headers:
            self.init_segment()  # learn whether the sample entry has a size
        if not self._sized:
            keyframe = next((p for p in items if p.keyframe and p.type_id == TAG_VIDEO), None)
            if keyframe is None:
                return b""  # nothing is playable before the init segment that a keyframe completes
            self._size_keyframe = keyframe.payload
            headers = True
        # Any header in the batch: a join burst, a catch-up after a skip or a codec change; each starts
        # from an init segment (MSE takes a repeated one as a no-op).
        body = (self.init_segment() if headers else b"") + self._fragment(items)
        return b"%x\r\n%b\r\n" % (len(body), body) if body else b""

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return b""

    # ------------------------------------------------------------ fragments

    def _fragment(self, packets: list[Packet]) -> bytes:
        per_track: dict[int, list[tuple[int, int, bytes, bool]]] = {}
        for pkt in packets:
            if pkt.sequence_header or pkt.type_id not in self._tracks:
                continue
            data = pkt.encoded(self)
            if not data:
                continue
            cts = 0
            if pkt.type_id == TAG_VIDEO:
                parts = flv_video(pkt.payload)
                cts = parts[2] if parts is not None else 0
            per_track.setdefault(pkt.type_id, []).append((pkt.timestamp, cts, data, pkt.keyframe))
        runs: list[TrackRun] = []
        for type_id, samples in per_track.items():
            track = self._tracks[type_id]
            scale = track.spec.timescale
            times = [ts * scale // MOVIE_TIMESCALE for ts, _, _, _ in samples]
            out: list[Sample] = []
            for i, (_, cts, data, keyframe) in enumerate(samples):
                if i + 1 < len(samples):
                    duration = max(0, times[i + 1] - times[i])
                    if duration:
                        track.last_duration = duration
                else:
                    # The next sample is in a later batch; the next fragment's tfdt puts it in place anyway.
                    duration = track.last_duration if type_id == TAG_VIDEO else track.frame
                sync = keyframe if type_id == TAG_VIDEO else True
                out.append(Sample(duration, data, sync, cts * scale // MOVIE_TIMESCALE))
            runs.append(TrackRun(track.index, times[0], out))
        if not runs:
            return b""
        runs.sort(key=lambda r: r.track_id)
        self.fragments += 1
        return media_fragment(self.fragments, runs)


def _video_track(payload: bytes, keyframe: bytes | None = None) -> TrackSpec:
    """H.264 sizes come from its SPS in the writer; HEVC and AV1 ones from the API's codec description,
    so the sample entry carries a real size (0 would leave MSE players a 0x0 natural size until decoded)."""
    width = height = 0
    parts = flv_video(payload)
    if parts is not None and parts[0] != "avc1":
        info = describe_video(payload, keyframe)
        width, height = int(info.get("width") or 0), int(info.get("height") or 0)
    return video_track_from_flv(payload, width=width, height=height)


def _kind(type_id: int) -> str:
    return "video" if type_id == TAG_VIDEO else "audio"


def format_for(stream: LiveStream) -> Mp4Format:
    """The stream's MP4 format, shared by all its MP4 players (one batch per flush for all of them)."""
    fmt = stream.format_state.get(PLAYER_KIND)
    if not isinstance(fmt, Mp4Format):
        fmt = stream.format_state[PLAYER_KIND] = Mp4Format()
    return fmt


LIVE_MP4 = HttpPlayFormat(PLAYER_KIND, ".mp4", CONTENT_TYPE, lambda stream: format_for(stream), lambda stream: b"")
