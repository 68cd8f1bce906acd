"""Origin cluster (`cluster { origin_cluster on; coworkers …; }`), SRS's wire protocol.

A play for a stream this origin does not have asks the coworkers' HTTP APIs
(`/api/v1/clusters`) where it is, in parallel and briefly cached, and answers
with an RTMP 302 (or an HTTP 302 for HTTP-FLV). Coworkers come from the static
`coworkers` list and from `coworkers_dns NAME:PORT` (tidecast's extension):
every address the name resolves to, re-resolved as it goes, so a StatefulSet
scales without a config edit. A stream live on a coworker cannot be published
here too (SRS #2789).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from tidecast.cluster.dns import DnsError, resolve_all
from tidecast.live.admission import ERROR_SYSTEM_STREAM_BUSY, JoinRequest, Redirect, Refusal
from tidecast.live.hub import Hub
from tidecast.live.limits import DEFAULT_VHOST
from tidecast.net.urls import advertised_ip, split_origin

if TYPE_CHECKING:
    from tidecast.config import Config, Vhost

log = logging.getLogger("tidecast.cluster")

QUERY_TIMEOUT = 2.0
ANSWER_TTL = 1.0  # answers (found or not) are reused this long
DNS_TTL = 5.0
MAX_CACHED_ANSWERS = 4096

Answer = dict[str, Any]


class OriginCluster:
    """The origin cluster's gate (redirect plays, refuse a second publisher) and its API answers."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._answers: dict[tuple[str, str, str], tuple[float, Answer | None]] = {}
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.queries = 0
        self.query_failures = 0

    @property
    def config(self) -> Config:
        return self.hub.config

    # ------------------------------------------------------------ answering coworkers

    def clusters_query(self, query: Any) -> dict[str, Any]:
        """`/api/v1/clusters`: where is this stream? Here, or `origin: null`."""
        vhost = str(query.get("vhost", "") or DEFAULT_VHOST)
        app = str(query.get("app", ""))
        name = str(query.get("stream", ""))
        if name.endswith(".flv"):
            name = name[:-4]  # an SRS edge asks for NAME.flv when its first viewer is HTTP-FLV
        ip = str(query.get("ip", ""))
        coworker = str(query.get("coworker", ""))
        data: dict[str, Any] = {"query": {"ip": ip, "vhost": vhost, "app": app, "stream": name}, "origin": None}
        settings = self.config.vhost(vhost)
        stream = self.hub.find(settings.name, app, name) if settings is not None else None
        if stream is None or stream.publisher is None or stream.publisher.type == "edge-ingest":
            return data
        asked_host = split_origin(coworker, 1985)[0] if coworker else ip
        advertised = advertised_ip(self.config, asked_host)
        config = self.config
        port = config.listen[0].port if config.listen else 1935
        api = f"{advertised}:{config.http_api.listen.port}"
        data["origin"] = {
            "ip": advertised,
            "port": port,
            "vhost": settings.name if settings is not None else vhost,
            "api": api,
            "routers": [api],
            # tidecast's addition, ignored by SRS: where HTTP-FLV plays go.
            "http": f"{advertised}:{config.http_server.listen.port}",
        }
        return data

    # ------------------------------------------------------------ asking coworkers

    async def coworkers(self, settings: Vhost) -> list[str]:
        cluster = settings.cluster
        found = list(cluster.coworkers)
        dns_name = getattr(cluster, "coworkers_dns", None)
        if dns_name:
            host, port = split_origin(dns_name, 1985)
            for address in await self._resolve(host):
                wrapped = f"[{address}]" if ":" in address else address
                entry = f"{wrapped}:{port}"
                if entry not in found:
                    found.append(entry)
        return found

    async def _resolve(self, host: str) -> list[str]:
        now = time.monotonic()
        cached = self._dns.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = await resolve_all(host)
        except (DnsError, OSError) as exc:
            log.warning("cluster: coworkers_dns %s does not resolve: %s", host, exc)
            addresses = cached[1] if cached is not None else []
        self._dns[host] = (now + DNS_TTL, addresses)
        return addresses

    def _own_apis(self) -> set[str]:
        config = self.config
        port = config.http_api.listen.port
        hosts = {advertised_ip(self.config), config.http_api.listen.host, "127.0.0.1", "localhost"}
        return {f"{h}:{port}" for h in hosts}

    async def find(self, settings: Vhost, app: str, name: str, asked_host: str, fresh: bool = False) -> Answer | None:
        key = (settings.name, app, name)
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        own = self._own_apis()
        coworkers = [c for c in await self.coworkers(settings) if c not in own]
        answer: Answer | None = None
        if coworkers:
            tasks = [asyncio.ensure_future(self._ask(c, settings.name, app, name, asked_host)) for c in coworkers]
            try:
                for next_done in asyncio.as_completed(tasks):
                    result = await next_done
                    if result is not None:
                        answer = result
                        break
            finally:
                for task in tasks:
                    task.cancel()
        if len(self._answers) >= MAX_CACHED_ANSWERS:
            # Distinct misses (a scan of names) must not grow the cache for ever.
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
        self._answers[key] = (now + ANSWER_TTL, answer)
        return answer

    async def _ask(self, coworker: str, vhost: str, app: str, name: str, asked_host: str) -> Answer | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT))
        params = urlencode({"vhost": vhost, "ip": asked_host, "app": app, "stream": name, "coworker": coworker})
        url = f"http://{coworker}/api/v1/clusters?{params}"
        self.queries += 1
        try:
            async with self._session.post(url) as resp:
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.query_failures += 1
            log.debug("cluster: coworker %s did not answer: %s", coworker, exc or type(exc).__name__)
            return None
        if not isinstance(doc, dict) or doc.get("code") != 0:
            return None
        origin = (doc.get("data") or {}).get("origin")
        if (
            not isinstance(origin, dict)
            or not isinstance(origin.get("ip"), str)
            or not isinstance(origin.get("port"), int)
        ):
            return None
        origin["coworker"] = coworker
        return origin

    # ------------------------------------------------------------ the cluster-wide view

    async def cluster_view(self, local_streams: list[dict[str, Any]]) -> dict[str, Any]:
        """Every origin's streams in one answer (tidecast's `/api/v1/cluster`; SRS #2089, #2179).

        The coworkers of every origin-cluster vhost are asked in parallel; a node
        that does not answer is listed with its error rather than failing the view.
        """
        own = f"{advertised_ip(self.config)}:{self.config.http_api.listen.port}"
        coworkers: list[str] = []
        for settings in self.config.vhosts.values():
            if settings.cluster.origin_cluster and settings.cluster.mode != "remote":
                for coworker in await self.coworkers(settings):
                    if coworker not in coworkers and coworker not in self._own_apis():
                        coworkers.append(coworker)
        nodes: list[dict[str, Any]] = [{"api": own, "self": True, "ok": True, "streams": len(local_streams)}]
        streams = [{**s, "node": own} for s in local_streams]
        results = await asyncio.gather(*(self._fetch_streams(c) for c in coworkers))
        for coworker, (ok, error, found) in zip(coworkers, results, strict=True):
            nodes.append({"api": coworker, "self": False, "ok": ok, "error": error, "streams": len(found)})
            streams.extend({**s, "node": coworker} for s in found)
        return {"nodes": nodes, "streams": streams}

    async def _fetch_streams(self, coworker: str) -> tuple[bool, str, list[dict[str, Any]]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT))
        try:
            async with self._session.get(f"http://{coworker}/api/v1/streams?count=10000") as resp:
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return False, str(exc) or type(exc).__name__, []
        found = doc.get("streams") if isinstance(doc, dict) else None
        if not isinstance(found, list):
            return False, f"unexpected answer (code {doc.get('code') if isinstance(doc, dict) else '?'})", []
        return True, "", [s for s in found if isinstance(s, dict)]

    def _enabled(self, vhost: str) -> Vhost | None:
        settings = self.config.vhost(vhost)
        if settings is None or settings.cluster.mode == "remote" or not settings.cluster.origin_cluster:
            return None
        return settings

    # ------------------------------------------------------------ gates

    async def check(self, request: JoinRequest) -> Refusal | Redirect | None:
        if request.action == "connect":
            return None
        settings = self._enabled(request.vhost)
        if settings is None:
            return None
        if request.action == "play":
            stream = self.hub.find(settings.name, request.app, request.stream)
            if stream is not None and stream.publisher is not None:
                return None
            origin = await self.find(settings, request.app, request.stream, _host_of(request.tc_url))
            if origin is None:
                return None  # nobody has it: wait here like a plain origin
            http = origin.get("http")
            return Redirect(
                str(origin["ip"]),
                int(origin["port"]),
                str(origin.get("vhost") or settings.name),
                http if isinstance(http, str) else "",
            )
        origin = await self.find(settings, request.app, request.stream, "", fresh=True)
        if origin is None:
            return None
        return Refusal(
            ERROR_SYSTEM_STREAM_BUSY,
            f"stream {request.vhost}/{request.app}/{request.stream} is already published on origin "
            f"{origin['ip']}:{origin['port']} (coworker {origin.get('coworker')}); stop it there first",
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
