"""Attaching HLS muxers to live streams, and disposing of them when streams go idle.

A muxer outlives its LiveStream: after the publisher leaves, its files stay
for `hls_dispose` seconds, and a republish continues the same playlist with a
discontinuity.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tidecast.hls.segmenter import HlsMuxer
from tidecast.live.stream import LiveStream

if TYPE_CHECKING:
    from tidecast.server import Server

log = logging.getLogger("tidecast.hls")

Key = tuple[str, str, str]


class HlsManager:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.muxers: dict[Key, HlsMuxer] = {}
        server.hub.stream_created.append(self._on_stream)
        server.tick_hooks.append(self._tick)
        server.close_hooks.append(self.close)
        server.reload_hooks.append(self._on_reload)

    def _on_stream(self, stream: LiveStream) -> None:
        if stream.settings.hls.enabled:
            self._attach(stream)

    def _attach(self, stream: LiveStream) -> None:
        key = (stream.vhost, stream.app, stream.name)
        muxer = self.muxers.get(key)
        if muxer is None:
            muxer = HlsMuxer(stream.settings.hls, stream.vhost, stream.app, stream.name)
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

    def _on_reload(self) -> None:
        for stream in self.server.hub.streams.values():
            if stream.settings.hls.enabled:
                self._attach(stream)
            else:
                self._detach(stream)

    def _tick(self, _monotonic: float) -> None:
        now = time.time()
        streams = self.server.hub.streams
        for key, muxer in list(self.muxers.items()):
            stream = streams.get(key)
            if stream is not None and stream.active:
                continue
            try:
                if muxer.maybe_dispose(now):
                    log.info("hls: disposed %s/%s/%s after %ss idle", *key, muxer.settings.hls_dispose)
                    if stream is None:
                        del self.muxers[key]
            except OSError as exc:
                log.warning("hls: dispose of %s/%s/%s failed: %s", *key, exc)

    def close(self) -> None:
        """Fast or graceful quit: close open segments so the playlist is complete."""
        for stream in self.server.hub.streams.values():
            if stream.active:
                for sink in stream.sinks:
                    if isinstance(sink, HlsMuxer):
                        sink.on_unpublish()
