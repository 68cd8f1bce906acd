"""DVR: a stream's messages recorded to FLV or MP4 files (SRS's `dvr` block).

A `Recorder` is one of a live stream's media sinks. It opens a file when the
first message of a publish arrives, and reaps it (closes, renames, reports it)
on unpublish, on `close()` (drain, a reload that disables DVR), and in the
segment plan once the file lasts `dvr_duration` (at the next keyframe with
`dvr_wait_keyframe`). Each new segment starts with the metadata and sequence
headers, and its timestamps restart at 0 (`time_jitter full|zero`), as SRS's
files do.

Files are written under a hidden temporary name in their final directory and
renamed when complete, so a reader or a cleanup job never sees a half file,
and after a kill -9 only a temporary name is left. An MP4 is valid and
seekable once renamed: its moov is written at the end, or with
`dvr_mp4_faststart` into space reserved before the media when it fits.

In the server the system calls are made by the DVR's file worker thread
(`tidecast.filework`), in order: a disk that stalls delays the recordings, not
the event loop. Bytes wait for it in memory (the payloads themselves, not
copies), up to MAX_FILE_BACKLOG for every recording of the process; past that
the files in progress are dropped until the disk catches up.

Disk errors (full, unwritable directory, too far behind) are logged once per
stream with the path, the file in progress is dropped, and nothing is raised
into the stream that feeds us: players are never disturbed by the recorder.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, Protocol

from tidecast.codec import aac, amf0, mp4
from tidecast.codec.flv import PREVIOUS_TAG_SIZE, TAG_AUDIO, TAG_HEADER, TAG_SCRIPT, TAG_VIDEO, flv_header
from tidecast.dvr import paths
from tidecast.errors import ProtocolError
from tidecast.filework import INLINE, Done, FileWork, close_quietly, remove_file, write_all

log = logging.getLogger("tidecast.dvr")

# Bytes gathered before they go to the file worker: each write is a system call (and, with the worker,
# a GIL round trip), and the payloads are kept rather than copied meanwhile.
WRITE_BUFFER: Final = 128 * 1024
MAX_JITTER_MS: Final = 250
DEFAULT_FRAME_MS: Final = 10
FLUSH_INTERVAL: Final = 1.0  # seconds between flushes of the write buffer to the kernel (tick)
# Reserved moov space for fast start: bytes per second of media (about 50 video + 47 audio
# samples a second at ~16 and ~8 table bytes each, with room to spare), plus a fixed part.
RESERVE_PER_SECOND: Final = 2048
RESERVE_BASE: Final = 64 * 1024
RESERVE_SESSION: Final = 4 * 1024 * 1024  # a session has no known length: about two hours at 30 fps
RETRY_INTERVAL: Final = 5.0  # seconds before a file that could not be written is tried again
# Bytes the file worker may hold for a disk that does not keep up (every recording of the process) before
# recordings in progress are dropped: about 7 s of 300 streams at 1 Mbps, as for HLS.
MAX_FILE_BACKLOG = 256 * 1024 * 1024


class DvrSettings(Protocol):
    """What a recorder reads of `tidecast.config.Dvr` (read-only, so frozen dataclasses fit too)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def dvr_apply(self) -> list[str]: ...

    @property
    def dvr_plan(self) -> str: ...

    @property
    def dvr_path(self) -> str: ...

    @property
    def dvr_duration(self) -> float: ...

    @property
    def dvr_wait_keyframe(self) -> bool: ...

    @property
    def time_jitter(self) -> str: ...

    @property
    def dvr_mp4_faststart(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Reaped:
    """A finished recording, as `on_reaped` gets it (what SRS's on_dvr hook reports, and more)."""

    path: str  # the final, absolute file name
    file: str  # the same as SRS's on_dvr `file` gives it: dvr_path expanded, relative to the cwd if dvr_path is
    vhost: str
    app: str
    stream: str
    duration_ms: int
    size: int
    started: float  # wall-clock time the file was opened


OnReaped = Callable[[Reaped], None]


def applies(dvr_apply: list[str], app: str, stream: str) -> bool:
    """SRS's filter: no value or `all` records every stream, otherwise only the listed app/stream names."""
    if not dvr_apply or dvr_apply == ["all"]:
        return True
    return f"{app}/{stream}" in dvr_apply


class _Jitter:
    """`time_jitter` for one file: full (from 0, monotonic, big jumps smoothed), zero (from 0), off."""

    __slots__ = ("base", "full", "last", "last_out", "mode")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.full = mode == "full"
        self.base: int | None = None
        self.last: int | None = None
        self.last_out = 0

    def correct(self, ts: int) -> int:
        if self.full:
            last = self.last
            if last is None:
                out = 0
            elif -MAX_JITTER_MS <= ts - last <= MAX_JITTER_MS:
                out = self.last_out + ts - last
                if out < 0:
                    out = 0
            else:
                out = self.last_out + DEFAULT_FRAME_MS  # a jump: one frame on
            self.last = ts
            self.last_out = out
            return out
        if self.mode == "zero":
            if self.base is None:
                self.base = ts
            return max(0, ts - self.base)
        return ts


# ---------------------------------------------------------------- file formats


class _File:
    """One recording in progress, under its temporary name, written through a `FileWork`.

    The buffers are the recorder's (the event loop's); the descriptor and every system call are the
    worker's, in the order they were queued. Data are gathered (a message's payload is kept, not copied)
    and handed over WRITE_BUFFER bytes at a time, or by `flush` (the recorder's tick), each piece at the
    file offset it belongs to. With INLINE, errors raise in the caller; with a worker, `on_error` hears
    of them on the loop.
    """

    def __init__(self, final: str, files: FileWork, on_error: FileError, opened_at: float) -> None:
        self.final = final
        self.display = final  # the name as dvr_path spells it
        self.temp = paths.temp_path(final)
        self.files = files
        self._on_error = on_error
        self.opened_at = opened_at
        self.fd = -1  # the worker's, and where its file position is:
        self._at = 0
        self.size = 0  # the worker's: the finished file's size
        self.parts: list[bytes] = []
        self.pending = 0  # bytes in parts
        self.written = 0  # where the next flush goes in the file
        self.media = 0  # media messages written
        self.first_ts: int | None = None
        self.last_ts = 0
        files.submit(self._open, done=self._failed, errors_only=True)

    def duration_ms(self) -> int:
        return 0 if self.first_ts is None else self.last_ts - self.first_ts

    def note_time(self, ts: int) -> None:
        if self.first_ts is None:
            self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts

    def write_metadata(self, payload: bytes) -> None: ...

    def _put(self, data: bytes) -> None:
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= WRITE_BUFFER:
            self.flush()

    def flush(self) -> None:
        """Hand what is gathered to the worker."""
        if self.parts:
            parts, size, at = self.parts, self.pending, self.written
            self.parts = []
            self.pending = 0
            self.written += size
            self.files.submit(partial(self._write, parts, size, at), size, done=self._failed, errors_only=True)

    def _put_at(self, data: bytes, offset: int) -> None:
        """`data` at `offset` (a patch of what was written), after everything queued before it."""
        self.files.submit(partial(self._patch, data, offset), len(data), done=self._failed, errors_only=True)

    def _complete(self) -> None:
        """The format's last writes, before the file is closed."""
        self.flush()

    def finish(self, done: Done) -> None:
        """Complete the file, close it and give it its final name; `done` hears how it went (once the
        worker did it). With INLINE, a failure raises here instead."""
        self._complete()
        self.files.submit(self._finish, done=done)

    def abort(self) -> None:
        """Close and delete: the recording is dropped."""
        self.parts = []
        self.pending = 0
        self.files.submit(self._abort)

    def _failed(self, error: OSError | None) -> None:
        if error is not None:
            self._on_error(self, error)

    # What follows runs in the worker.

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.final), exist_ok=True)
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)

    def _write(self, parts: list[bytes], size: int, offset: int) -> None:
        """Appends go where the last one ended (plain writev: a file being recorded is written in order);
        the file position moves only to leave a hole (MP4's reserved moov space)."""
        fd = self.fd
        if fd < 0:
            return  # the open (or an earlier write) failed, and said so
        try:
            if offset != self._at:
                os.lseek(fd, offset, os.SEEK_SET)
            write_all(fd, parts, size)
            self._at = offset + size
        except OSError:
            self.fd = -1
            close_quietly(fd)
            raise

    def _patch(self, data: bytes, offset: int) -> None:
        fd = self.fd
        if fd < 0:
            return
        try:
            with memoryview(data) as rest:
                while rest:
                    n = os.pwrite(fd, rest, offset)
                    rest = rest[n:]
                    offset += n
        except OSError:
            self.fd = -1
            close_quietly(fd)
            raise

    def _finish(self) -> None:
        fd, self.fd = self.fd, -1
        try:
            if fd < 0:
                raise OSError(f"{self.temp} was not written")
            os.close(fd)
            self.size = os.path.getsize(self.temp)
            os.replace(self.temp, self.final)
        except OSError:
            remove_file(self.temp)
            raise

    def _abort(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            close_quietly(fd)
        remove_file(self.temp)


FileError = Callable[[_File, OSError], None]


class _FlvFile(_File):
    """FLV: the tags as they come; the metadata's duration and filesize are filled in when reaped.

    Each tag is three buffers, its header, its body (the message's own bytes) and its size: the body is
    copied once, by the kernel's writev.
    """

    def __init__(self, final: str, files: FileWork, on_error: FileError, opened_at: float) -> None:
        super().__init__(final, files, on_error, opened_at)
        # Both flags, as SRS writes them: which tracks will come is not known yet.
        self._put(flv_header(True, True))
        self.position = 13
        self.meta_patch: tuple[int, int] | None = None  # file offsets of the duration and filesize numbers

    def write_metadata(self, payload: bytes) -> None:
        body = payload
        try:
            values = amf0.decode_all(payload)
        except ProtocolError:
            values = []
        if values and values[0] == "@setDataFrame":
            values = values[1:]  # a file starts its script data with onMetaData itself
            body = amf0.encode(*values)
        if len(values) >= 2 and isinstance(values[1], dict):
            props = amf0.EcmaArray(values[1])
            props.pop("duration", None)
            props.pop("filesize", None)
            # Last, so their numbers sit at known distances from the end of the body.
            props["filesize"] = 0.0
            props["duration"] = 0.0
            body = amf0.encode(values[0], props, *values[2:])
            tail = len(amf0.encode(*values[2:]))
            end = self.position + 11 + len(body) - tail - 3  # the object-end marker
            duration_at = end - 8
            filesize_at = duration_at - 1 - 2 - len("duration") - 8
            self.meta_patch = (duration_at, filesize_at)
        self.tag(TAG_SCRIPT, 0, body)

    def tag(self, type_id: int, ts: int, payload: bytes) -> None:
        """One tag (its header, the payload itself and its size)."""
        size = len(payload)
        self.parts += (
            TAG_HEADER.pack(type_id << 24 | size, (ts << 8 & 0xFFFFFF00) | (ts >> 24 & 0xFF), 0, 0),
            payload,
            PREVIOUS_TAG_SIZE.pack(size + 11),
        )
        self.position += size + 15
        self.pending += size + 15
        if self.pending >= WRITE_BUFFER:
            self.flush()

    def frame(self, type_id: int, ts: int, payload: bytes) -> None:
        """A media tag: what `write` does, for a file that has media already (Recorder.on_message)."""
        self.tag(type_id, ts, payload)
        self.media += 1
        if ts > self.last_ts:
            self.last_ts = ts

    def write(self, type_id: int, ts: int, payload: bytes, media: bool = True) -> None:
        self.tag(type_id, ts, payload)
        if media:
            self.media += 1
            self.note_time(ts)

    def _complete(self) -> None:
        self.flush()
        if self.meta_patch is not None:
            duration_at, filesize_at = self.meta_patch
            self._put_at(struct.pack(">d", self.duration_ms() / 1000.0), duration_at)
            self._put_at(struct.pack(">d", float(self.position)), filesize_at)


class _Mp4File(_File):
    """MP4: sample data appended in one mdat, the sample tables kept by codec.mp4 and written last."""

    def __init__(
        self,
        final: str,
        reserve: int,
        tracks: dict[str, mp4.TrackSpec],
        files: FileWork,
        on_error: FileError,
        opened_at: float,
    ) -> None:
        super().__init__(final, files, on_error, opened_at)
        self.mp4 = mp4.ProgressiveMp4(reserve)
        header = self.mp4.header()
        if self.mp4.reserve:
            # The reserved space as a hole: no megabytes of zeros written per file where the
            # filesystem is sparse; the free box reads as zeros either way.
            self._put(header[: self.mp4.reserve_offset + 8])
            self.flush()
            self.written = self.mp4.mdat_header_offset
            self._put(header[self.mp4.mdat_header_offset :])
        else:
            self._put(header)
        for key, spec in tracks.items():
            self.set_track(key, spec)
        self.audio_next: int | None = None

    def set_track(self, key: str, spec: mp4.TrackSpec) -> None:
        default = aac.SAMPLES_PER_FRAME if spec.codec == "mp4a" else (960 if spec.codec == "Opus" else 40)
        self.mp4.set_track(key, spec, default)

    def write_video(self, ts: int, cts: int, body: bytes, sync: bool) -> None:
        self.mp4.add("video", ts, cts, len(body), sync)
        self._put(body)
        self.media += 1
        self.note_time(ts)

    def write_audio(self, ts: int, body: bytes, rate: int, frame: int) -> None:
        # Counting samples keeps AAC durations at exactly one frame; millisecond timestamps would
        # give 1023/1024/1025. A real gap (more than half a frame off) is kept as it is.
        at = ts * rate // 1000
        expected = self.audio_next
        if frame and expected is not None and abs(at - expected) <= frame // 2:
            at = expected
        self.audio_next = at + frame if frame else None
        self.mp4.add("audio", at, 0, len(body), True)
        self._put(body)
        self.media += 1
        self.note_time(ts)

    def _complete(self) -> None:
        moov = self.mp4.moov()
        fitted = self.mp4.in_reserve(moov)
        if fitted is None:
            self._put(moov)
        self.flush()
        self._put_at(self.mp4.mdat_header(), self.mp4.mdat_header_offset)
        if fitted is not None:
            self._put_at(fitted, self.mp4.reserve_offset)


# ---------------------------------------------------------------- the recorder


class Recorder:
    """A MediaSink that records one stream; see the module docstring. Build it with `dvr_recorder_for`."""

    def __init__(
        self,
        settings: DvrSettings,
        vhost: str,
        app: str,
        stream: str,
        on_reaped: OnReaped | None = None,
        clock: Callable[[], float] = time.time,
        files: FileWork = INLINE,
    ) -> None:
        # Who does the file system calls: the DVR's worker thread in the server (a slow disk then delays
        # the recordings, not the loop), or INLINE (tools, tests: errors raise where they happen).
        self.files = files
        self.first_raw: int | None = None  # the stream's timestamp of the current file's first message
        self._cut_at = math.inf  # messages before this stream timestamp cannot start a new segment
        # The open FLV file once media went into it: coded audio frames, and (after a keyframe) coded
        # video frames, go straight to it from on_message.
        self._fast: _FlvFile | None = None
        self._fast_video: _FlvFile | None = None
        self.settings = settings  # replaced on reload; read when the next file opens
        self.vhost, self.app, self.stream = vhost, app, stream
        self.on_reaped = on_reaped
        self.clock = clock
        self.file: _File | None = None
        self.jitter = _Jitter(settings.time_jitter)
        self.active = False  # between on_publish and on_unpublish/close
        self.has_keyframe = False
        self.has_video = False
        self.metadata: bytes | None = None
        self.video_sh: tuple[int, bytes] | None = None
        self.audio_sh: tuple[int, bytes] | None = None
        self.video_track: mp4.TrackSpec | None = None
        self.audio_track: mp4.TrackSpec | None = None
        self.audio_rate = 0
        self.audio_frame = 0
        self.failed = False  # a disk error was logged for this stream (once: it stays set)
        self.broken = False  # the last attempt to write failed; retried from retry_at on
        self.retry_at = 0.0
        self.skipped: set[str] = set()  # codecs MP4 cannot carry, logged once
        self.reaped: list[Reaped] = []
        self.opened_at = 0.0
        self.last_flush = 0.0

    @property
    def settings(self) -> DvrSettings:
        return self._settings

    @settings.setter
    def settings(self, value: DvrSettings) -> None:
        self._settings = value
        self._cut_at = self._cut_time()

    def _cut_time(self) -> float:
        """The stream timestamp from which the open file may be cut (dvr_plan segment); inf otherwise."""
        s = self._settings
        if self.first_raw is None or s.dvr_plan != "segment" or s.dvr_duration <= 0:
            return math.inf
        return self.first_raw + s.dvr_duration * 1000

    @property
    def name(self) -> str:
        return f"{self.vhost}/{self.app}/{self.stream}"

    @property
    def is_mp4(self) -> bool:
        return paths.is_mp4(self.settings.dvr_path)

    # ------------------------------------------------------------ MediaSink

    def on_publish(self) -> None:
        if self.file is not None:
            self.reap()  # a publish without an unpublish before it: the old session ends here
        self.active = True
        self.metadata = self.video_sh = self.audio_sh = None
        self.video_track = self.audio_track = None
        self.has_video = False

    def on_metadata(self, payload: bytes) -> None:
        if not self.active:
            return
        self.metadata = payload
        if self.file is not None and self.file.media == 0:
            self._guard(lambda f: f.write_metadata(payload))

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        try:
            # Nearly every message: a coded H.264 or AAC frame that cannot start a new segment, for an FLV
            # file that has media already. It is written as _write would, without the classification.
            if timestamp_ms < self._cut_at and len(payload) > 1 and payload[1] == 1:
                if type_id == TAG_AUDIO:
                    f = self._fast
                    if f is not None and payload[0] >> 4 == 10:
                        f.frame(TAG_AUDIO, self.jitter.correct(timestamp_ms), payload)
                        return
                elif type_id == TAG_VIDEO:
                    f = self._fast_video
                    if f is not None and (payload[0] == 0x27 or payload[0] == 0x17):
                        f.frame(TAG_VIDEO, self.jitter.correct(timestamp_ms), payload)
                        return
            if not self.active:
                return
            self._on_message(type_id, timestamp_ms, payload)
        except OSError as exc:
            self._disk_error(exc)
        except Exception:  # never into the stream's fan-out
            log.exception("dvr: %s: recording failed; this publish is no longer recorded", self.name)
            self._drop()
            self.active = False  # once: a bug that repeats per message must not flood the log

    def on_unpublish(self) -> None:
        self.reap()
        self.active = False

    # ------------------------------------------------------------ control

    def close(self) -> None:
        """Reap now and record nothing more until the next publish (drain, a reload that disables DVR)."""
        self.on_unpublish()

    def tick(self, now_wall: float) -> None:
        """Periodic: hand buffered data to the kernel, so a reader of the temp file (or a crash) loses little;
        and drop the recording while the disk is too far behind, rather than hold its bytes without bound."""
        f = self.file
        if f is None or now_wall - self.last_flush < FLUSH_INTERVAL:
            return
        self.last_flush = now_wall
        backlog = self.files.backlog()
        if backlog > MAX_FILE_BACKLOG:
            self._disk_error(OSError(f"the disk is {backlog / 2**20:.0f} MiB behind"), f)
            return
        self._guard(lambda f: f.flush())

    def reap(self) -> None:
        """Finish the current file and give it its final name (reported once that is done); a file that
        holds no media is dropped."""
        f = self.file
        if f is None:
            return
        self._forget_file()
        if f.media == 0:
            f.abort()
            return
        try:
            f.finish(partial(self._finished, f))
        except OSError as exc:  # INLINE
            self._disk_error(exc, f)

    def _finished(self, f: _File, error: OSError | None) -> None:
        if error is not None:
            self._disk_error(error, f)
            return
        reaped = Reaped(f.final, f.display, self.vhost, self.app, self.stream, f.duration_ms(), f.size, f.opened_at)
        self.reaped.append(reaped)
        log.info("dvr: %s: reaped %s (%d ms, %d bytes)", self.name, f.final, reaped.duration_ms, f.size)
        if self.on_reaped is not None:
            try:
                self.on_reaped(reaped)
            except Exception:
                log.exception("dvr: %s: on_reaped for %s failed", self.name, f.final)

    def _file_error(self, f: _File, error: OSError) -> None:
        """The worker could not open or write `f`: it is dropped (if it is still the one being written)."""
        self._disk_error(error, f)

    # ------------------------------------------------------------ internals

    def _guard(self, action: Callable[[_File], None]) -> None:
        f = self.file
        if f is None:
            return
        try:
            action(f)
        except OSError as exc:
            self._disk_error(exc)

    def _disk_error(self, exc: OSError, f: _File | None = None) -> None:
        f = f or self.file
        path = exc.filename or (f.temp if f is not None else self.settings.dvr_path)
        if not self.failed:
            self.failed = True
            log.error(
                "dvr: %s: cannot write %s: %s; recording of this stream stops until it can (logged once)",
                self.name,
                path,
                exc.strerror or exc,
            )
        if f is not None:
            f.abort()
        if f is None or f is self.file:
            self._forget_file()
        self.broken = True
        self.retry_at = self.clock() + RETRY_INTERVAL

    def _drop(self) -> None:
        if self.file is not None:
            self.file.abort()
            self._forget_file()

    def _forget_file(self) -> None:
        self.file = self._fast = self._fast_video = None
        self.first_raw = None
        self._cut_at = math.inf

    def _open(self) -> _File | None:
        settings = self.settings
        now = self.clock()
        if self.broken and now < self.retry_at:
            return None  # not a mkdir and an open per message while the disk is failing
        if self.files.backlog() > MAX_FILE_BACKLOG:
            self.broken = True  # the disk is still behind: not a file that would be dropped again at once
            self.retry_at = now + RETRY_INTERVAL
            return None
        try:
            final = paths.file_path(settings.dvr_path, self.vhost, self.app, self.stream, now)
        except paths.DvrPathError as exc:
            if not self.failed:
                self.failed = True
                log.error("%s", exc)
            self.active = False
            return None
        self.jitter = _Jitter(settings.time_jitter)
        self.has_keyframe = False
        self.opened_at = now
        self.last_flush = now
        f: _File
        if paths.is_mp4(settings.dvr_path):
            reserve = 0
            if settings.dvr_mp4_faststart:
                if settings.dvr_plan == "segment" and settings.dvr_duration > 0:
                    reserve = RESERVE_BASE + int(settings.dvr_duration * 1.5 + 10) * RESERVE_PER_SECOND
                else:
                    reserve = RESERVE_SESSION
            tracks = {k: v for k, v in (("video", self.video_track), ("audio", self.audio_track)) if v is not None}
            f = _Mp4File(final, reserve, tracks, self.files, self._file_error, now)
        else:
            f = _FlvFile(final, self.files, self._file_error, now)
        f.display = paths.expand(paths.template_for(settings.dvr_path), self.vhost, self.app, self.stream, now)
        self._forget_file()
        self.file = f
        if self.broken:
            self.broken = False
            log.info("dvr: %s: recording again, to %s", self.name, f.temp)
        if self.metadata is not None:
            f.write_metadata(self.metadata)
        # A new file starts with the sequence headers, at time 0.
        for sh in (self.video_sh, self.audio_sh):
            if sh is not None:
                self._write(f, sh[0], 0, sh[1], header=True)
        return f

    def _should_cut(self, type_id: int, ts: int, payload: bytes) -> bool:
        settings = self.settings
        if settings.dvr_plan != "segment" or settings.dvr_duration <= 0 or self.first_raw is None:
            return False
        # The message at hand counts: a keyframe exactly dvr_duration in starts the next file.
        if ts - self.first_raw < settings.dvr_duration * 1000:
            return False
        if not settings.dvr_wait_keyframe:
            return True
        if type_id == TAG_VIDEO:
            return _is_keyframe(payload) and not _is_video_header(payload)
        # Audio-only streams have no keyframe to wait for (SRS would never cut them).
        return not self.has_video

    def _on_message(self, type_id: int, ts: int, payload: bytes) -> None:
        if type_id == TAG_VIDEO:
            self.has_video = True
            if _is_video_header(payload):
                self.video_sh = (type_id, payload)
                self._update_video_track(payload)
        elif type_id == TAG_AUDIO:
            if _is_audio_header(payload):
                self.audio_sh = (type_id, payload)
                self._update_audio_track(payload)
        else:
            return
        f = self.file
        if f is not None and self._should_cut(type_id, ts, payload):
            self.reap()
            f = None
        if f is None:
            f = self._open()
            if f is None:
                return
            self.first_raw = ts
            self._cut_at = self._cut_time()
            is_header = (type_id == TAG_VIDEO and _is_video_header(payload)) or (
                type_id == TAG_AUDIO and _is_audio_header(payload)
            )
            if is_header:
                return  # _open just wrote it
        self._write(f, type_id, self.jitter.correct(ts), payload, header=False)

    def _write(self, f: _File, type_id: int, ts: int, payload: bytes, header: bool) -> None:
        if type_id == TAG_VIDEO and not header and not _is_video_header(payload):
            if _is_keyframe(payload):
                self.has_keyframe = True
            elif not self.has_keyframe and self.settings.dvr_wait_keyframe:
                return  # undecodable without the keyframe before it
        if isinstance(f, _FlvFile):
            is_header = header or (_is_video_header(payload) if type_id == TAG_VIDEO else _is_audio_header(payload))
            f.write(type_id, ts, payload, media=not is_header)  # headers alone do not make a recording
            if not is_header:
                self._fast = f
                if type_id == TAG_VIDEO and self.has_keyframe:
                    self._fast_video = f
            return
        assert isinstance(f, _Mp4File)
        if type_id == TAG_VIDEO:
            parts = mp4.flv_video(payload)
            if parts is None:
                return
            if self.video_track is None:
                self._skip(f"video codec {parts[0]}")
                return
            fourcc, kind, cts, body = parts
            if kind == 0:
                f.set_track("video", self.video_track)
            elif kind == 1 and fourcc == self.video_track.codec:
                f.write_video(ts, cts, body, _is_keyframe(payload))
            return
        aparts = mp4.flv_audio(payload)
        if aparts is None:
            self._skip(f"audio format {payload[0] >> 4 if payload else -1}")
            return
        if self.audio_track is None:
            self._skip(f"audio codec {aparts[0]} without a readable sequence header")
            return
        fourcc, kind, body = aparts
        if kind == 0:
            f.set_track("audio", self.audio_track)
        elif kind == 1 and fourcc == self.audio_track.codec:
            f.write_audio(ts, body, self.audio_rate, self.audio_frame)

    def _skip(self, what: str) -> None:
        if what not in self.skipped:
            self.skipped.add(what)
            log.warning("dvr: %s: %s cannot go in an MP4 recording; it is left out (record to .flv to keep it)",
                        self.name, what)  # fmt: skip

    # The MP4 track descriptions are kept whatever the format, so a reload from .flv to .mp4
    # has them for its next file; they change only with a sequence header.

    def _update_video_track(self, payload: bytes) -> None:
        spec = self._track_from_header("video", payload, mp4.flv_video, mp4.video_track_from_flv, self.video_track)
        if spec is not False:
            self.video_track = spec

    def _update_audio_track(self, payload: bytes) -> None:
        spec = self._track_from_header("audio", payload, mp4.flv_audio, mp4.audio_track_from_flv, self.audio_track)
        if spec is False:
            return
        if spec is not None:
            self.audio_rate = spec.timescale
            # Counted AAC frames keep durations exact; Opus frames vary (2.5 to 60 ms): timestamps decide.
            self.audio_frame = aac.SAMPLES_PER_FRAME if spec.codec == "mp4a" else 0
        self.audio_track = spec

    def _track_from_header(
        self,
        kind: str,
        payload: bytes,
        split: Callable[[bytes], Any],
        describe: Callable[[bytes], mp4.TrackSpec],
        old: mp4.TrackSpec | None,
    ) -> mp4.TrackSpec | Literal[False] | None:
        """The track a sequence header describes (None: not recordable in MP4); False when it is no header."""
        parts = split(payload)
        if parts is None or parts[1] != 0:
            return False
        try:
            spec: mp4.TrackSpec | None = describe(payload)
        except ProtocolError as exc:
            if self.is_mp4:
                log.warning("dvr: %s: %s sequence header left out of MP4: %s", self.name, kind, exc)
            spec = None
        if isinstance(self.file, _Mp4File) and old is not None and (spec is None or spec.codec != old.codec):
            self.reap()  # an MP4 track cannot change codec: a new file
        return spec


def _is_keyframe(payload: bytes) -> bool:
    return bool(payload) and (payload[0] >> 4) & 0x07 == 1


def _is_video_header(payload: bytes) -> bool:
    if len(payload) < 2:
        return False
    if payload[0] & 0x80:
        return payload[0] & 0x0F == 0
    return payload[1] == 0 and payload[0] & 0x0F in (7, 12)


def _is_audio_header(payload: bytes) -> bool:
    if len(payload) < 2:
        return False
    if payload[0] >> 4 == 10:
        return payload[1] == 0
    return payload[0] >> 4 == 9 and payload[0] & 0x0F == 0


def dvr_recorder_for(
    settings: DvrSettings,
    vhost: str,
    app: str,
    stream: str,
    on_reaped: OnReaped | None = None,
    clock: Callable[[], float] = time.time,
    files: FileWork = INLINE,
) -> Recorder | None:
    """A recorder for this stream, or None when DVR is off, dvr_apply leaves it out, or its path would
    leave the DVR directory (logged)."""
    if not settings.enabled or not applies(settings.dvr_apply, app, stream):
        return None
    try:
        paths.file_path(settings.dvr_path, vhost, app, stream, clock())
    except paths.DvrPathError as exc:
        log.error("%s", exc)
        return None
    return Recorder(settings, vhost, app, stream, on_reaped, clock, files)
