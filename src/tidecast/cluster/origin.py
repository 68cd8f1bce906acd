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
from urllib.parse import urlencode

import aiohttp

from tidecast.cluster.dns import DnsError, resolve_all
from tidecast.live.stream import LiveStream
from tidecast.net.urls import StreamTarget, split_origin

if TYPE_CHECKING:
    from tidecast.config import Vhost
    from tidecast.server import Server

log = logging.getLogger("tidecast.cluster")

QUERY_TIMEOUT = 2.0
ANSWER_TTL = 1.0  # answers (found or not) are reused this long
DNS_TTL = 5.0

Answer = dict[str, Any]


class OriginCluster:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._answers: dict[tuple[str, str, str], tuple[float, Answer | None]] = {}
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.queries = 0
        self.query_failures = 0
        server.play_gates.append(self.play_gate)
        server.http_redirects.append(self.http_redirect)
        server.publish_gates.append(self.publish_gate)
        server.close_hooks.append(self.close)
        server.clusters_query = self.clusters_query
        server.cluster_view = self.cluster_view

    # ------------------------------------------------------------ answering coworkers

    def clusters_query(self, query: Any) -> dict[str, Any]:
        """`/api/v1/clusters`: where is this stream? Here, or `origin: null`."""
        vhost = str(query.get("vhost", "") or "__defaultVhost__")
        app = str(query.get("app", ""))
        name = str(query.get("stream", ""))
        ip = str(query.get("ip", ""))
        coworker = str(query.get("coworker", ""))
        data: dict[str, Any] = {"query": {"ip": ip, "vhost": vhost, "app": app, "stream": name}, "origin": None}
        settings = self.server.config.vhost(vhost)
        stream = self.server.hub.find(settings.name, app, name) if settings is not None else None
        if stream is None or stream.publisher is None or stream.publisher.type == "edge-ingest":
            return data
        asked_host = split_origin(coworker, 1985)[0] if coworker else ip
        advertised = self.server.advertised_ip(asked_host)
        config = self.server.config
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
        config = self.server.config
        port = config.http_api.listen.port
        hosts = {self.server.advertised_ip(), config.http_api.listen.host, "127.0.0.1", "localhost"}
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
        own = f"{self.server.advertised_ip()}:{self.server.config.http_api.listen.port}"
        coworkers: list[str] = []
        for settings in self.server.config.vhosts.values():
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
        settings = self.server.config.vhost(vhost)
        if settings is None or settings.cluster.mode == "remote" or not settings.cluster.origin_cluster:
            return None
        return settings

    # ------------------------------------------------------------ gates

    async def play_gate(self, vhost: str, target: StreamTarget, asked_host: str) -> dict[str, Any] | None:
        settings = self._enabled(vhost)
        if settings is None:
            return None
        stream = self.server.hub.find(settings.name, target.app, target.stream)
        if stream is not None and stream.publisher is not None:
            return None
        origin = await self.find(settings, target.app, target.stream, asked_host)
        if origin is None:
            return None  # nobody has it: wait here like a plain origin
        base = f"rtmp://{origin['ip']}:{origin['port']}/{target.app}"
        query = f"?vhost={origin.get('vhost') or settings.name}"
        return {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": "RTMP 302 Redirect",
            "ex": {"code": 302, "redirect": base, "redirect2": f"{base}/{target.stream}{query}"},
        }

    async def http_redirect(self, vhost: str, app: str, name: str, request: Any) -> str | None:
        settings = self._enabled(vhost)
        if settings is None:
            return None
        asked_host = request.host.rsplit(":", 1)[0] if request is not None else ""
        origin = await self.find(settings, app, name, asked_host)
        if origin is None:
            return None
        http = origin.get("http")
        if not isinstance(http, str):
            port = request.url.port if request is not None and request.url.port else 8080
            http = f"{origin['ip']}:{port}"
        return f"http://{http}/{app}/{name}.flv"

    async def publish_gate(self, stream: LiveStream, target: StreamTarget) -> str | None:
        settings = self._enabled(stream.vhost)
        if settings is None:
            return None
        origin = await self.find(settings, target.app, target.stream, "", fresh=True)
        if origin is None:
            return None
        return (
            f"stream {stream.vhost}{stream.url} is already published on origin "
            f"{origin['ip']}:{origin['port']} (coworker {origin.get('coworker')}); stop it there first"
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
