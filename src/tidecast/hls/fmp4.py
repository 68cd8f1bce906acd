"""HLS in fragmented MP4 (CMAF), plain (`hls_variant fmp4`) or low-latency (`hls_variant lowlatency`).

The window, cleanup, dispose, republish and atomic-write rules are the
MPEG-TS muxer's (this is a subclass of it); what differs is the media:
every codec MP4 has a sample entry for (H.264, HEVC, AV1, VP9; AAC, Opus),
an init segment (`<playlist>-init-N.mp4`, written before any segment that
needs it; a new N, after a discontinuity, when a codec configuration
changes or a track appears) and `.m4s` segments made of moof+mdat
fragments.

Fragments are cut every `hls_part` seconds (low-latency) or every second
(plain fMP4), at a video frame when there is video: a fragment holds the
samples before the frame that cuts it, so a part never outlasts the part
target and the durations are exact. Each fragment is appended to the
segment's temporary file as it is cut; with low latency it is also a part,
kept in memory (hls/store.py) for the last few segments and named in the
in-memory playlist, which is republished on every part. The disk keeps the
plain fMP4 playlist, for an nginx sharing the volume.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
import re
import time
from functools import partial
from typing import Final

from tidecast.codec import video as v
from tidecast.codec.audio import SEQUENCE_START, classify_audio
from tidecast.codec.mp4 import (
    Sample,
    TrackRun,
    TrackSpec,
    audio_track_from_flv,
    init_segment,
    media_fragment,
    video_track_from_flv,
)
from tidecast.filework import INLINE, FileWork
from tidecast.hls.ll import Fmp4Segment, Part, render_fmp4, render_ll
from tidecast.hls.playlist import Segment
from tidecast.hls.segmenter import TMP, HlsMuxer, HlsSettings
from tidecast.hls.store import WHOLE_SEGMENT, HlsStore, LiveHls, PartRef
from tidecast.live.codecs import describe_video

log = logging.getLogger("tidecast.hls")

VIDEO_TIMESCALE: Final = 90_000
PLAIN_FRAGMENT_MS: Final = 1000
# Parts are kept in memory for this many target durations from the end (the playlist lists
# them for three; one more for a player that fetched the previous playlist).
PART_MEMORY_TARGETS: Final = 4

_FOURCC: Final = {v.AVC: "avc1", v.HEVC: "hvc1", v.AV1: "av01", v.VP9: "vp09"}

Pending = list[tuple[int, bytes, bool, int]]  # (dts, data, sync, cts) in the track's timescale


class Fmp4Muxer(HlsMuxer):
    """The fMP4 HLS sink of one stream (see the module docstring). `store` is where low-latency
    playlists and parts go; None keeps them to the disk playlist only."""

    # Its segments need the init segment of their own publish (EXT-X-MAP): a leftover is not continued.
    CONTINUES_LEFTOVERS = False

    def __init__(
        self,
        settings: HlsSettings,
        vhost: str,
        app: str,
        stream: str,
        store: HlsStore | None = None,
        files: FileWork = INLINE,
    ) -> None:
        super().__init__(settings, vhost, app, stream, files)
        self.store = store
        self.video_spec: TrackSpec | None = None
        self.audio_spec: TrackSpec | None = None
        self.init_tracks: tuple[TrackSpec | None, TrackSpec | None] = (None, None)
        self.init_count = 0
        self.init_uri = ""
        self.init_path = ""
        self.init_paths: list[str] = []  # every init file of this playlist, for dispose
        self.fragment_sequence = 0
        self.pending: dict[str, Pending] = {"video": [], "audio": []}
        self.audio_next: int | None = None  # the expected dts of the next AAC frame
        self.audio_duration = 1024
        self.part_start = 0
        self.part_independent = False
        self.parts: list[Part] = []
        self.anchor = 0.0  # wall clock of media time 0 in this publish: EXT-X-PROGRAM-DATE-TIME
        self.segment_pdt = 0.0
        self.segment_discontinuity = False
        self.live: LiveHls | None = None
        self.closing: list[Fmp4Segment] = []  # low latency: closed, not yet renamed into place by the worker

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        # Its own _video and _audio, without the MPEG-TS muxer's inline paths.
        self._on_message(type_id, timestamp_ms, payload)

    # ------------------------------------------------------------ settings

    @property
    def low_latency(self) -> bool:
        return getattr(self.settings, "hls_variant", "fmp4") == "lowlatency" and self.store is not None

    def _part_ms(self) -> int:
        if self.low_latency:
            return max(1, round(getattr(self.settings, "hls_part", 0.2) * 1000))
        return PLAIN_FRAGMENT_MS

    def _segment_template(self) -> str:
        template = self.settings.hls_ts_file
        return template[: -len(".ts")] + ".m4s" if template.endswith(".ts") else template

    def _store_key(self) -> str:
        return self._store_path(self.m3u8_path)

    def _store_path(self, path: str) -> str:
        """A file's name in the store: its path under hls_path, as a URL names it."""
        return os.path.relpath(path, self.settings.hls_path).replace(os.sep, "/")

    def _part_uri(self, index: int) -> str:
        # Parts are served by tidecast itself: relative to the playlist even with hls_entry_prefix.
        base = os.path.relpath(self.file_path, os.path.dirname(self.m3u8_path)).replace(os.sep, "/")
        stem = base[: -len(".m4s")] if base.endswith(".m4s") else base
        return f"{stem}.part{index}.m4s"

    # ------------------------------------------------------------ the sink interface

    def on_publish(self) -> None:
        super().on_publish()
        self.video_spec = self.audio_spec = None
        self.pending = {"video": [], "audio": []}
        self.audio_next = None
        self.anchor = 0.0
        if self.low_latency and self.store is not None:
            self.live = self.store.stream(self._store_key())
            self.live.publishing = True

    def on_unpublish(self) -> None:
        super().on_unpublish()
        if self.live is not None:
            self._publish_live()
            self.live.stop()

    def maybe_dispose(self, now: float) -> bool:
        disposed = super().maybe_dispose(now)
        if disposed:
            for path in self.init_paths:
                self._delete(path)
            self.init_paths = []
            self.init_tracks = (None, None)
            if self.store is not None:
                self.store.remove(self._store_key())
            self.live = None
            self.closing = []  # their renames are answered to a generation that is gone
        return disposed

    # ------------------------------------------------------------ media

    def _video(self, ts: int, payload: bytes) -> None:
        tag = v.classify(payload)
        if tag.codec not in _FOURCC:
            return
        if tag.is_sequence_header:
            body = payload if tag.end == len(payload) else payload[: tag.end]
            width = height = 0
            if tag.codec is not v.AVC:
                # The sample entry's size, for players that read it (H.264's comes from its SPS in
                # video_track_from_flv; VP9 has none before a keyframe, and decoders read the bitstream).
                described = describe_video(body)
                width, height = described.get("width", 0), described.get("height", 0)
            self.video_spec = video_track_from_flv(body, VIDEO_TIMESCALE, width, height)
            return
        if self.video_spec is None or _FOURCC[tag.codec] != self.video_spec.codec or not v.is_coded_frame(tag):
            return
        keyframe = tag.is_keyframe
        last = self.last_video_ts
        if last is not None and ts > last:
            self.video_delta = ts - last
        self.last_video_ts = ts
        if self.anchor == 0.0:
            self.anchor = time.time() - ts / 1000
        if self.file is None:
            if not keyframe:
                return  # a segment starts with a keyframe
            self._open_segment(ts)
        elif keyframe or not self.settings.hls_wait_keyframe:
            s = self.settings
            if ts - self.segment_start >= s.hls_fragment * s.hls_td_ratio * 1000 or (
                keyframe and self._tracks() != self.init_tracks
            ):
                self._close_segment(ts)
                self._open_segment(ts)
            else:
                self._maybe_cut_part(ts, self.video_delta)
        else:
            self._maybe_cut_part(ts, self.video_delta)
        if self.file is None:
            return
        if not self.pending["video"] and not self.pending["audio"]:
            self.part_independent = keyframe
        dts = ts * (VIDEO_TIMESCALE // 1000)
        data = payload[tag.offset : tag.end]
        self.pending["video"].append((dts, data, keyframe, tag.cts * (VIDEO_TIMESCALE // 1000)))
        if ts > self.last_ts:
            self.last_ts = ts

    def _audio(self, ts: int, payload: bytes) -> None:
        tag = classify_audio(payload)
        if tag.codec not in ("aac", "opus") or tag.end - tag.offset < 1:
            return
        if tag.end != len(payload):
            payload = payload[: tag.end]
        if tag.packet_type == SEQUENCE_START:
            spec = audio_track_from_flv(payload)
            if spec != self.audio_spec:
                self.audio_spec = spec
                self.audio_duration = 1024 if spec.codec == "mp4a" else 960
                self.audio_next = None
            return
        current = self.audio_spec
        if current is None or tag.packet_type != 1:
            return
        spec = current
        if self.anchor == 0.0:
            self.anchor = time.time() - ts / 1000
        frame_ms = self.audio_duration * 1000 / spec.timescale
        if self.video_spec is None:
            # Audio-only: cut on any frame, at the longer audio-only fragment.
            if self.file is None:
                self._open_segment(ts)
            else:
                s = self.settings
                if ts - self.segment_start >= s.hls_fragment * s.hls_aof_ratio * 1000 or self._tracks() != (
                    self.init_tracks
                ):
                    self._close_segment(ts)
                    self._open_segment(ts)
                else:
                    self._maybe_cut_part(ts, round(frame_ms))
        elif self.file is None or self.init_tracks[1] is None:
            return  # before the first keyframe, or the init has no audio track until the next segment
        self.last_audio_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
        dts = ts * spec.timescale // 1000
        expected = self.audio_next
        # Millisecond timestamps jitter by up to 1 ms: keep the sample clock exact while they agree.
        if expected is not None and abs(dts - expected) <= self.audio_duration // 2:
            dts = expected
        self.audio_next = dts + self.audio_duration
        if not self.pending["video"] and not self.pending["audio"] and self.init_tracks[0] is None:
            self.part_independent = True
        self.pending["audio"].append((dts, payload[tag.offset :], True, 0))

    def _tracks(self) -> tuple[TrackSpec | None, TrackSpec | None]:
        return (self.video_spec, self.audio_spec)

    def _end_ts(self) -> int:
        if self.segment_video and self.last_video_ts is not None:
            return self.last_video_ts + self.video_delta
        spec = self.audio_spec
        if self.last_audio_ts is not None and spec is not None:
            return self.last_audio_ts + round(self.audio_duration * 1000 / spec.timescale)
        return self.last_ts

    def _flush_audio(self) -> None:
        pass  # audio goes out with the fragments

    # ------------------------------------------------------------ fragments and parts

    def _fragment(self, end_ts: int) -> bytes:
        """moof + mdat of everything pending; video's last sample lasts until `end_ts` (the frame that cuts)."""
        video, audio = self.init_tracks
        runs: list[TrackRun] = []
        track_id = 0
        for kind, spec in (("video", video), ("audio", audio)):
            if spec is None:
                continue
            track_id += 1
            pending = self.pending[kind]
            if not pending:
                continue
            if kind == "video":
                last = end_ts * spec.timescale // 1000 - pending[-1][0]
                if last <= 0:
                    last = self.video_delta * spec.timescale // 1000
            else:
                last = self.audio_duration
            ends = [p[0] for p in pending[1:]] + [pending[-1][0] + last]
            samples = [Sample(max(0, end - p[0]), p[1], p[2], p[3]) for p, end in zip(pending, ends, strict=True)]
            runs.append(TrackRun(track_id, pending[0][0], samples))
        self.pending = {"video": [], "audio": []}
        if not runs:
            return b""
        self.fragment_sequence += 1
        return media_fragment(self.fragment_sequence, runs)

    def _maybe_cut_part(self, ts: int, delta: int) -> None:
        if ts > self.part_start and ts - self.part_start + delta > self._part_ms():
            self._cut_part(ts)

    def _cut_part(self, end_ts: int) -> None:
        file = self.file
        if file is None:
            return
        data = self._fragment(end_ts)
        if not data:
            return
        file.write(data)
        duration = max(1, end_ts - self.part_start)
        self.part_start = end_ts
        if self.live is None:
            return
        index = len(self.parts)
        self.parts.append(Part(self._part_uri(index), duration, self.part_independent))
        self.live.parts[(self.sequence, index)] = data
        self._name_hint()
        self._publish_live()

    def _name_hint(self) -> None:
        """Register the next part's URI (the preload hint) so a request for it can wait for it."""
        if self.store is None or self.live is None:
            return
        index = len(self.parts)
        uri = self._part_uri(index)
        key = self._store_path(os.path.join(os.path.dirname(self.m3u8_path), uri))
        self.store.files[key] = PartRef(self.live, self.sequence, index)

    def _hint_uri(self) -> str | None:
        if self.file is None or not self.publishing:
            return None
        return self._part_uri(len(self.parts))

    def _publish_live(self) -> None:
        live = self.live
        if live is None:
            return
        current = None
        if self.file is not None:
            current = Fmp4Segment(
                self.sequence,
                self.file_path,
                "",
                0,
                self.segment_discontinuity,
                map_uri=self.init_uri,
                pdt=self.segment_pdt,
                parts=self.parts,
            )
            current.duration_ms = sum(p.duration_ms for p in self.parts)
        segments = self._live_segments()
        args = (segments, current, self._hint_uri(), self._part_ms() / 1000, self.settings.hls_fragment)
        pl = self.playlist
        text, target = render_ll(*args, pl.longest_ms, pl.discontinuity_sequence)
        delta, _ = render_ll(*args, pl.longest_ms, pl.discontinuity_sequence, skip=True)
        shorter = delta if delta.count("\n") < text.count("\n") else None
        live.update(text, shorter, self.sequence, len(self.parts), target)

    def _fmp4_segments(self) -> list[Fmp4Segment]:
        return [s for s in self.playlist.segments if isinstance(s, Fmp4Segment)]

    # ------------------------------------------------------------ segments and files

    def _open_segment(self, ts: int) -> None:
        if self._disk_behind():
            return  # as MPEG-TS: bounded memory while the disk is away; the next keyframe tries again
        tracks = self._tracks()
        if tracks != self.init_tracks:
            self._write_init(tracks)
        path = self._segment_path(self.sequence)
        self.file = self._open_file(path + TMP)
        self.file_path = path
        self.segment_start = self.part_start = ts
        self.segment_opened = time.time()
        self._wall_deadline = self.segment_opened + self._wall_limit()
        self.segment_video = self.init_tracks[0] is not None
        self.segment_audio = self.init_tracks[1] is not None
        self.segment_pdt = self.anchor + ts / 1000
        self.segment_discontinuity = self.next_discontinuity
        self.pending = {"video": [], "audio": []}
        self.parts = []
        if self.live is not None:
            self._name_hint()
            self._publish_live()

    def _write_init(self, tracks: tuple[TrackSpec | None, TrackSpec | None]) -> None:
        """A new init segment, atomically, before the first segment that names it."""
        specs = [t for t in tracks if t is not None]
        data = init_segment(specs)
        if self.init_paths:
            # New decoder configuration mid-playlist: players must reset here (RFC 8216 4.3.2.3).
            self.next_discontinuity = bool(self.playlist.segments) or self.next_discontinuity
        path = f"{os.path.splitext(self.m3u8_path)[0]}-init-{self.init_count}.mp4"
        self.init_count += 1
        # Through the file worker, as the segments: a stalled disk must not stop the event loop at a
        # publish's first keyframe. The worker runs in order, so the init is in place before the segment
        # (and the playlist) that name it; inline (tools, tests) an error is raised here, as before.
        self.files.submit(partial(self._store_init, data, path), len(data), done=self._init_failed, errors_only=True)
        if self.store is not None and self.live is not None:
            self.store.inits[self._store_path(path)] = (self.live, data)
        self.init_tracks = tracks
        self.init_path = path
        self.init_paths.append(path)
        self.init_uri = os.path.relpath(path, os.path.dirname(self.m3u8_path)).replace(os.sep, "/")
        self._prune_inits()

    def _store_init(self, data: bytes, path: str) -> None:
        self._replace_file(data, path)  # in the worker

    def _init_failed(self, error: OSError | None) -> None:
        """The worker could not write an init segment: the open segment, which names it, is dropped, and
        the next one (at the next keyframe) writes the init again under a new number."""
        if error is None:
            return
        self.init_tracks = (None, None)
        self._abandon_segment()
        self._report(f"file error: {error}", error)

    def _prune_inits(self) -> None:
        """Delete init segments no listed or to-be-deleted segment needs any more."""
        needed = {self.init_uri} | {s.map_uri for s in self._live_segments()}
        keep = []
        for path in self.init_paths:
            uri = os.path.relpath(path, os.path.dirname(self.m3u8_path)).replace(os.sep, "/")
            if uri in needed or self.doomed:
                keep.append(path)
            else:
                self._delete(path)
                if self.store is not None:
                    self.store.inits.pop(self._store_path(path), None)
        self.init_paths = keep

    def _close_segment(self, end_ts: int) -> None:
        if self.file is None:
            return
        try:
            self._cut_part(end_ts)
        except OSError:
            self._abandon_segment()
            raise
        sequence, path, closing = self.sequence, self.file_path, len(self.closing)
        try:
            super()._close_segment(end_ts)
        except OSError:
            del self.closing[closing:]  # an inline rename failed: the segment was not made
            raise
        if self.live is not None and self.store is not None:
            # Listed in the in-memory playlist now, on disk once the file worker has renamed it: meanwhile
            # (and while its parts are kept) the segment is served from its parts.
            self.store.files[self._store_path(path)] = PartRef(self.live, sequence, WHOLE_SEGMENT)
            memory = PART_MEMORY_TARGETS * self.live.target * 1000
            kept = 0
            for seg in reversed(self._live_segments()):
                kept += seg.duration_ms
                if kept > memory:
                    # Not the parts of a segment the disk does not have yet (the worker's queue holds
                    # the same bytes): while the disk is away, memory is the only copy a player can get.
                    waiting = self.closing[0].sequence if self.closing else seg.sequence + 1
                    self._forget_parts(min(seg.sequence, waiting - 1))
                    break

    def _forget_parts(self, up_to: int) -> None:
        live = self.live
        if live is None:
            return
        for key in [k for k in live.parts if k[0] <= up_to]:
            del live.parts[key]
        if self.store is not None:
            files = self.store.files
            for path in [p for p, ref in files.items() if ref.live is live and ref.msn <= up_to]:
                del files[path]

    def _segment(self, duration: int) -> Segment:
        segment = Fmp4Segment(
            self.sequence,
            self.file_path,
            self._uri(self.file_path),
            duration,
            self.segment_discontinuity,
            map_uri=self.init_uri,
            pdt=self.segment_pdt,
            parts=self.parts,
        )
        if self.live is not None:
            self.closing.append(segment)
        return segment

    def _segment_written(self, segment: Segment, generation: int, error: OSError | None) -> None:
        if segment in self.closing:
            self.closing.remove(segment)
        super()._segment_written(segment, generation, error)

    def _live_segments(self) -> list[Fmp4Segment]:
        """What the in-memory playlist lists: the segments on disk, then those the file worker is still
        renaming (the disk playlist names them once they are in place; players get them from memory)."""
        return self._fmp4_segments() + self.closing

    def _render(self) -> str:
        pl = self.playlist
        return render_fmp4(self._fmp4_segments(), self.settings.hls_fragment, pl.longest_ms, pl.discontinuity_sequence)

    def _retire_leftovers(self, listed_ms: int) -> None:
        """Init segments too: an old run's go with its segments, and ours are numbered after them, so an
        init name never comes back with other tracks for a player (or cache) holding the old playlist."""
        super()._retire_leftovers(listed_ms)
        stem = os.path.splitext(self.m3u8_path)[0]
        pattern = re.compile(re.escape(stem) + r"-init-([0-9]+)\.mp4(" + re.escape(TMP) + ")?")
        deadline = self._leftover_deadline(listed_ms)
        count = 0
        for path in sorted(glob.glob(glob.escape(stem) + "-init-*.mp4*")):
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if found.group(2):
                self._delete(path)
            else:
                count = max(count, int(found.group(1)) + 1)
                bisect.insort(self.doomed, (deadline, path))
        self.init_paths = []
        self.init_tracks = (None, None)
        self.init_count = count
        if self.store is not None:
            self.store.remove(self._store_key())
            if self.low_latency:
                self.live = self.store.stream(self._store_key())
                self.live.publishing = True
