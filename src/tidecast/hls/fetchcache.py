"""What an edge fetching HLS from its origins keeps, and for how long. Pure policy: no I/O, no asyncio.

`net/hls_fetch.py` does the fetching; this decides which requests are HLS, what the cache key of one
is, how long a playlist stays fresh, and holds the bounded caches:

- segments, parts and init segments are immutable: a byte-bounded LRU keyed by path, each object
  capped, with a maximum age (a stream disposed and published again reuses its segment names);
- playlists live for a short TTL (0.5 s, less for short target durations), keyed by path and the
  low-latency query (`_HLS_msn`, `_HLS_part`, `_HLS_skip`: a blocking reload is its own entry), and
  the last good copy stays usable for a few target durations when every origin fails;
- a 404 (or an origin failure) is remembered briefly, so a flood of bogus names costs the origin
  one request per name and half second, not one per request.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from tidecast.hls.playlist import part_target_of, target_of

PLAYLIST = "playlist"
MEDIA = "media"  # segments, parts, init segments

MEDIA_EXTENSIONS = (".ts", ".m4s", ".aac")
# An HLS init segment (hls/fmp4.py names it `<playlist>-init-N.mp4`); any other .mp4 is a live-MP4 play.
INIT_SEGMENT = re.compile(r"-init-[0-9]+\.mp4$")

PLAYLIST_TTL_S = 0.5
PLAYLIST_TTL_MIN_S = 0.1
NEGATIVE_TTL_S = 0.5
MEDIA_MAX_AGE_S = 120.0
STALE_TARGETS = 4.0  # the last good playlist serves this many target durations once every origin fails
STALE_MIN_S = 6.0
STALE_MAX_S = 30.0
LL_PARAMS = ("_HLS_msn", "_HLS_part", "_HLS_skip")
_SKIP_VALUES = ("YES", "v2")

V = TypeVar("V")


def kind_of(path: str) -> str | None:
    """PLAYLIST, MEDIA, or None for a request that is not HLS (a live-MP4 play, a page, an FLV)."""
    if path.endswith(".m3u8"):
        return PLAYLIST
    if path.endswith(MEDIA_EXTENSIONS) or INIT_SEGMENT.search(path):
        return MEDIA
    return None


def ll_query(query: Mapping[str, str]) -> str:
    """The low-latency HLS part of a playlist query, normalised ("" for a plain reload); other parameters
    are dropped, so they can neither bust the cache nor reach the origin. ValueError for a bad value."""
    out: list[str] = []
    for name in LL_PARAMS:
        value = query.get(name)
        if value is None:
            continue
        if name == "_HLS_skip":
            if value not in _SKIP_VALUES:
                raise ValueError(f"{name}={value[:20]!r}: expected YES or v2")
        elif not value.isdigit() or not value.isascii() or len(value) > 12:
            raise ValueError(f"{name}={value[:20]!r} is not a non-negative integer")
        out.append(f"{name}={value}")
    return "&".join(out)


def stream_key(rel: str) -> str:
    """The stream a file belongs to, for the origin that last answered for it: `live/s` for `live/s.m3u8`,
    `live/s-12.ts`, `live/s-12.part3.m4s` and `live/s-init-0.mp4`."""
    base, _ = posixpath.splitext(rel)
    base = re.sub(r"-init-[0-9]+$", "", base)
    base = re.sub(r"-[0-9]+(\.part[0-9]+|\.[0-9]+)?$", "", base)
    return base or rel


def resolve(playlist_rel: str, uri: str) -> str | None:
    """A playlist's URI as a path beside it (None for absolute URLs, or one that climbs out)."""
    if "://" in uri or uri.startswith("/"):
        return None
    uri = uri.partition("?")[0]
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(playlist_rel), uri))
    return None if joined.startswith("..") else joined


def playlist_ttl(text: str) -> float:
    """How long a fetched playlist is served before the next fetch: 0.5 s, a quarter target duration
    for short ones (half a part target for low-latency playlists), never under 0.1 s."""
    ttl = PLAYLIST_TTL_S
    target = target_of(text)
    if target:
        ttl = min(ttl, target / 4)
    part = part_target_of(text)
    if part:
        ttl = min(ttl, part / 2)
    return max(PLAYLIST_TTL_MIN_S, ttl)


def stale_window(text: str) -> float:
    """How long the last good copy of a playlist may stand in when every origin fails."""
    target = target_of(text) or 2.0
    return min(STALE_MAX_S, max(STALE_MIN_S, STALE_TARGETS * target))


@dataclass
class PlaylistCopy:
    body: bytes
    fetched: float  # monotonic
    ttl: float
    stale_for: float
    media_sequence: int | None = None

    def fresh(self, now: float) -> bool:
        return now - self.fetched < self.ttl

    def usable_stale(self, now: float) -> bool:
        return now - self.fetched < self.stale_for


class ByteLru(Generic[V]):
    """Values by key, least recently used out first once their sizes add up to more than `limit` bytes;
    values over `object_limit` are not kept, and entries older than `max_age` seconds are gone."""

    def __init__(self, limit: int, object_limit: int, max_age: float = math.inf) -> None:
        self.limit = limit
        self.object_limit = object_limit
        self.max_age = max_age
        self.bytes = 0
        self.evictions = 0
        self._items: OrderedDict[object, tuple[V, int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def resize(self, limit: int, object_limit: int) -> None:
        self.limit, self.object_limit = limit, object_limit
        self._shrink()

    def peek(self, key: object, now: float) -> V | None:
        """The value without refreshing its place (None once too old)."""
        item = self._items.get(key)
        if item is None:
            return None
        if now - item[2] >= self.max_age:
            self.drop(key)
            return None
        return item[0]

    def get(self, key: object, now: float) -> V | None:
        value = self.peek(key, now)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: object, value: V, size: int, now: float) -> bool:
        """Keep `value` (of `size` bytes); False when it is too big to keep."""
        self.drop(key)
        if size > self.object_limit or size > self.limit:
            return False
        self._items[key] = (value, size, now)
        self.bytes += size
        self._shrink()
        return True

    def drop(self, key: object) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def _shrink(self) -> None:
        while self.bytes > self.limit and self._items:
            _, (_, size, _) = self._items.popitem(last=False)
            self.bytes -= size
            self.evictions += 1


class Expiring:
    """Keys remembered for `ttl` seconds (at most `limit` of them, oldest out first): the negative cache."""

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self._until: OrderedDict[object, tuple[float, int, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def add(self, key: object, now: float, status: int, reason: str) -> None:
        self._until.pop(key, None)
        self._until[key] = (now + self.ttl, status, reason)
        while len(self._until) > self.limit:
            self._until.popitem(last=False)

    def get(self, key: object, now: float) -> tuple[int, str] | None:
        item = self._until.get(key)
        if item is None:
            return None
        if now >= item[0]:
            del self._until[key]
            return None
        return item[1], item[2]


class Recent:
    """A bounded map of the latest value per key (the origin that last answered for a stream)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        return self._items.get(key)

    def set(self, key: str, value: str) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self.limit:
            self._items.popitem(last=False)


def origin_order(origins: list[str], last: str | None) -> list[str]:
    """The origin that last answered first, then the configured list in order."""
    if last is None or last not in origins:
        return list(origins)
    return [last, *(o for o in origins if o != last)]
