"""Attaching HLS muxers to live streams, and disposing of them when streams go idle.

A muxer outlives its LiveStream: after the publisher leaves, its files stay
for `hls_dispose` seconds, and a republish continues the same playlist with a
discontinuity.

Muxers write through one file worker thread per process (tidecast.filework):
a disk or NFS volume that stalls then delays the HLS files, not the
publishers, players and API the event loop serves. Low-latency HLS serves
what its in-memory playlist names (parts, init segments, the recent
segments) from memory, so it never waits for the disk either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tidecast.filework import FileWorker
from tidecast.hls.fmp4 import Fmp4Muxer
from tidecast.hls.playlist import Segment
from tidecast.hls.segmenter import HlsMuxer
from tidecast.hls.store import HlsStore
from tidecast.live.hub import Hub, StreamEvents
from tidecast.live.names import sanitize
from tidecast.live.stream import LiveStream

log = logging.getLogger("tidecast.hls")

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class SegmentWritten:
    """A segment in place and named by the playlist: what the on_hls hooks are told."""

    vhost: str
    app: str
    stream: str
    file: str  # the segment's path, as hls_path spells it
    url: str  # as the playlist names it
    m3u8: str  # the playlist's path
    m3u8_url: str  # the playlist's path under hls_path
    seq_no: int
    duration: float  # seconds


# (the segment, the stream's publisher when it was written, or None)
OnHls = Callable[[SegmentWritten, Any], None]
# How long a quit waits for the file worker to write the last segments and playlists.
CLOSE_DRAIN_S = 5.0


def inside(root: str, path: str) -> bool:
    """True when `path` stays within `root` once both are normalised (the second line of defence
    behind the hub's name checks: a template or a name must never write or delete elsewhere)."""
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == base or real.startswith(base + os.sep)


class HlsManager(StreamEvents):
    def __init__(self, hub: Hub, on_hls: OnHls | None = None) -> None:
        self.hub = hub
        self.on_hls = on_hls
        self.muxers: dict[Key, HlsMuxer] = {}
        self.publishers: dict[Key, Any] = {}  # kept after unpublish: the last segment is written after it
        self.store = HlsStore()  # low-latency playlists and parts, served by net/llhls.py
        self._files: FileWorker | None = None  # made with the first muxer (it needs the loop)

    def _file_worker(self) -> FileWorker:
        if self._files is None:
            loop = asyncio.get_running_loop()
            self._files = FileWorker(loop.call_soon_threadsafe, name="tidecast-hls-files", defer=loop.call_soon)
        return self._files

    def file_backlog(self) -> int:
        """Segment and playlist bytes waiting for the disk (at most MAX_FILE_BACKLOG and a hand-over per stream)."""
        return 0 if self._files is None else self._files.backlog()

    @staticmethod
    def muxes(stream: LiveStream) -> bool:
        """HLS on, and not an edge that fetches its HLS from the origins (`hls_fetch`)."""
        settings = stream.settings
        return settings.hls.enabled and not (settings.cluster.mode == "remote" and settings.cluster.hls_fetch)

    def writing(self, path: str) -> bool:
        """Whether a publishing stream of this process writes the playlist at `path`."""
        real = os.path.realpath(path)
        return any(m.publishing and os.path.realpath(m.m3u8_path) == real for m in self.muxers.values())

    def on_stream_created(self, stream: LiveStream) -> None:
        if self.muxes(stream):
            self._attach(stream)

    def on_stream_removed(self, stream: LiveStream) -> None:
        key = (stream.vhost, stream.app, stream.name)
        muxer = self.muxers.get(key)
        if muxer is not None and not muxer.started:
            # Played but never published: nothing on disk, nothing to dispose of later.
            del self.muxers[key]

    def on_publish(self, stream: LiveStream, client: Any) -> None:
        self.publishers[(stream.vhost, stream.app, stream.name)] = client

    def _segment_written(self, key: Key, muxer: HlsMuxer, segment: Segment) -> None:
        if self.on_hls is None:
            return
        hls_path = muxer.settings.hls_path
        m3u8_url = os.path.relpath(muxer.m3u8_path, hls_path).replace(os.sep, "/")
        written = SegmentWritten(
            *key, segment.path, segment.uri, muxer.m3u8_path, m3u8_url, segment.sequence, segment.duration
        )
        self.on_hls(written, self.publishers.get(key))

    def _attach(self, stream: LiveStream) -> None:
        key = (stream.vhost, stream.app, stream.name)
        muxer = self.muxers.get(key)
        variant = stream.settings.hls.hls_variant
        if muxer is not None and not muxer.publishing and isinstance(muxer, Fmp4Muxer) != (variant != "mpegts"):
            # hls_variant changed by a reload: the next publish starts a playlist in the new format.
            muxer.maybe_dispose(float("inf"))
            del self.muxers[key]
            muxer = None
        if muxer is None:
            if variant == "mpegts":
                muxer = HlsMuxer(stream.settings.hls, stream.vhost, stream.app, stream.name, self._file_worker())
            else:
                muxer = Fmp4Muxer(
                    stream.settings.hls, stream.vhost, stream.app, stream.name, self.store, self._file_worker()
                )
            if not inside(stream.settings.hls.hls_path, muxer.m3u8_path):
                log.error(
                    "hls: %s/%s/%s would write %s outside hls_path %s; not muxing it (check hls_m3u8_file)",
                    stream.vhost,
                    sanitize(stream.app),
                    sanitize(stream.name),
                    sanitize(muxer.m3u8_path),
                    stream.settings.hls.hls_path,
                )
                return
            muxer.on_segment = partial(self._segment_written, key, muxer)
            self.muxers[key] = muxer
        else:
            muxer.settings = stream.settings.hls
        if muxer not in stream.sinks:
            stream.sinks.append(muxer)
            if stream.active:
                muxer.on_publish()

    def _detach(self, stream: LiveStream) -> None:
        key = (stream.vhost, stream.app, stream.name)
        muxer = self.muxers.get(key)
        if muxer is not None and muxer in stream.sinks:
            stream.sinks.remove(muxer)
            if stream.active:
                muxer.on_unpublish()

    def reload(self) -> None:
        for stream in self.hub.streams.values():
            if self.muxes(stream):
                self._attach(stream)
            else:
                self._detach(stream)

    def tick(self, _monotonic: float) -> None:
        now = time.time()
        streams = self.hub.streams
        for key, muxer in list(self.muxers.items()):
            stream = streams.get(key)
            if stream is not None and stream.active:
                muxer.cut_if_stalled(now)
                continue
            try:
                if muxer.maybe_dispose(now):
                    log.info("hls: disposed %s/%s/%s after %ss idle", *key, muxer.settings.hls_dispose)
                    if stream is None:
                        del self.muxers[key]
                        self.publishers.pop(key, None)
            except OSError as exc:
                log.warning("hls: dispose of %s/%s/%s failed: %s", *key, exc)

    async def close(self) -> None:
        """Fast or graceful quit: close open segments so the playlist is complete, and let the file
        worker write them (for up to CLOSE_DRAIN_S: a disk that does not answer does not hold the quit)."""
        for stream in self.hub.streams.values():
            if stream.active:
                for sink in stream.sinks:
                    if isinstance(sink, HlsMuxer):
                        sink.on_unpublish()
        files = self._files
        if files is None:
            return
        if not await files.shutdown(CLOSE_DRAIN_S):
            log.warning(
                "hls: the disk took longer than %gs: the last segments or playlists may be missing",
                CLOSE_DRAIN_S,
            )
