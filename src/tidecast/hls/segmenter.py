"""HLS for one stream: FLV messages in, MPEG-TS segments and a sliding m3u8 out.

Video is H.264 or HEVC (legacy FLV or enhanced RTMP, stream types 0x1B and
0x24 as SRS 6 writes them); AV1/VP9 have no HLS-over-TS mapping players
read, so they are left to an fMP4 variant. Audio is AAC.

Segments start on keyframes (parameter sets in front) and are cut at the first
keyframe once they last `hls_fragment` × `hls_td_ratio`; audio-only streams
are cut at `hls_fragment` × `hls_aof_ratio`. The window is a duration
(`hls_window`), as in SRS.

Files are written under a temporary name in the same directory and renamed:
the segment before the playlist that names it, and a segment that slides out
of the window is deleted only after the playlist stopped naming it - and
only after one more playlist duration, so a player holding the previous
playlist can still fetch it (RFC 8216 6.2.2). An nginx reading the same
volume never serves a partial or dangling file. Segment data goes to disk as
it comes (FILE_BUFFER at a time, no whole segment in memory). File errors are logged
once per publish and never reach the live fan-out that calls us.

No EXT-X-ENDLIST on unpublish: as in SRS, a live stream that stopped may be
republished, and then continues the same playlist after an
EXT-X-DISCONTINUITY.

A muxer that finds another run's playlist (a killed run, or the stream's
previous owner on an hls_path origins share) numbers on after it behind a
discontinuity, and leaves its files until no playlist can name them: the old
playlist until ours replaces it, its segments and init segments for our first
segment plus the old playlist's duration. Its dispose deletes a playlist file
only while it is still the one it wrote.

`hls_entry_prefix`: empty, URIs are relative to the playlist's directory; set,
it is the base URL of `hls_path` (SRS's documented behaviour), so the URI is
the prefix, a slash and the segment's path under `hls_path`
("http://cdn/" + "live/stream-0.ts").
"""

from __future__ import annotations

import bisect
import errno
import glob
import logging
import os
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Final, Protocol

from tidecast.codec import aac, avc, hevc
from tidecast.codec import video as v
from tidecast.codec.audio import AAC, CODED_FRAMES, SEQUENCE_START, classify_audio
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO
from tidecast.codec.mpegts import (
    AUDIO_PID,
    AUDIO_STREAM_ID,
    STREAM_TYPE_H264,
    STREAM_TYPE_HEVC,
    VIDEO_PID,
    VIDEO_STREAM_ID,
    TsMuxer,
)
from tidecast.errors import ProtocolError
from tidecast.filework import INLINE, Done, FileWork, close_quietly, remove_file, write_all
from tidecast.hls.playlist import (
    Entry,
    Playlist,
    Segment,
    discontinuity_sequence_of,
    entries_of,
    is_stale_live,
    listed_seconds,
    media_sequence_of,
    target_of,
)
from tidecast.pathvars import stream_path

log = logging.getLogger("tidecast.hls")

# Timestamps in the TS start 1 s in rather than at 0, so composition offsets and
# the PCR lag below never make a clock value negative.
PTS_OFFSET: Final = 90_000
# The PCR runs this far behind the DTS it travels with (90 kHz units), so audio
# PES written a little after the video of the same instant still arrive "early".
PCR_DELAY: Final = 45_000
# PCR at least this often (90 kHz units): ISO 13818-1 asks for 100 ms at most.
PCR_INTERVAL: Final = 9_000
# AAC frames are gathered into one PES (as ffmpeg does) for this many milliseconds:
# fewer, fuller packets. Audio-only streams carry the PCR on audio, so keep it under 100 ms.
AUDIO_PES_MS: Final = 200
AUDIO_ONLY_PES_MS: Final = 90
# TS bytes handed to the file worker at a time. Each write is a system call, and each system call the
# worker makes costs a GIL round trip with the event loop: fewer, larger writes (128 KiB a stream).
FILE_BUFFER: Final = 128 * 1024
ADTS_CACHE: Final = 1024  # ADTS headers kept per stream, by frame size (AAC frames take a few hundred sizes)

TMP: Final = ".tmp"
# A segment still open after this many fragment durations of wall time is cut (never under the minimum).
WALL_CUT_FACTOR: Final = 3.0
WALL_CUT_MIN_S: Final = 10.0
MAX_LEFTOVER_PLAYLIST: Final = 1024 * 1024  # what is read of a crashed run's playlist
# Bytes the file worker may hold for a disk that does not keep up (all streams of the process): past it
# the open segments are dropped and new ones skipped until it catches up. About 7 s of 300 streams at 1 Mbps.
MAX_FILE_BACKLOG = 256 * 1024 * 1024


class HlsSettings(Protocol):
    """What the muxer reads of `tidecast.config.Hls` (read-only, so frozen dataclasses fit too)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def hls_fragment(self) -> float: ...

    @property
    def hls_td_ratio(self) -> float: ...

    @property
    def hls_aof_ratio(self) -> float: ...

    @property
    def hls_window(self) -> float: ...

    @property
    def hls_path(self) -> str: ...

    @property
    def hls_m3u8_file(self) -> str: ...

    @property
    def hls_ts_file(self) -> str: ...

    @property
    def hls_entry_prefix(self) -> str: ...

    @property
    def hls_cleanup(self) -> bool: ...

    @property
    def hls_dispose(self) -> float: ...

    @property
    def hls_wait_keyframe(self) -> bool: ...


def expand(template: str, vhost: str, app: str, stream: str, seq: int | None = None, now: float | None = None) -> str:
    """SRS's path variables: [vhost] [app] [stream] [seq] [timestamp] and [2006] [01] [02] [15] [04] [05] [999]."""
    return stream_path(template, vhost, app, stream, seq, now)


_VARIABLES: Final = {
    "[seq]": r"\d+",
    "[timestamp]": r"\d+",
    "[2006]": r"\d{4}",
    "[01]": r"\d{2}",
    "[02]": r"\d{2}",
    "[15]": r"\d{2}",
    "[04]": r"\d{2}",
    "[05]": r"\d{2}",
    "[999]": r"\d{3}",
}
_VARIABLE_SPLIT: Final = re.compile("(" + "|".join(re.escape(v) for v in _VARIABLES) + ")")


def segment_files(hls_path: str, template: str, vhost: str, app: str, stream: str) -> list[str]:
    """Files on disk that `template` could have produced for this stream (temporary ones included).

    Variables match digits only, so stream "s" never claims stream "s-2"'s
    "s-2-0.ts". A template without [stream] could name any stream's files:
    then nothing is claimed.
    """
    if "[stream]" not in template:
        return []
    literal = template.replace("[vhost]", vhost).replace("[app]", app).replace("[stream]", stream)
    pieces = _VARIABLE_SPLIT.split(literal)
    pattern = "".join(glob.escape(p) if i % 2 == 0 else "*" for i, p in enumerate(pieces))
    regex = "".join(re.escape(p) if i % 2 == 0 else _VARIABLES[p] for i, p in enumerate(pieces))
    root = os.path.join(hls_path, "")
    matcher = re.compile(re.escape(root) + regex + "(?:" + re.escape(TMP) + ")?")
    found = glob.glob(glob.escape(root) + pattern) + glob.glob(glob.escape(root) + pattern + TMP)
    return sorted(path for path in found if matcher.fullmatch(path))


class SegmentFile:
    """The open segment's file, written through a `FileWork`: TS bytes are gathered here and handed over
    FILE_BUFFER at a time; `finish` closes it and renames it into place. The file descriptor and the
    error are the worker's (its thread, when there is one); the buffer is the muxer's."""

    __slots__ = ("_dropped", "_error", "_fd", "_on_error", "_parts", "_size", "files", "path")

    def __init__(self, files: FileWork, path: str, create: Callable[[str], int], on_error: Done) -> None:
        self.files = files
        self.path = path  # the temporary name
        self._parts: list[bytes | bytearray] = []
        self._size = 0
        self._fd = -1
        self._error: OSError | None = None
        self._on_error = on_error
        self._dropped: OSError | None = None
        files.submit(partial(self._open, create), done=on_error, errors_only=True)

    def write(self, data: bytes | bytearray) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= FILE_BUFFER:
            self._hand_over()

    def finish(self, final: str, done: Done) -> None:
        """Write what is left, close, rename to `final`; `done` hears how it went (a segment dropped for
        a disk too far behind fails, so the playlist lists a gap where it was)."""
        self._hand_over()
        if self._dropped is None:
            self.files.submit(partial(self._finish, final), done=done)
        else:
            self.files.submit(partial(self._fail, self._dropped), done=done)

    def discard(self) -> None:
        """Close and delete: the segment is dropped."""
        self._parts = []
        self._size = 0
        self.files.submit(self._discard, done=self._on_error, errors_only=True)

    def _hand_over(self) -> None:
        if self._parts:
            parts, size = self._parts, self._size
            self._parts = []
            self._size = 0
            if self._dropped is not None:
                return
            backlog = self.files.backlog()
            if backlog > MAX_FILE_BACKLOG:
                # The disk is that far behind: queueing the rest of this segment would hold it all in
                # memory (a stream whose timestamps never cut it, or every stream of a hung NAS at once).
                self._dropped = disk_behind(backlog, self.path)
                return
            self.files.submit(partial(self._write, parts, size), size, done=self._on_error, errors_only=True)

    # What follows runs in the worker.

    def _open(self, create: Callable[[str], int]) -> None:
        try:
            self._fd = create(self.path)
        except OSError as exc:
            self._error = exc
            raise

    def _write(self, parts: list[bytes | bytearray], size: int) -> None:
        fd = self._fd
        if fd < 0:
            return  # the open (or an earlier write) failed, and said so
        try:
            write_all(fd, parts, size)
        except OSError as exc:
            self._error = exc
            self._fd = -1
            close_quietly(fd)
            raise

    def _finish(self, final: str) -> None:
        fd, self._fd = self._fd, -1
        try:
            if fd < 0:
                raise self._error or OSError(f"{self.path} was not written")
            os.close(fd)
            os.replace(self.path, final)
        except OSError:
            remove_file(self.path)
            raise

    def _discard(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            close_quietly(fd)
        error = remove_file(self.path)
        if error is not None:
            raise error

    def _fail(self, error: OSError) -> None:
        self._discard()
        raise error


def disk_behind(backlog: int, path: str) -> OSError:
    """The error of a segment dropped while it was written: the file worker held more than MAX_FILE_BACKLOG."""
    return OSError(errno.EAGAIN, f"the disk is {backlog / 2**20:.0f} MiB behind, so the segment was dropped", path)


class HlsMuxer:
    """The HLS sink of one stream; see the module docstring. Not thread-safe (the event loop calls it)."""

    # A fresh playlist another writer left on a shared hls_path (the stream moved here) is continued:
    # its segments stay listed ahead of ours, so its players read on instead of jumping ahead.
    CONTINUES_LEFTOVERS = True

    def __init__(self, settings: HlsSettings, vhost: str, app: str, stream: str, files: FileWork = INLINE) -> None:
        self.settings = settings  # reassigned by the server on reload: read at each decision
        # Who writes the files: the server's worker thread (a slow disk then delays HLS, not the loop),
        # or INLINE. A segment joins the playlist once the worker says its file is in place.
        self.files = files
        # Told of each segment once its file is in place and the playlist names it (on_hls hooks).
        self.on_segment: Callable[[Segment], None] | None = None
        self._generation = 0  # bumped by dispose: what the worker finishes for an older one is dropped
        self._behind_logged = False
        self.vhost = vhost
        self.app = app
        self.stream = stream
        self.ts = TsMuxer()
        self.avc: avc.AvcConfig | hevc.HevcConfig | None = None  # the video decoder configuration, H.264 or HEVC
        self.video_codec = v.UNKNOWN  # v.AVC or v.HEVC, the codec `self.avc` is for
        self.aac: aac.AacConfig | None = None
        self.playlist = Playlist()
        self.sequence = 0
        # Segments out of the playlist, deleted once the muxed media clock passes
        # their deadline: (deadline in ms of `media_ms`, path).
        self.doomed: list[tuple[int, str]] = []
        self.media_ms = 0  # the duration of all segments closed so far, across publishes
        # The segment being written.
        self.file: SegmentFile | None = None
        self.file_path = ""
        self.segment_opened = 0.0  # wall time the open segment was opened
        self._wall_deadline = 0.0  # and when it is cut whatever its timestamps say
        self.segment_start = 0
        self.segment_video = False  # what its PMT announced
        self.segment_video_type = STREAM_TYPE_H264
        self.segment_audio = False
        self._pcr_limit = -1  # the DTS (90 kHz) from which a frame must carry a PCR, -1 for the next one
        # Timing of the current publish.
        self.last_ts = 0
        self.last_video_ts: int | None = None
        self.last_audio_ts: int | None = None
        self.video_delta = 40  # ms between frames, a guess until two frames came
        # AAC frames (ADTS header, raw frame, ...) waiting to become one PES.
        self.audio_parts: list[bytes] = []
        self.audio_pts = 0
        self._audio_until = 0  # the gathered PES is flushed at a frame from this timestamp on
        # The next frame joins the gathered ones when its timestamp is in [lo, hi] (where it should be when
        # nothing is missing, give or take half a frame); both move on by a frame each time.
        self._audio_lo = 0.0
        self._audio_hi = 0.0
        self._audio_step = 0.0
        # AAC frames go straight to the gathered PES (on_message's fast path): a segment with video and
        # audio is open and the stream has video.
        self._gathering = False
        self._adts: dict[int, bytes] = {}  # ADTS headers of self.aac by frame size
        self.next_discontinuity = False
        self.started = False  # published at least once: a republish continues the playlist
        self.publishing = False
        self.disposed = True  # no files of ours on disk
        self.last_message = time.time()
        self._m3u8 = self._m3u8_path()
        self._written: tuple[int, int, int] | None = None  # (device, inode, mtime) of our last playlist
        self._error_logged = False
        self._codec_warned = False  # a video codec TS cannot carry was logged this publish
        self._folders: set[str] = set()  # directories made (or found) for our files
        # A leftover playlist to continue: its first sequence number, discontinuity sequence, entries.
        self._leftover: tuple[int, int, list[Entry]] | None = None

    # ------------------------------------------------------------ paths

    @property
    def m3u8_path(self) -> str:
        return self._m3u8

    def _m3u8_path(self) -> str:
        s = self.settings
        return os.path.join(s.hls_path, expand(s.hls_m3u8_file, self.vhost, self.app, self.stream))

    def _segment_template(self) -> str:
        return self.settings.hls_ts_file

    def _segment_path(self, seq: int) -> str:
        s = self.settings
        return os.path.join(s.hls_path, expand(self._segment_template(), self.vhost, self.app, self.stream, seq))

    def _uri(self, path: str) -> str:
        prefix = self.settings.hls_entry_prefix
        if prefix:
            rel = os.path.relpath(path, self.settings.hls_path).replace(os.sep, "/")
            return prefix + rel if prefix.endswith("/") else f"{prefix}/{rel}"
        return os.path.relpath(path, os.path.dirname(self._m3u8)).replace(os.sep, "/")

    # ------------------------------------------------------------ the sink interface

    def on_publish(self) -> None:
        try:
            if self.file is not None:  # a publish without an unpublish: finish what we have
                self._close_segment(self._end_ts())
        except Exception as exc:
            self._failed(exc)
        self.publishing = True
        self.last_message = time.time()
        self._error_logged = False
        self._codec_warned = False
        self.avc = self.aac = None
        self.video_codec = v.UNKNOWN
        self.last_video_ts = self.last_audio_ts = None
        self.audio_parts = []
        self._gathering = False
        if self.started and not self.disposed:
            # Same playlist, new timestamps: players must reset their decoders.
            self.next_discontinuity = bool(self.playlist.segments)
        else:
            self._m3u8 = self._m3u8_path()
            self.playlist = Playlist()
            self.doomed = []
            self.next_discontinuity = False
            try:
                self._retire_leftovers(self._continue_after_crash())
            except Exception as exc:
                self._failed(exc)
        self.started = True
        self.disposed = False

    def on_metadata(self, payload: bytes) -> None:
        pass  # segments carry no script data

    def on_unpublish(self) -> None:
        self.publishing = False
        self.last_message = time.time()
        try:
            self._close_segment(self._end_ts())
        except Exception as exc:
            self._failed(exc)

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        # Every message of the stream passes here. The two that make nearly all of them, an AAC frame for
        # the open segment and a legacy H.264 frame, are handled inline; Fmp4Muxer has its own.
        try:
            if type_id == TAG_AUDIO:
                if self._gathering and len(payload) > 2 and payload[1] == CODED_FRAMES and payload[0] >> 4 == 10:
                    parts = self.audio_parts
                    if parts and timestamp_ms < self._audio_until and self._audio_lo <= timestamp_ms <= self._audio_hi:
                        step = self._audio_step
                        self._audio_lo += step
                        self._audio_hi += step
                    else:
                        self._start_audio_run(timestamp_ms)
                        parts = self.audio_parts
                    size = len(payload) - 2
                    parts.append(self._adts.get(size) or self._adts_header(size))
                    parts.append(payload[2:])
                    self.last_audio_ts = timestamp_ms
                else:
                    self._audio(timestamp_ms, payload)
            elif type_id == TAG_VIDEO:
                if (
                    self.video_codec is v.AVC
                    and len(payload) >= 5
                    and payload[1] == 1
                    and (payload[0] == 0x27 or payload[0] == 0x17)
                ):
                    # A legacy H.264 inter or key frame: the classifier's answer inline.
                    cts = (payload[2] << 16) | (payload[3] << 8) | payload[4]
                    if cts & 0x800000:
                        cts -= 0x1000000
                    self._frame(timestamp_ms, payload, payload[0] == 0x17, cts, 5, len(payload))
                else:
                    self._video(timestamp_ms, payload)
        except Exception as exc:  # the live fan-out must go on whatever a frame or the disk did
            self._failed(exc)

    def _on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        """on_message without the MPEG-TS fast paths, for muxers with their own `_video` and `_audio`."""
        try:
            if type_id == TAG_VIDEO:
                self._video(timestamp_ms, payload)
            elif type_id == TAG_AUDIO:
                self._audio(timestamp_ms, payload)
        except Exception as exc:  # the live fan-out must go on whatever a frame or the disk did
            self._failed(exc)

    def cut_if_stalled(self, now: float) -> None:
        """Timestamps that stop advancing (or crawl) would grow one segment for ever: the manager calls this
        every second while the stream is published, and a segment open for too long in wall time is cut.
        A segment whose timestamps never moved is dropped; the next keyframe opens one."""
        if self.file is not None and now > self._wall_deadline:
            try:
                self._close_segment(self._end_ts())
            except Exception as exc:
                self._failed(exc)

    def maybe_dispose(self, now: float) -> bool:
        """After `hls_dispose` seconds without messages since unpublish, delete our files; True when it did."""
        if self.publishing or self.disposed:
            return False
        idle = now - self.last_message
        if self.doomed and idle * 1000 >= self._listed_ms():
            # No new playlist since: players have had their time for the dropped segments.
            for _, path in self.doomed:
                self._delete(path)
            self.doomed = []
        dispose = self.settings.hls_dispose
        if dispose <= 0 or idle < dispose:
            return False
        self._abandon_segment()
        # One operation, after every write still queued: whether the playlist on disk is ours is only
        # known once our last playlist write is done.
        listed = [seg.path for seg in self.playlist.segments]
        doomed = [path for _, path in self.doomed]
        try:
            self.files.submit(partial(self._dispose_files, self._m3u8, listed, doomed), done=self._delete_failed)
        except OSError as exc:  # inline
            self._delete_failed(exc)
        self._generation += 1
        self.playlist = Playlist()
        self.doomed = []
        self.disposed = True
        self.next_discontinuity = False
        return True

    # ------------------------------------------------------------ media

    def _video(self, ts: int, payload: bytes) -> None:
        tag = v.classify(payload)
        codec = tag.codec
        if codec is not v.AVC and codec is not v.HEVC:
            if tag.is_sequence_header and not self._codec_warned:
                self._codec_warned = True
                log.warning(
                    "hls %s/%s/%s: video codec %s has no MPEG-TS mapping players read (H.264 and HEVC do); "
                    "the segments carry the audio only",
                    self.vhost,
                    self.app,
                    self.stream,
                    codec or f"id {payload[0] & 0x0F}",
                )
            return
        if tag.is_sequence_header:
            record = payload[tag.offset : tag.end]
            self.avc = avc.parse_config(record) if codec is v.AVC else hevc.parse_config(record)
            self.video_codec = codec
            return
        if self.avc is None or codec is not self.video_codec or not v.is_coded_frame(tag):
            return
        self._frame(ts, payload, tag.is_keyframe, tag.cts, tag.offset, tag.end)

    def _frame(self, ts: int, payload: bytes, keyframe: bool, cts: int, offset: int, end: int) -> None:
        """One coded frame of the stream's codec (`payload[offset:end]`), into the open segment."""
        config = self.avc
        assert config is not None
        last = self.last_video_ts
        if last is not None and ts > last:
            self.video_delta = ts - last
        self.last_video_ts = ts
        if self.file is None:
            if not keyframe:
                return  # a segment starts with a keyframe
            self._open_segment(ts)
        elif keyframe or not self.settings.hls_wait_keyframe:
            s = self.settings
            if ts - self.segment_start >= s.hls_fragment * s.hls_td_ratio * 1000 or (
                keyframe
                and (
                    not self.segment_video
                    or self.segment_video_type != self._video_type()
                    or (self.aac is not None and not self.segment_audio)
                )
            ):
                # Long enough, or the PMT lacks (or misnames) a stream that has appeared since.
                self._close_segment(ts)
                self._open_segment(ts)
        file = self.file
        if file is None:
            return
        dts = ts * 90 + PTS_OFFSET
        if keyframe or dts + self.video_delta * 90 > self._pcr_limit:
            # The next frame would come too late for the 100 ms PCR spacing: stamp this one.
            self._pcr_limit = dts + PCR_INTERVAL
            pcr: int | None = dts - PCR_DELAY
        else:
            pcr = None
        if ts > self.last_ts:
            self.last_ts = ts
        if isinstance(config, hevc.HevcConfig):
            data = hevc.to_annexb(payload, config, keyframe, offset, end)
        elif end == len(payload):
            prefix = avc.single_nal_prefix(payload, config, keyframe, offset)
            if prefix is not None:
                # One NAL unit: copied once, from the FLV payload straight into the TS packets.
                file.write(
                    self.ts.pes(
                        VIDEO_PID, VIDEO_STREAM_ID, payload, dts + cts * 90, dts, pcr, keyframe, prefix, offset + 4
                    )
                )
                return
            data = avc.to_annexb(payload, config, keyframe, offset)
        else:
            # A multitrack message has other tracks after this one's data: cut them off first.
            data = avc.to_annexb(payload[:end], config, keyframe, offset)
        file.write(self.ts.pes(VIDEO_PID, VIDEO_STREAM_ID, data, dts + cts * 90, dts, pcr, keyframe))

    def _audio(self, ts: int, payload: bytes) -> None:
        if len(payload) > 2 and payload[0] >> 4 == 10:
            start = 2  # legacy AAC, the usual case: skip the classifier
            packet_type = payload[1]
        else:
            tag = classify_audio(payload)
            if tag.codec != AAC or tag.end - tag.offset < 1:
                return  # AAC only (legacy or E-RTMP "mp4a")
            start, packet_type = tag.offset, tag.packet_type
            if tag.end != len(payload):
                payload = payload[: tag.end]  # a multitrack message: this track's data only
        if packet_type == SEQUENCE_START:
            header = aac.parse_config(payload[start:])
            if header != self.aac:
                self._flush_audio()
                self.aac = header
                self._adts = {}
            return
        if self.aac is None or packet_type != CODED_FRAMES:
            return
        if self.avc is None:
            # Audio-only: cut on any frame, at the longer audio-only fragment.
            if self.file is None:
                self._open_segment(ts)
            else:
                s = self.settings
                if ts - self.segment_start >= s.hls_fragment * s.hls_aof_ratio * 1000:
                    self._close_segment(ts)
                    self._open_segment(ts)
        elif self.file is None or not self.segment_audio:
            return  # before the first keyframe, or the PMT has no audio until the next segment
        self._gather(ts, payload, start)

    def _gather(self, ts: int, payload: bytes, start: int) -> None:
        """Add one AAC frame (`payload[start:]`) to the PES being gathered, flushing that first when due.
        (on_message does the same inline for the usual frame.)"""
        self.last_audio_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
        if self.audio_parts and ts < self._audio_until and self._audio_lo <= ts <= self._audio_hi:
            step = self._audio_step
            self._audio_lo += step
            self._audio_hi += step
        else:
            self._start_audio_run(ts)
        size = len(payload) - start
        self.audio_parts.append(self._adts.get(size) or self._adts_header(size))
        self.audio_parts.append(payload[start:])

    def _start_audio_run(self, ts: int) -> None:
        """Flush what is gathered (it is due, or a gap or overlap in the timestamps must not be hidden)
        and start gathering at `ts`."""
        if self.audio_parts:
            self._flush_audio()
        config = self.aac
        assert config is not None
        self.audio_pts = ts
        self._audio_until = ts + (AUDIO_PES_MS if self.segment_video else AUDIO_ONLY_PES_MS)
        step = self._audio_step = config.frame_ms
        slack = step / 2 + 1
        self._audio_lo = ts + step - slack
        self._audio_hi = ts + step + slack

    def _adts_header(self, size: int) -> bytes:
        """The ADTS header for a frame of `size` bytes, kept for the next one of that size."""
        config = self.aac
        assert config is not None
        header = config.adts(size)
        if len(self._adts) < ADTS_CACHE:
            self._adts[size] = header
        return header

    def _video_type(self) -> int:
        return STREAM_TYPE_HEVC if self.video_codec is v.HEVC else STREAM_TYPE_H264

    def _flush_audio(self) -> None:
        if not self.audio_parts:
            return
        data = b"".join(self.audio_parts)
        self.audio_parts = []
        file = self.file
        if file is None:
            return
        pts = self.audio_pts * 90 + PTS_OFFSET
        pcr = None if self.segment_video else pts - PCR_DELAY  # the PCR PID is audio without video
        file.write(self.ts.pes(AUDIO_PID, AUDIO_STREAM_ID, data, pts, pts, pcr))

    def _end_ts(self) -> int:
        """Where the open segment ends when no cutting frame comes: after its last frame."""
        if self.segment_video and self.last_video_ts is not None:
            return self.last_video_ts + self.video_delta
        if self.last_audio_ts is not None and self.aac is not None:
            return self.last_audio_ts + round(self.aac.frame_ms)
        return self.last_ts

    # ------------------------------------------------------------ segments and files

    def _open_file(self, path: str) -> SegmentFile:
        """The segment file at `path`, written through the file worker (unbuffered: SegmentFile buffers)."""
        return SegmentFile(self.files, path, self._open_fd, self._file_failed)

    def _file_failed(self, error: OSError | None) -> None:
        """A write of the open segment failed in the worker: drop the segment; the next keyframe opens one."""
        if error is None:
            return
        file = self.file
        if file is not None and error.filename in (None, file.path):
            self._abandon_segment()
        self._report(f"file error: {error}", error)

    def _disk_behind(self) -> bool:
        """The file worker holds more than MAX_FILE_BACKLOG: skip segments until the disk catches up."""
        backlog = self.files.backlog()
        if backlog <= MAX_FILE_BACKLOG:
            self._behind_logged = False
            return False
        # The media until the disk is back is in no segment: the next one's timestamps jump, which
        # players must be told (unannounced, the jump is a hole in their buffer).
        self.next_discontinuity = True
        if not self._behind_logged:
            self._behind_logged = True
            log.warning(
                "hls %s/%s/%s: the disk is %.1f MiB behind; skipping segments until it catches up",
                self.vhost,
                self.app,
                self.stream,
                backlog / 2**20,
            )
        return True

    def _open_fd(self, path: str) -> int:
        """Open `path` for writing, making its directory the first time (or again if someone removed it):
        a bare descriptor, two system calls fewer than a Python file. A `makedirs` before every file was
        two metadata system calls a segment, slow on a journaling disk."""
        folder = os.path.dirname(path) or "."
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            return os.open(path, flags, 0o666)

    def _open_segment(self, ts: int) -> None:
        if self._disk_behind():
            return
        path = self._segment_path(self.sequence)
        self.file = self._open_file(path + TMP)
        self.file_path = path
        self.segment_start = ts
        self.segment_opened = time.time()
        self._wall_deadline = self.segment_opened + self._wall_limit()
        video_type = self._video_type()
        if self.avc is not None and self.segment_video and video_type != self.segment_video_type:
            # H.264 → HEVC (or back) within a publish: players must reset their decoders here.
            self.next_discontinuity = bool(self.playlist.segments)
        self.segment_video = self.avc is not None
        self.segment_video_type = video_type
        self.segment_audio = self.aac is not None
        self._gathering = self.segment_audio and self.segment_video
        self._pcr_limit = -1
        self.file.write(self.ts.tables(self.segment_video, self.segment_audio, self.segment_video_type))

    def _close_segment(self, end_ts: int) -> None:
        """Finish the open segment: rename it into place, then (once it is) name it in the playlist."""
        file = self.file
        if file is None:
            return
        try:
            self._flush_audio()
        except OSError:
            self._abandon_segment()
            raise
        self.file = None
        self._gathering = False
        duration = end_ts - self.segment_start
        if duration <= 0:
            file.discard()
            return
        segment = self._segment(duration)
        # Inline, a failed rename raises here (before the number is used up) as it always did.
        file.finish(self.file_path, partial(self._segment_written, segment, self._generation))
        self.next_discontinuity = False
        self.sequence += 1

    def _segment_written(self, segment: Segment, generation: int, error: OSError | None) -> None:
        """The worker has renamed the segment into place (or failed to): list it, write the playlist."""
        if generation != self._generation:
            # Disposed of meanwhile: no playlist will name it.
            if error is None:
                self._delete(segment.path)
            return
        if error is not None:
            # Listed as a gap, so the media sequence numbers of the segments after it stay right.
            self._report(f"file error: {error}", error)
            segment.gap = True
        s = self.settings
        dropped = self.playlist.add(segment, s.hls_window)
        self.media_ms += segment.duration_ms
        if s.hls_cleanup:
            # Deletable once the newest playlist that named it has aged out for any player.
            listed = self._listed_ms()
            self.doomed.extend((self.media_ms + old.duration_ms + listed, old.path) for old in dropped)
        self._write_playlist()
        doomed = self.doomed
        while doomed and doomed[0][0] <= self.media_ms:
            self._delete(doomed.pop(0)[1])
        if error is None and self.on_segment is not None:
            try:
                self.on_segment(segment)
            except Exception:  # a notification must never cost the stream its HLS
                log.exception("hls %s/%s/%s: segment notification failed", self.vhost, self.app, self.stream)

    def _wall_limit(self) -> float:
        s = self.settings
        return max(WALL_CUT_MIN_S, WALL_CUT_FACTOR * s.hls_fragment * s.hls_td_ratio)

    def _segment(self, duration: int) -> Segment:
        """The playlist entry of the segment just closed (a subclass adds what its playlist needs)."""
        return Segment(self.sequence, self.file_path, self._uri(self.file_path), duration, self.next_discontinuity)

    def _render(self) -> str:
        return self.playlist.render(self.settings.hls_fragment)

    def _write_playlist(self) -> None:
        """Write under a temporary name and rename: readers see the old playlist or the new one."""
        body = self._render().encode()
        self.files.submit(
            partial(self._store_playlist, body, self._m3u8), len(body), done=self._playlist_failed, errors_only=True
        )

    def _store_playlist(self, body: bytes, path: str) -> None:
        # In the worker: the playlist's rename follows the renames of the segments it names.
        st = self._replace_file(body, path)
        self._written = (st.st_dev, st.st_ino, st.st_mtime_ns)

    def _replace_file(self, data: bytes, path: str) -> os.stat_result:
        """In the worker: `data` under a temporary name, then renamed to `path`, so a reader gets the old
        file or the new one; the new file's stat."""
        tmp = path + TMP
        try:
            fd = self._open_fd(tmp)
            try:
                write_all(fd, [data], len(data))
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            remove_file(tmp)
            raise
        return st

    def _playlist_failed(self, error: OSError | None) -> None:
        if error is not None:
            self._report(f"file error: {error}", error)

    def _dispose_files(self, m3u8: str, listed: list[str], doomed: list[str]) -> None:
        # In the worker. When the playlist is no longer ours, the stream moved to another node on this
        # shared hls_path, which writes the playlist now and has taken over the segments ours listed: it
        # lists them on, or deletes them when no player can hold a playlist naming them.
        paths = [m3u8, m3u8 + TMP, *listed] if self._playlist_is_ours() else []
        errors = [error for path in [*paths, *doomed] if (error := remove_file(path)) is not None]
        if errors:
            raise errors[0]

    def _playlist_is_ours(self) -> bool:
        """The playlist file is still the one we wrote last (or we never wrote one: a leftover is ours to go)."""
        if self._written is None:
            return True
        try:
            st = os.stat(self._m3u8)
        except OSError:
            return True
        return (st.st_dev, st.st_ino, st.st_mtime_ns) == self._written

    def _listed_ms(self) -> int:
        return sum(seg.duration_ms for seg in self.playlist.segments)

    def _abandon_segment(self) -> None:
        """After a write error: drop the open segment; the next keyframe starts a new one, after a
        discontinuity (the dropped media is listed nowhere)."""
        self.audio_parts = []
        self.next_discontinuity = True
        file = self.file
        if file is not None:
            self.file = None
            self._gathering = False
            try:
                file.discard()
            except OSError as exc:
                self._report(f"cannot remove {file.path}: {exc}", exc)

    def _continue_after_crash(self) -> int:
        """A playlist another run left (a killed one, or the previous owner on a shared hls_path): number on
        after its last segment, behind a discontinuity, so a player or CDN that cached it never sees a
        segment name or MEDIA-SEQUENCE come back with other media. Returns how long it lists, in ms."""
        self._leftover = None
        try:
            with open(self._m3u8, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_LEFTOVER_PLAYLIST)
                age = time.time() - os.fstat(f.fileno()).st_mtime
        except OSError:
            return 0
        first = media_sequence_of(text) or 0
        following = first + text.count("#EXTINF")
        if following > self.sequence:
            self.sequence = following
            self.next_discontinuity = True
            if self.CONTINUES_LEFTOVERS and target_of(text) is not None and not is_stale_live(text, age):
                entries = entries_of(text)
                if entries:
                    self._leftover = (first, discontinuity_sequence_of(text), entries)
        return round(listed_seconds(text) * 1000)

    def _continue_leftover(self, files: list[str]) -> set[str]:
        """List the leftover playlist's segments ahead of ours, when every one of them is still on disk
        under the name we would give it; returns their paths (they leave with our window, not before)."""
        if self._leftover is None:
            return set()
        first, discontinuities, entries = self._leftover
        self._leftover = None
        by_uri = {self._uri(path): path for path in files if not path.endswith(TMP)}
        paths = [by_uri.get(entry.uri) for entry in entries]
        if any(path is None for path in paths):
            return set()
        self.playlist.segments = [
            Segment(first + i, path, entry.uri, entry.duration_ms, entry.discontinuity)
            for i, (entry, path) in enumerate(zip(entries, paths, strict=True))
            if path is not None
        ]
        self.playlist.longest_ms = max(entry.duration_ms for entry in entries)
        self.playlist.discontinuity_sequence = discontinuities
        return {path for path in paths if path is not None}

    def _retire_leftovers(self, listed_ms: int) -> None:
        """Files another run left for this stream: its temporary files go now; its playlist stays until
        our first one replaces it, and its segments until no player can hold a playlist naming them
        (our first segment, then the old playlist's duration): on a shared hls_path the previous owner's
        players, and the edges and nginx in front, keep every segment they were told of."""
        s = self.settings
        self._delete(self._m3u8 + TMP)
        deadline = self._leftover_deadline(listed_ms)
        files = segment_files(s.hls_path, self._segment_template(), self.vhost, self.app, self.stream)
        continued = self._continue_leftover(files)
        for path in files:
            if path.endswith(TMP):
                self._delete(path)
            elif path not in continued:
                bisect.insort(self.doomed, (deadline, path))

    def _leftover_deadline(self, listed_ms: int) -> int:
        """When (in `media_ms`) a leftover file may go: after our first segment and the old playlist's duration."""
        s = self.settings
        return self.media_ms + listed_ms + round(s.hls_fragment * s.hls_td_ratio * 1000)

    def _delete(self, path: str) -> None:
        try:
            self.files.submit(partial(_unlink, path), done=self._delete_failed, errors_only=True)
        except OSError as exc:  # inline
            self._delete_failed(exc)

    def _delete_failed(self, error: OSError | None) -> None:
        if error is not None:
            self._report(f"cannot remove {error.filename}: {error}", error)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self._abandon_segment()
            self._report(f"file error: {exc}", exc)
        else:
            self._report(f"skipping a frame it cannot mux: {exc!r}", exc)

    def _report(self, what: str, exc: Exception) -> None:
        """Log the first problem of a publish; a full disk would otherwise log every frame."""
        if not self._error_logged:
            self._error_logged = True
            log.warning(
                "hls %s/%s/%s: %s (further errors of this publish are not logged)",
                self.vhost,
                self.app,
                self.stream,
                what,
                exc_info=not isinstance(exc, (OSError, ProtocolError)),
            )


def _unlink(path: str) -> None:
    error = remove_file(path)
    if error is not None:
        raise error
