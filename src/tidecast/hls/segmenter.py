"""HLS for one stream: FLV messages in, MPEG-TS segments and a sliding m3u8 out.

Segments start on keyframes and are cut once they reach `hls_fragment` ×
`hls_td_ratio`. Files are written under a temporary name and renamed, the
segment before the playlist that names it, and a segment that slides out of
the window is deleted only after the playlist stopped naming it, so an nginx
reading the same volume never serves a partial or dangling file. File errors
are logged once and never reach the live fan-out that calls us.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from typing import IO, Any, Protocol

from tidecast.codec import aac, avc
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO
from tidecast.codec.mpegts import AUDIO_PID, AUDIO_STREAM_ID, VIDEO_PID, VIDEO_STREAM_ID, TsMuxer
from tidecast.errors import ProtocolError
from tidecast.hls.playlist import Segment, render, slide, write_atomically

log = logging.getLogger("tidecast.hls")

# Timestamps in the TS start here rather than at 0, as most muxers do, so
# players never see a negative PTS after composition offsets.
PTS_OFFSET = 90_000


class HlsSettings(Protocol):
    enabled: bool
    hls_fragment: float
    hls_td_ratio: float
    hls_aof_ratio: float
    hls_window: float
    hls_path: str
    hls_m3u8_file: str
    hls_ts_file: str
    hls_entry_prefix: str
    hls_cleanup: bool
    hls_dispose: float
    hls_wait_keyframe: bool


def expand(template: str, vhost: str, app: str, stream: str, seq: int | None = None, now: float | None = None) -> str:
    """SRS's path variables: [vhost] [app] [stream] [seq] [timestamp] and [2006] [01] [02] [15] [04] [05] [999]."""
    now = time.time() if now is None else now
    t = time.localtime(now)
    out = template.replace("[vhost]", vhost).replace("[app]", app).replace("[stream]", stream)
    if seq is not None:
        out = out.replace("[seq]", str(seq))
    return (
        out.replace("[timestamp]", str(int(now * 1000)))
        .replace("[2006]", f"{t.tm_year:04d}")
        .replace("[01]", f"{t.tm_mon:02d}")
        .replace("[02]", f"{t.tm_mday:02d}")
        .replace("[15]", f"{t.tm_hour:02d}")
        .replace("[04]", f"{t.tm_min:02d}")
        .replace("[05]", f"{t.tm_sec:02d}")
        .replace("[999]", f"{int(now * 1000) % 1000:03d}")
    )


class HlsMuxer:
    def __init__(self, settings: HlsSettings | Any, vhost: str, app: str, stream: str) -> None:
        self.settings = settings
        self.vhost = vhost
        self.app = app
        self.stream = stream
        self.ts = TsMuxer()
        self.avc: avc.AvcConfig | None = None
        self.aac: aac.AacConfig | None = None
        self.segments: list[Segment] = []
        # Segments out of the playlist stay on disk a while (RFC 8216 6.2.2): a player
        # that loaded the previous playlist still fetches them. (deadline in stream ms, path)
        self.doomed: list[tuple[int, str]] = []
        self.sequence = 0
        self.file: IO[bytes] | None = None
        self.file_path = ""
        self.segment_start = 0
        self.last_ts = 0
        self.next_discontinuity = False
        self.started = False  # published at least once: a republish continues the playlist
        self.publishing = False
        self.last_message = time.time()
        self.disposed = True
        self._error_logged = False

    # ------------------------------------------------------------ paths

    @property
    def m3u8_path(self) -> str:
        s = self.settings
        return os.path.join(s.hls_path, expand(s.hls_m3u8_file, self.vhost, self.app, self.stream))

    def _segment_path(self, seq: int) -> str:
        s = self.settings
        return os.path.join(s.hls_path, expand(s.hls_ts_file, self.vhost, self.app, self.stream, seq))

    def _uri(self, path: str) -> str:
        rel = os.path.relpath(path, os.path.dirname(self.m3u8_path))
        return self.settings.hls_entry_prefix + rel.replace(os.sep, "/")

    # ------------------------------------------------------------ MediaSink

    def on_publish(self) -> None:
        self.publishing = True
        self.last_message = time.time()
        self.avc = self.aac = None
        if self.started and not self.disposed:
            self.next_discontinuity = True
        else:
            self._clean_leftovers()
            self.segments = []
        self.started = True
        self.disposed = False

    def on_unpublish(self) -> None:
        self.publishing = False
        self.last_message = time.time()
        self._guard(self._close_segment, self.last_ts)

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        self.last_message = time.time()
        try:
            if type_id == TAG_VIDEO:
                self._video(timestamp_ms, payload)
            elif type_id == TAG_AUDIO:
                self._audio(timestamp_ms, payload)
        except ProtocolError as exc:
            self._report(f"skipping a malformed frame: {exc}")
        except OSError as exc:
            self._report(f"writing failed: {exc}")
            self._abandon_segment()

    def maybe_dispose(self, now: float) -> bool:
        dispose = self.settings.hls_dispose
        if self.publishing or self.disposed or dispose <= 0 or now - self.last_message < dispose:
            return False
        self._close_segment(self.last_ts)
        _remove(self.m3u8_path)
        for seg in self.segments:
            _remove(seg.path)
        for _, path in self.doomed:
            _remove(path)
        self.segments = []
        self.doomed = []
        self.disposed = True
        self.next_discontinuity = False
        return True

    # ------------------------------------------------------------ media

    def _video(self, ts: int, payload: bytes) -> None:
        if len(payload) < 5 or payload[0] & 0x0F != 7:
            return  # HLS over MPEG-TS carries H.264 only
        if payload[1] == 0:
            self.avc = avc.parse_config(payload[5:])
            return
        if payload[1] != 1 or self.avc is None:
            return
        keyframe = payload[0] >> 4 == 1
        s = self.settings
        if keyframe or not s.hls_wait_keyframe:
            if self.file is not None and ts - self.segment_start >= s.hls_fragment * s.hls_td_ratio * 1000:
                self._close_segment(ts)
            if self.file is None:
                self._open_segment(ts)
        if self.file is None:
            return  # before the first keyframe
        cts = int.from_bytes(payload[2:5], "big")
        if cts & 0x800000:
            cts -= 0x1000000
        data = avc.to_annexb(payload[5:], self.avc, keyframe)
        dts = ts * 90 + PTS_OFFSET
        self.file.write(self.ts.pes(VIDEO_PID, VIDEO_STREAM_ID, data, dts + cts * 90, dts, True, keyframe))
        self.last_ts = ts

    def _audio(self, ts: int, payload: bytes) -> None:
        if len(payload) < 2 or payload[0] >> 4 != 10:
            return  # AAC only
        if payload[1] == 0:
            self.aac = aac.parse_config(payload[2:])
            return
        if self.aac is None:
            return
        s = self.settings
        if self.avc is None:
            # Audio-only: cut on any frame, at the longer audio-only fragment.
            if self.file is not None and ts - self.segment_start >= s.hls_fragment * s.hls_aof_ratio * 1000:
                self._close_segment(ts)
            if self.file is None:
                self._open_segment(ts)
        if self.file is None:
            return
        raw = payload[2:]
        pts = ts * 90 + PTS_OFFSET
        data = aac.adts_header(self.aac, len(raw)) + raw
        self.file.write(self.ts.pes(AUDIO_PID, AUDIO_STREAM_ID, data, pts, pts, self.avc is None, False))
        self.last_ts = max(self.last_ts, ts)

    # ------------------------------------------------------------ segments

    def _open_segment(self, ts: int) -> None:
        self.file_path = self._segment_path(self.sequence)
        os.makedirs(os.path.dirname(self.file_path) or ".", exist_ok=True)
        self.file = open(f"{self.file_path}.tmp", "wb")  # noqa: SIM115 -- open for the segment's life
        self.file.write(self.ts.tables(self.avc is not None, self.aac is not None))
        self.segment_start = ts

    def _close_segment(self, ts: int) -> None:
        file = self.file
        if file is None:
            return
        self.file = None
        file.close()
        duration = max(ts - self.segment_start, 0) / 1000.0
        if duration <= 0:
            _remove(f"{self.file_path}.tmp")
            return
        os.replace(f"{self.file_path}.tmp", self.file_path)
        segment = Segment(self.sequence, self.file_path, self._uri(self.file_path), duration)
        segment.discontinuity, self.next_discontinuity = self.next_discontinuity, False
        self.sequence += 1
        self.segments.append(segment)
        gone = slide(self.segments, self.settings.hls_window)
        write_atomically(self.m3u8_path, render(self.segments, self.settings.hls_fragment).encode())
        if self.settings.hls_cleanup:
            listed = sum(s.duration for s in self.segments)
            for old in gone:
                self.doomed.append((ts + int((old.duration + listed) * 1000), old.path))
            while self.doomed and self.doomed[0][0] <= ts:
                _remove(self.doomed.pop(0)[1])

    def _abandon_segment(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
            _remove(f"{self.file_path}.tmp")

    def _clean_leftovers(self) -> None:
        """Files a crashed run left for this stream: its playlist and the segments its pattern names."""
        template = self.settings.hls_ts_file
        if "[seq]" in template:
            prefix, _, suffix = expand(template, self.vhost, self.app, self.stream).partition("[seq]")
            pattern = os.path.join(self.settings.hls_path, glob.escape(prefix) + "*" + glob.escape(suffix))
            for path in glob.glob(pattern) + glob.glob(pattern + ".tmp"):
                _remove(path)
        _remove(self.m3u8_path)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as exc:
            self._report(f"writing failed: {exc}")
            self._abandon_segment()

    def _report(self, message: str) -> None:
        if not self._error_logged:
            log.warning(
                "hls %s/%s/%s: %s (further errors of this stream are not logged)",
                self.vhost,
                self.app,
                self.stream,
                message,
            )
            self._error_logged = True


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("hls: cannot remove %s: %s", path, exc)
