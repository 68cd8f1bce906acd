"""Admission for HLS players: `security`, `refer`, `signed_url` and `on_play` on playlist requests.

HLS has no connection to admit: a player is a series of playlist and segment
requests. The playlist request is its "play" (a signed HLS URL is a signed
playlist URL, and its reloads repeat the query), so each `.m3u8` request goes
through the same access gate as an RTMP or HTTP-FLV play, protocol "hls".
A verdict is remembered per address, stream and query for a while, so a player
reloading every target duration does not call the hook server each time (an
`on_play` per player per `ADMITTED_S`, not per reload). Segments are not checked:
they are reached through a playlist, as with SRS.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from tidecast.live.admission import Gate, JoinRequest, Refusal
from tidecast.live.names import check_target
from tidecast.net.http_play import refusal_response, split_stream_path

if TYPE_CHECKING:
    from tidecast.live.hub import Hub

ADMITTED_S = 30.0  # an admitted player's reloads skip the checks this long
REFUSED_S = 2.0  # a refusal is repeated without asking again this long (a reload storm cannot flood hooks)
MAX_VERDICTS = 20_000

Key = tuple[str, str, str, str, str]  # ip, vhost, app, stream, query


class HlsAdmission:
    def __init__(self, hub: Hub, gate: Gate) -> None:
        self.hub = hub
        self.gate = gate
        self._verdicts: dict[Key, tuple[float, Refusal | None]] = {}

    async def __call__(self, request: web.Request) -> web.HTTPException | None:
        """None to serve the playlist, or the 403/400 to answer instead."""
        host = request.host.split(":")[0]
        parts = split_stream_path(request.path, ".m3u8", host, request.query.get("vhost", ""))
        if parts is None:
            return None  # not a stream's playlist (a variant list in a directory of its own, say)
        settings = self.hub.config.vhost(parts[0])
        vhost, app, stream = settings.name, parts[1], parts[2]
        if check_target(vhost, app, stream) is not None:
            return None  # not a name a stream can have: the file lookup answers (404)
        ip = request.remote or ""
        key = (ip, vhost, app, stream, request.query_string)
        now = time.monotonic()
        known = self._verdicts.get(key)
        if known is not None and known[0] > now:
            return refusal_response(known[1]) if known[1] is not None else None
        join = JoinRequest(
            action="play",
            client_id=f"hls-{ip}",
            ip=ip,
            vhost=vhost,
            app=app,
            stream=stream,
            param=f"?{request.query_string}" if request.query_string else "",
            tc_url=f"http://{request.host}/{app}",
            page_url=request.headers.get("Referer", ""),
            protocol="hls",
            stream_id="",
            server_id=self.hub.server_id,
        )
        verdict = await self.gate.check(join)
        refusal = verdict if isinstance(verdict, Refusal) else None  # access control never redirects
        if refusal is not None:
            self.hub.refusals += 1
        if len(self._verdicts) >= MAX_VERDICTS:
            self._forget(now)
        self._verdicts[key] = (now + (REFUSED_S if refusal is not None else ADMITTED_S), refusal)
        return refusal_response(refusal) if refusal is not None else None

    def _forget(self, now: float) -> None:
        expired = [k for k, (until, _) in self._verdicts.items() if until <= now]
        for k in expired:
            del self._verdicts[k]
        if len(self._verdicts) >= MAX_VERDICTS:  # all still fresh: the oldest half goes
            for k in list(self._verdicts)[: MAX_VERDICTS // 2]:
                del self._verdicts[k]

    def forget_all(self) -> None:
        """A reload may change the rules: every player is checked again at its next reload."""
        self._verdicts.clear()
