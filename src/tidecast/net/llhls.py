"""Serving low-latency HLS from memory: playlists with blocking reloads and delta updates, and parts.

`LlHlsHandler` is called by the static handler (net/http.py) before it looks
at the disk; it answers for the playlists, parts, init segments and recent
segments in the `HlsStore` (the file worker may not have put them on disk
yet) and returns None for anything else (older segments are files).
"""

from __future__ import annotations

from aiohttp import web

from tidecast.hls.store import WHOLE_SEGMENT, HlsStore
from tidecast.net.http_play import CORS

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PART_TYPE = "video/mp4"
# How far ahead a blocking request may ask (RFC 8216bis 6.2.5.2: more than two segments ahead is a 400).
MSN_AHEAD = 2
# A blocking request is held at most this many target durations (the spec's 3x), then answered 503.
HOLD_TARGETS = 3.0


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={raw!r} is not an integer\n", headers=CORS) from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"{name}={raw!r} is negative\n", headers=CORS)
    return value


_PLAYLIST_HEADERS = {**CORS, "Cache-Control": "no-cache"}
_PART_HEADERS = {**CORS, "Cache-Control": "max-age=60", "Accept-Ranges": "bytes"}


def _media(request: web.Request, data: bytes) -> web.Response:
    """A part, init or recent segment from memory, honouring a byte range as the disk's files do
    (aiohttp's FileResponse): 206 with Content-Range for one range, 416 for one it cannot satisfy."""
    size = len(data)
    try:
        wanted = request.http_range  # slice(None, None) without a range; "bytes=-N" is slice(-N, None)
    except ValueError:  # not "bytes=first-last" (a list of ranges, another unit, garbage): unsatisfiable
        wanted = slice(size, size)
    if wanted.start is None:
        return web.Response(body=data, content_type=PART_TYPE, headers=_PART_HEADERS)
    if wanted.start < 0 and wanted.stop is None:
        first, end = max(0, size + wanted.start), size  # the last N bytes
    else:
        first, end = wanted.start, min(size, size if wanted.stop is None else wanted.stop)
    if first >= size or first >= end:
        raise web.HTTPRequestRangeNotSatisfiable(headers={**CORS, "Content-Range": f"bytes */{size}"})
    return web.Response(
        status=206,
        body=data[first:end],
        content_type=PART_TYPE,
        headers={**_PART_HEADERS, "Content-Range": f"bytes {first}-{end - 1}/{size}"},
    )


class LlHlsHandler:
    def __init__(self, store: HlsStore) -> None:
        self.store = store

    async def __call__(self, request: web.Request, rel: str) -> web.StreamResponse | None:
        """The in-memory answer for `rel` (the path under hls_path), or None to fall through to the disk."""
        live = self.store.playlists.get(rel)
        if live is not None and live.text:
            return await self._playlist(request, rel)
        ref = self.store.files.get(rel)
        if ref is not None and ref.index == WHOLE_SEGMENT:
            # A recent segment: from its parts while the disk may lag behind (the file worker renames it).
            whole = ref.live.segment(ref.msn)
            if whole is None:
                return None
            return _media(request, whole)
        if ref is not None:
            data = ref.live.parts.get((ref.msn, ref.index))
            if data is None and await ref.live.wait(ref.msn, ref.index, HOLD_TARGETS * ref.live.target):
                data = ref.live.parts.get((ref.msn, ref.index))
            if data is None:
                raise web.HTTPNotFound(text=f"part {rel} is gone or never came\n", headers=CORS)
            return _media(request, data)
        init = self.store.inits.get(rel)
        if init is not None:
            return _media(request, init[1])
        return None

    async def _playlist(self, request: web.Request, rel: str) -> web.StreamResponse:
        live = self.store.playlists[rel]
        msn = _int(request, "_HLS_msn")
        part = _int(request, "_HLS_part")
        if part is not None and msn is None:
            raise web.HTTPBadRequest(text="_HLS_part without _HLS_msn\n", headers=CORS)
        if msn is not None:
            if msn > live.msn + MSN_AHEAD:
                raise web.HTTPBadRequest(
                    text=f"_HLS_msn={msn} is more than {MSN_AHEAD} segments past {live.msn} in {rel}\n",
                    headers=CORS,
                )
            key_part = WHOLE_SEGMENT if part is None else part
            if not await live.wait(msn, key_part, HOLD_TARGETS * live.target) and live.publishing:
                raise web.HTTPServiceUnavailable(
                    text=f"{rel}: segment {msn} part {part} did not come within {HOLD_TARGETS:g} target durations\n",
                    headers=CORS,
                )
            live = self.store.playlists.get(rel, live)
        body = live.body
        if live.delta_body is not None and request.query.get("_HLS_skip") in ("YES", "v2"):
            body = live.delta_body
        return web.Response(body=body, content_type=PLAYLIST_TYPE, headers=_PLAYLIST_HEADERS)
