"""Low-latency HLS in memory: each stream's playlist text, parts, init segments and blocking reloads.

The muxer (hls/fmp4.py) pushes a new playlist and part into a `LiveHls` as
it cuts them; HTTP requests read from it. A blocking reload
(`_HLS_msn`/`_HLS_part`, RFC 8216bis 6.2.5.2) awaits one shared
asyncio.Future per awaited (msn, part): every client waiting for the same
part waits on the same future, resolved when the muxer publishes that part,
so a thousand clients cost a thousand awaiting coroutines, not timers or
polling loops. Nothing here touches the disk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

WHOLE_SEGMENT = -1  # an (msn, part) key without _HLS_part: the whole segment msn


@dataclass(frozen=True, slots=True)
class PartRef:
    """Where a part URI points: its stream, segment and index (the data may not exist yet: a preload hint)."""

    live: LiveHls
    msn: int
    index: int


class LiveHls:
    """One low-latency stream's in-memory state. Not thread-safe: the event loop calls it."""

    def __init__(self, key: str) -> None:
        self.key = key  # the playlist path under hls_path ("live/tv.m3u8"), as the URL names it
        self.text = ""  # the full playlist
        self.delta: str | None = None  # the playlist with EXT-X-SKIP, when skipping saves anything
        # Encoded once per update, not once per response: a thousand clients get the same bytes.
        self.body = b""
        self.delta_body: bytes | None = None
        self.msn = 0  # the open segment's media sequence number
        self.parts_done = 0  # complete parts of the open segment
        self.target = 1.0  # EXT-X-TARGETDURATION, seconds: bounds the blocking wait
        self.publishing = False
        self.parts: dict[tuple[int, int], bytes] = {}
        self._waiters: dict[tuple[int, int], asyncio.Future[None]] = {}

    def ready(self, msn: int, part: int) -> bool:
        """Does the current playlist hold segment msn (part WHOLE_SEGMENT) or its part `part`?"""
        if msn < self.msn:
            return True
        if msn > self.msn:
            return False
        return 0 <= part < self.parts_done

    def update(self, text: str, delta: str | None, msn: int, parts_done: int, target: float) -> None:
        """A new playlist: wake whoever waited for what it now holds."""
        self.text = text
        self.delta = delta
        self.body = text.encode()
        self.delta_body = None if delta is None else delta.encode()
        self.msn = msn
        self.parts_done = parts_done
        self.target = target
        if self._waiters:
            for key in [k for k in self._waiters if self.ready(*k)]:
                future = self._waiters.pop(key)
                if not future.done():
                    future.set_result(None)

    def segment(self, msn: int) -> bytes | None:
        """Segment msn from its parts (the file is exactly their concatenation), or None when they are
        gone from memory; what the disk may not have yet while the file worker is behind."""
        parts = []
        index = 0
        while (part := self.parts.get((msn, index))) is not None:
            parts.append(part)
            index += 1
        return b"".join(parts) if parts else None

    def stop(self) -> None:
        """The publisher left: nothing awaited will come, so answer every waiter now (with what there is)."""
        self.publishing = False
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_result(None)

    async def wait(self, msn: int, part: int, timeout: float) -> bool:
        """Until (msn, part) is in the playlist, at most `timeout` seconds; False when it did not come."""
        if self.ready(msn, part):
            return True
        if not self.publishing:
            return False
        key = (msn, part)
        future = self._waiters.get(key)
        if future is None:
            future = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                # shield: one client giving up must not cancel the future the others share.
                await asyncio.shield(future)
        except TimeoutError:
            return False
        return self.ready(msn, part)


class HlsStore:
    """Every low-latency stream of the process, by playlist path, and every part URI, by path."""

    def __init__(self) -> None:
        self.playlists: dict[str, LiveHls] = {}
        # Part URIs, and (index WHOLE_SEGMENT) the recent segments, whose parts are still in memory.
        self.files: dict[str, PartRef] = {}
        # Init segments by path, with their stream: served from here, so a player never waits for the disk.
        self.inits: dict[str, tuple[LiveHls, bytes]] = {}

    def stream(self, key: str) -> LiveHls:
        live = self.playlists.get(key)
        if live is None:
            live = self.playlists[key] = LiveHls(key)
        return live

    def remove(self, key: str) -> None:
        live = self.playlists.pop(key, None)
        if live is not None:
            live.stop()
            live.parts.clear()
            for path in [p for p, ref in self.files.items() if ref.live is live]:
                del self.files[path]
            for path in [p for p, (owner, _) in self.inits.items() if owner is live]:
                del self.inits[path]
