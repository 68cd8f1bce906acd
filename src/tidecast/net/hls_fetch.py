"""An edge's HLS from its origins (`cluster { mode remote; hls_fetch on; }`): fetched over HTTP, cached, shared.

Every edge then serves the origins' own playlists and segments, byte for byte: the same names and
MEDIA-SEQUENCE on every edge, so a player whose requests a balancer spreads over edges (per request,
or per connection as a Kubernetes Service does) never asks one edge for another's segment, and a fresh
edge serves the whole window at once. It is the nginx `proxy_cache` SRS users put in front of origin
HLS on shared storage, built in.

One `HlsFetcher` per process answers GET and HEAD of `.m3u8`, `.ts`, `.m4s`, `.aac` and HLS init
`-init-N.mp4` for such vhosts, before the static handler looks at the disk (net/http.py); what to keep
and for how long is hls/fetchcache.py's policy. Concurrent requests for one key share one upstream
request (a task every waiter awaits shielded, so a player that leaves does not cancel the others'),
at most `MAX_IN_FLIGHT` upstream requests run at once, and each is bounded in connect time, total time
and body size. Origins are tried from the one that last answered for the stream, then in `origin`
order; a 404, an error status or a failed connection moves to the next one. When all fail, a playlist
is answered from its last good copy for a few target durations (players take an unchanged playlist
as "no new segment yet"), else with a 404 (an origin said so) or a 502, naming what each origin said.

Failures are counted on /metrics and logged once per kind every `LOG_INTERVAL_S`; nothing is logged
per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from yarl import URL

from tidecast import __version__
from tidecast.hls.fetchcache import (
    MEDIA_MAX_AGE_S,
    NEGATIVE_TTL_S,
    PLAYLIST,
    ByteLru,
    Expiring,
    PlaylistCopy,
    Recent,
    kind_of,
    ll_query,
    origin_order,
    playlist_ttl,
    resolve,
    stale_window,
    stream_key,
)
from tidecast.hls.playlist import media_sequence_of, uris_of
from tidecast.live.names import check_rel_path, sanitize
from tidecast.net.http_play import CORS
from tidecast.net.urls import split_origin

if TYPE_CHECKING:
    from tidecast.config import Config, Vhost

log = logging.getLogger("tidecast.hls_fetch")

CONNECT_TIMEOUT_S = 2.0
# Long enough for a low-latency blocking reload or part the origin holds (3 target durations).
TOTAL_TIMEOUT_S = 10.0
MAX_IN_FLIGHT = 32
SLOT_WAIT_S = 5.0  # a request waits this long for an upstream slot, then gets a 503
MAX_REDIRECTS = 3
PLAYLIST_MAX_BYTES = 1024 * 1024
OBJECT_MAX_BYTES = 32 * 1024 * 1024
NEGATIVE_KEYS = 10_000
RECENT_STREAMS = 4096
LOG_INTERVAL_S = 10.0

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MEDIA_TYPES = {".ts": "video/MP2T", ".m4s": "video/iso.segment", ".aac": "audio/aac", ".mp4": "video/mp4"}
_PLAYLIST_HEADERS = {**CORS, "Cache-Control": "no-cache"}

Key = tuple[str, str, str]  # vhost, path under the origin's root, low-latency query


class TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body: bytes
    text: str = ""  # why, for a failure
    stale: bool = False


def cache_limits(config: Config) -> tuple[int, int]:
    """(segment cache bytes, largest object kept): the largest `hls_fetch_cache` of the fetching vhosts."""
    sizes = [v.cluster.hls_fetch_cache for v in config.vhosts.values() if v.cluster.hls_fetch]
    limit = max(sizes) if sizes else 64 * 1024 * 1024
    return limit, min(OBJECT_MAX_BYTES, max(64 * 1024, limit // 4))


class _FailureLog:
    """One line per failure kind every LOG_INTERVAL_S, with how many were not logged."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def note(self, kind: str, level: int, message: str) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -LOG_INTERVAL_S) < LOG_INTERVAL_S:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.suppressed.pop(kind, 0)
        log.log(level, "hls_fetch: %s%s", message, f" ({more} more of this kind not logged)" if more else "")


class HlsFetcher:
    def __init__(self, config: Callable[[], Config]) -> None:
        self.config = config
        limit, object_limit = cache_limits(config())
        self.media: ByteLru[bytes] = ByteLru(limit, object_limit, MEDIA_MAX_AGE_S)
        self.playlists: ByteLru[PlaylistCopy] = ByteLru(max(PLAYLIST_MAX_BYTES, limit // 8), PLAYLIST_MAX_BYTES)
        self.negative = Expiring(NEGATIVE_TTL_S, NEGATIVE_KEYS)
        self.last_origin = Recent(RECENT_STREAMS)
        self.in_flight: dict[Key, asyncio.Task[Fetched]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failures = _FailureLog()
        # Counters for /metrics, by kind (playlist, media).
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.coalesced: dict[str, int] = {}
        self.negative_hits: dict[str, int] = {}
        self.stale_served = 0
        self.refused = 0
        self.upstream_requests: dict[str, int] = {}
        self.upstream_errors: dict[str, int] = {}

    # ------------------------------------------------------------ lifecycle (a Service of app.py)

    def reload(self) -> None:
        limit, object_limit = cache_limits(self.config())
        self.media.resize(limit, object_limit)
        self.playlists.resize(max(PLAYLIST_MAX_BYTES, limit // 8), PLAYLIST_MAX_BYTES)

    async def close(self) -> None:
        for task in list(self.in_flight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, ttl_dns_cache=5, keepalive_timeout=15)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": f"tidecast/{__version__} hls_fetch"},
                timeout=aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
            )
        return self._session

    # ------------------------------------------------------------ requests

    async def __call__(self, request: web.Request) -> web.StreamResponse | None:
        """The answer for an HLS request of a fetching vhost, or None: not ours, the static handler goes on."""
        kind = kind_of(request.path)
        if kind is None or request.method not in ("GET", "HEAD"):
            return None
        settings = self.config().vhost(request.query.get("vhost") or request.host.split(":")[0])
        if settings.cluster.mode != "remote" or not settings.cluster.hls_fetch:
            return None
        rel = request.path[1:]
        why = check_rel_path(rel)
        if why is not None:
            self.refused += 1
            raise web.HTTPBadRequest(text=f"hls_fetch: refused: {why}\n", headers=CORS)
        query = ""
        if kind == PLAYLIST:
            try:
                query = ll_query(request.query)
            except ValueError as exc:
                self.refused += 1
                raise web.HTTPBadRequest(text=f"hls_fetch: {exc}\n", headers=CORS) from None
        key: Key = (settings.name, rel, query)
        result = await self.get(key, kind, settings)
        return self._respond(kind, rel, result)

    async def get(self, key: Key, kind: str, settings: Vhost) -> Fetched:
        now = time.monotonic()
        if kind == PLAYLIST:
            copy = self.playlists.get(key, now)
            if copy is not None and copy.fresh(now):
                _count(self.hits, kind)
                return Fetched(200, copy.body)
        else:
            body = self.media.get(key, now)
            if body is not None:
                _count(self.hits, kind)
                return Fetched(200, body)
        remembered = self.negative.get(key, now)
        if remembered is not None:
            _count(self.negative_hits, kind)
            return Fetched(remembered[0], b"", remembered[1])
        task = self.in_flight.get(key)
        if task is None:
            _count(self.misses, kind)
            task = asyncio.get_running_loop().create_task(self._fetch(key, kind, settings))
            self.in_flight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        else:
            _count(self.coalesced, kind)
        return await asyncio.shield(task)

    def _done(self, key: Key, task: asyncio.Task[Fetched]) -> None:
        if self.in_flight.get(key) is task:
            del self.in_flight[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("hls_fetch: fetching %s failed unexpectedly", sanitize(key[1]), exc_info=task.exception())

    def _respond(self, kind: str, rel: str, result: Fetched) -> web.Response:
        if result.status != 200:
            text = result.text or f"hls_fetch: {rel}: HTTP {result.status} from the origin"
            headers = _PLAYLIST_HEADERS if kind == PLAYLIST else CORS
            return web.Response(status=result.status, text=text.rstrip("\n") + "\n", headers=headers)
        if kind == PLAYLIST:
            return web.Response(body=result.body, content_type=PLAYLIST_TYPE, headers=_PLAYLIST_HEADERS)
        ext = rel[rel.rfind(".") :]
        return web.Response(
            body=result.body, content_type=MEDIA_TYPES.get(ext, "application/octet-stream"), headers=CORS
        )

    # ------------------------------------------------------------ upstream

    async def _fetch(self, key: Key, kind: str, settings: Vhost) -> Fetched:
        vhost, rel, query = key
        cluster = settings.cluster
        origins = list(cluster.origin)
        if not origins:
            self._failures.note("no_origin", logging.WARNING, f"vhost {vhost} has no cluster.origin to fetch from")
            return Fetched(502, b"", f"hls_fetch: no origin configured for vhost {vhost} (cluster.origin)")
        stream = f"{vhost}/{stream_key(rel)}"
        cap = PLAYLIST_MAX_BYTES if kind == PLAYLIST else self.media.object_limit
        said: list[str] = []
        some_404 = False
        for origin in origin_order(origins, self.last_origin.get(stream)):
            host, _ = split_origin(origin)
            url = URL.build(scheme="http", host=host, port=cluster.hls_fetch_port, path="/" + rel, query_string=query)
            where = f"{host}:{cluster.hls_fetch_port}"
            try:
                status, body = await self._request(url, cap)
            except TooLarge:
                self._error("too_large", f"{where}/{sanitize(rel)} is larger than {cap} bytes (raise hls_fetch_cache)")
                return Fetched(502, b"", f"hls_fetch: {rel} is larger than the {cap} bytes an edge passes on")
            except TimeoutError:
                self._error("timeout", f"{where}: no answer for {sanitize(rel)} in time")
                said.append(f"{where}: timed out")
                continue
            except aiohttp.TooManyRedirects:
                self._error("redirect", f"{where}: more than {MAX_REDIRECTS} redirects for {sanitize(rel)}")
                said.append(f"{where}: too many redirects")
                continue
            except aiohttp.ClientConnectorError as exc:
                self._error("connect", f"cannot connect to {where}: {exc.os_error or exc}")
                said.append(f"{where}: cannot connect")
                continue
            except (aiohttp.ClientError, OSError) as exc:
                self._error("protocol", f"{where}: {type(exc).__name__}: {exc}")
                said.append(f"{where}: {type(exc).__name__}")
                continue
            except _NoSlot:
                self._error("busy", f"{MAX_IN_FLIGHT} upstream requests in flight; {sanitize(rel)} waited too long")
                return Fetched(503, b"", f"hls_fetch: too many upstream requests in flight for {rel}; retry")
            if status == 200:
                self.last_origin.set(stream, origin)
                return self._keep(key, kind, body)
            if status == 404:
                self._count_error("not_found")
                some_404 = True
                said.append(f"{where}: 404")
                continue
            if 400 <= status < 500:
                # The request itself is wrong (a low-latency reload too far ahead): every origin would say so.
                return Fetched(status, b"", body[:1024].decode(errors="replace") or f"HTTP {status} from {where}")
            self._error("status", f"{where} answered HTTP {status} for {sanitize(rel)}")
            said.append(f"{where}: HTTP {status}")
        now = time.monotonic()
        if kind == PLAYLIST:
            copy = self.playlists.peek(key, now) or self.playlists.peek((vhost, rel, ""), now)
            if copy is not None and copy.usable_stale(now):
                self.stale_served += 1
                self._failures.note(
                    "stale",
                    logging.WARNING,
                    f"no origin has {sanitize(rel)} ({'; '.join(said)}): serving the last copy",
                )
                return Fetched(200, copy.body, stale=True)
        # An origin that answered 404 knows (they share one storage, or own their streams); an unreachable
        # one does not contradict it: 404. Only when no origin could say is it a 502.
        status = 404 if some_404 else 502
        found = "not found on the origins" if some_404 else "no origin answered"
        text = f"hls_fetch: {rel}: {found} ({'; '.join(said)})"
        self.negative.add(key, now, status, text)
        return Fetched(status, b"", text)

    async def _request(self, url: URL, cap: int) -> tuple[int, bytes]:
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        try:
            async with asyncio.timeout(SLOT_WAIT_S):
                await slots.acquire()
        except TimeoutError:
            raise _NoSlot() from None
        try:
            kind = "playlist" if url.path.endswith(".m3u8") else "media"
            _count(self.upstream_requests, kind)
            async with self.session().get(url, allow_redirects=True, max_redirects=MAX_REDIRECTS) as resp:
                if resp.status != 200:
                    return resp.status, await resp.content.read(1024)
                if resp.content_length is not None and resp.content_length > cap:
                    raise TooLarge()
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > cap:
                        raise TooLarge()
                return 200, bytes(body)
        finally:
            slots.release()

    def _keep(self, key: Key, kind: str, body: bytes) -> Fetched:
        now = time.monotonic()
        if kind != PLAYLIST:
            self.media.put(key, body, len(body), now)
            return Fetched(200, body)
        text = body.decode(errors="replace")
        sequence = media_sequence_of(text)
        previous = self.playlists.peek(key, now)
        before = previous.media_sequence if previous is not None else None
        if before is not None and sequence is not None and sequence < before:
            # The stream started over (disposed, then published again): its segment names come back.
            vhost, rel, _ = key
            for uri in uris_of(text):
                path = resolve(rel, uri)
                if path is not None:
                    self.media.drop((vhost, path, ""))
        copy = PlaylistCopy(body, now, playlist_ttl(text), stale_window(text), sequence)
        self.playlists.put(key, copy, len(body), now)
        return Fetched(200, body)

    def _count_error(self, kind: str) -> None:
        _count(self.upstream_errors, kind)

    def _error(self, kind: str, message: str) -> None:
        self._count_error(kind)
        self._failures.note(kind, logging.WARNING, message)

    # ------------------------------------------------------------ metrics

    def metrics(self) -> Iterator[Metric]:
        def by_kind(name: str, doc: str, counts: dict[str, int]) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            return family

        yield by_kind("tidecast_hls_fetch_hits", "HLS requests answered from the edge's cache", self.hits)
        yield by_kind("tidecast_hls_fetch_misses", "HLS requests that started an upstream fetch", self.misses)
        yield by_kind(
            "tidecast_hls_fetch_coalesced", "HLS requests that waited for another's upstream fetch", self.coalesced
        )
        yield by_kind(
            "tidecast_hls_fetch_negative_hits", "HLS requests answered by a remembered 404 or 502", self.negative_hits
        )
        yield by_kind("tidecast_hls_fetch_upstream_requests", "HTTP requests made to origins", self.upstream_requests)
        yield by_kind(
            "tidecast_hls_fetch_upstream_errors",
            "failed origin requests: connect, timeout, status, not_found, too_large, redirect, protocol, busy",
            self.upstream_errors,
        )
        yield CounterMetricFamily(
            "tidecast_hls_fetch_stale",
            "playlists served from the last good copy, every origin failing",
            value=self.stale_served,
        )
        yield CounterMetricFamily(
            "tidecast_hls_fetch_refused", "HLS requests refused for their path or query", value=self.refused
        )
        cache = GaugeMetricFamily(
            "tidecast_hls_fetch_cache_bytes", "bytes held by the edge's HLS cache", labels=["kind"]
        )
        cache.add_metric(["media"], self.media.bytes)
        cache.add_metric(["playlist"], self.playlists.bytes)
        yield cache
        objects = GaugeMetricFamily(
            "tidecast_hls_fetch_cache_objects", "objects in the edge's HLS cache", labels=["kind"]
        )
        objects.add_metric(["media"], len(self.media))
        objects.add_metric(["playlist"], len(self.playlists))
        yield objects
        yield CounterMetricFamily(
            "tidecast_hls_fetch_evictions", "cached segments evicted for room", value=self.media.evictions
        )
        yield GaugeMetricFamily("tidecast_hls_fetch_in_flight", "upstream fetches running", value=len(self.in_flight))


class _NoSlot(Exception):
    pass


def _count(counts: dict[str, int], kind: str) -> None:
    counts[kind] = counts.get(kind, 0) + 1
