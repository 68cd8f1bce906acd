"""Attaching DVR recorders to published streams: an observer of the hub, like the HLS manager.

It has the hub observer's methods (`on_stream_created`, `on_stream_removed`,
`on_publish`, `on_unpublish`, `on_play`, `on_stop`) and a service's (`tick`,
`reload`, `close`), and reads only what every live stream has: its names,
`settings` (the vhost: `.dvr`, `.cluster.mode`), `sinks`, `active` and the
cached `metadata`/`video_sh`/`audio_sh` packets. Origins record; edges do not
(SRS records in the origin hub only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tidecast.dvr.recorder import Reaped, Recorder, applies, dvr_recorder_for
from tidecast.filework import INLINE, FileWork, FileWorker
from tidecast.live.hub import StreamEvents

log = logging.getLogger("tidecast.dvr")

Key = tuple[str, str, str]
# (the reaped file, the stream's publisher when the file was opened, or None): for on_dvr.
OnDvr = Callable[[Reaped, Any], None]
# How long a quit waits for the file worker to finish the last recordings.
CLOSE_DRAIN_S = 5.0


class _Packet(Protocol):
    @property
    def type_id(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


class StreamLike(Protocol):
    """What the manager reads of a live stream."""

    @property
    def vhost(self) -> str: ...

    @property
    def app(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> Any: ...

    @property
    def sinks(self) -> list[Any]: ...

    @property
    def active(self) -> bool: ...

    @property
    def metadata(self) -> _Packet | None: ...

    @property
    def video_sh(self) -> _Packet | None: ...

    @property
    def audio_sh(self) -> _Packet | None: ...


def _key(stream: StreamLike) -> Key:
    return (stream.vhost, stream.app, stream.name)


class DvrManager(StreamEvents):
    """One Recorder per published stream that its vhost's `dvr` block applies to."""

    def __init__(self, streams: Callable[[], Iterable[StreamLike]], on_dvr: OnDvr | None = None) -> None:
        self.streams = streams  # e.g. lambda: hub.streams.values()
        self.on_dvr = on_dvr
        self.recorders: dict[Key, Recorder] = {}
        self.publishers: dict[Key, Any] = {}
        self._worker: FileWorker | None = None  # made with the first recorder (it needs the loop)

    def file_backlog(self) -> int:
        """Recording bytes waiting for the disk (a recording stops past MAX_FILE_BACKLOG)."""
        return 0 if self._worker is None else self._worker.backlog()

    def _files(self) -> FileWork:
        """The recordings' own file thread (a slow disk delays them, not the loop, nor HLS on another
        disk); INLINE where no event loop runs (tools, tests)."""
        if self._worker is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return INLINE
            self._worker = FileWorker(loop.call_soon_threadsafe, name="tidecast-dvr-files", defer=loop.call_soon)
        return self._worker

    # ------------------------------------------------------------ hub events

    def on_stream_created(self, stream: StreamLike) -> None:
        pass

    def on_stream_removed(self, stream: StreamLike) -> None:
        self._detach(stream)

    def on_publish(self, stream: StreamLike, client: Any = None) -> None:
        """After the stream's own on_publish: the recorder joins and gets its on_publish here."""
        self.publishers[_key(stream)] = client
        self._attach(stream)

    def on_unpublish(self, stream: StreamLike, client: Any = None) -> None:
        """After the stream's on_unpublish (which reaped the file): a new publish decides afresh."""
        self._detach(stream)
        self.publishers.pop(_key(stream), None)

    def on_play(self, stream: StreamLike, player: Any) -> None:
        pass

    def on_stop(self, stream: StreamLike, player: Any) -> None:
        pass

    # ------------------------------------------------------------ service

    def tick(self, _now: float) -> None:
        now = time.time()
        for recorder in self.recorders.values():
            recorder.tick(now)

    def reload(self) -> None:
        """New settings: recorders whose stream is no longer recorded are reaped now, the others take the
        new values from their next file, and streams newly recorded start at their next keyframe."""
        for stream in list(self.streams()):
            if not stream.active:
                continue
            key = _key(stream)
            recorder = self.recorders.get(key)
            if recorder is None:
                self._attach(stream)
            elif self._wanted(stream):
                recorder.settings = stream.settings.dvr
            else:
                self._detach(stream)

    def close(self) -> None:
        """Drain or quit: every recording is reaped, so none is left under a temporary name (the file
        worker finishes them; `shutdown` waits for it)."""
        for recorder in list(self.recorders.values()):
            recorder.close()

    async def shutdown(self) -> None:
        """Quit: reap every recording and let the file worker finish them (for up to CLOSE_DRAIN_S: a disk
        that does not answer does not hold the quit)."""
        self.close()
        worker = self._worker
        if worker is None:
            return
        if not await worker.shutdown(CLOSE_DRAIN_S):
            log.warning(
                "dvr: the disk took longer than %gs: the last recordings may be left under temporary names",
                CLOSE_DRAIN_S,
            )

    # ------------------------------------------------------------ internals

    @staticmethod
    def _wanted(stream: StreamLike) -> bool:
        settings = stream.settings
        dvr = settings.dvr
        return (
            bool(dvr.enabled) and settings.cluster.mode != "remote" and applies(dvr.dvr_apply, stream.app, stream.name)
        )

    def _attach(self, stream: StreamLike) -> None:
        key = _key(stream)
        if key in self.recorders or not self._wanted(stream):
            return
        publisher = self.publishers.get(key)
        on_dvr = self.on_dvr

        def reaped(item: Reaped) -> None:
            if on_dvr is not None:
                on_dvr(item, publisher)

        recorder = dvr_recorder_for(
            stream.settings.dvr, stream.vhost, stream.app, stream.name, reaped, files=self._files()
        )
        if recorder is None:
            return
        self.recorders[key] = recorder
        stream.sinks.append(recorder)
        recorder.on_publish()
        # Joining a stream already live (a reload turned DVR on): its cached headers first.
        if stream.metadata is not None:
            recorder.on_metadata(stream.metadata.payload)
        for packet in (stream.video_sh, stream.audio_sh):
            if packet is not None:
                recorder.on_message(packet.type_id, packet.timestamp, packet.payload)

    def _detach(self, stream: StreamLike) -> None:
        recorder = self.recorders.pop(_key(stream), None)
        if recorder is None:
            return
        if recorder in stream.sinks:
            stream.sinks.remove(recorder)
        recorder.close()
