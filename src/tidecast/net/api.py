"""The SRS-compatible HTTP API (/api/v1/...): same paths, same JSON shapes.

Errors keep SRS's envelope: HTTP 200 with a non-zero `code`.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import threading
import time
from typing import Any

from aiohttp import web

from tidecast import __version__
from tidecast.compiled import compiled_modules
from tidecast.live.client import Client
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream
from tidecast.net.node import ClusterDirectory, NodeStatus
from tidecast.sysinfo import loadavg, mem_total_kbyte, meminfo_kbyte, rss_kbyte, system_cpu_times

ERROR_STREAM_NOT_FOUND = 2048
ERROR_CLIENT_NOT_FOUND = 2049
ERROR_VHOST_NOT_FOUND = 1062
ERROR_RAW_DISABLED = 1061
ERROR_NOT_SUPPORTED = 1000
JSONP_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,63}")


def _version_tuple() -> tuple[int, int, int]:
    parts = ([*__version__.split("."), "0", "0", "0"])[:3]
    return int(parts[0]), int(parts[1]), int(parts[2])


class Api:
    def __init__(self, server: NodeStatus, cluster: ClusterDirectory | None = None) -> None:
        self.server = server
        self.hub = server.hub
        self.cluster_directory = cluster
        self.server_id = f"vid-{os.getpid():x}{int(server.started) % 100000:05d}"
        self.service_id = os.urandom(4).hex()

    # ------------------------------------------------------------ envelope

    def reply(self, request: web.Request, code: int = 0, **fields: Any) -> web.Response:
        body: dict[str, Any] = {
            "code": code,
            "server": self.server_id,
            "service": self.service_id,
            "pid": str(os.getpid()),
        }
        body.update(fields)
        text = json.dumps(body, ensure_ascii=False)
        callback = request.query.get("callback")
        if callback:
            if JSONP_CALLBACK.fullmatch(callback) is None:
                raise web.HTTPBadRequest(text="callback must be a JavaScript identifier (A-Z a-z 0-9 _ $ .)\n")
            return web.Response(text=f"{callback}({text})", content_type="text/javascript")
        return web.Response(text=text, content_type="application/json")

    def routes(self) -> list[web.RouteDef]:
        """Each path also with a trailing slash, which SRS answers the same way."""
        routes: list[web.RouteDef] = []
        extra = [route for build in self.server.api_routes for route in build(self.reply)]
        for route in [*self._routes(), *extra]:
            routes.append(route)
            if not route.path.endswith(("/", "}")):
                routes.append(web.route(route.method, route.path + "/", route.handler))
        return routes

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/versions", self.versions),
            web.get("/api/v1/summaries", self.summaries),
            web.get("/api/v1/vhosts", self.vhosts),
            web.get("/api/v1/vhosts/{id}", self.vhosts),
            web.get("/api/v1/streams", self.streams),
            web.get("/api/v1/streams/{id}", self.streams),
            web.get("/api/v1/clients", self.clients),
            web.get("/api/v1/clients/{id}", self.clients),
            web.delete("/api/v1/clients/{id}", self.kick),
            web.get("/api/v1/raw", self.raw),
            web.route("*", "/api/v1/clusters", self.clusters),
            web.get("/api/v1/cluster", self.cluster),
            web.get("/api/v1/rusages", self.rusages),
            web.get("/api/v1/self_proc_stats", self.self_proc_stats),
            web.get("/api/v1/system_proc_stats", self.system_proc_stats),
            web.get("/api/v1/meminfos", self.meminfos),
            web.get("/api/v1/features", self.features),
            web.get("/api/v1/requests", self.requests),
            web.get("/api/v1", self.index),
            web.get("/api", self.index),
        ]

    # ------------------------------------------------------------ process and system figures (SRS's shapes)

    async def rusages(self, request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        data: dict[str, Any] = {"ok": True, "sample_time": int(time.time() * 1000)}
        for name in ("ru_utime", "ru_stime"):
            data[name] = getattr(usage, name)
        for name in (
            "ru_maxrss",
            "ru_ixrss",
            "ru_idrss",
            "ru_isrss",
            "ru_minflt",
            "ru_majflt",
            "ru_nswap",
            "ru_inblock",
            "ru_oublock",
            "ru_msgsnd",
            "ru_msgrcv",
            "ru_nsignals",
            "ru_nvcsw",
            "ru_nivcsw",
        ):
            data[name] = int(getattr(usage, name))
        return self.reply(request, data=data)

    async def self_proc_stats(self, request: web.Request) -> web.Response:
        times = os.times()
        data: dict[str, Any] = {
            "ok": True,
            "sample_time": int(time.time() * 1000),
            "percent": round(self.server.cpu.process_percent / 100.0, 4),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "utime": int(times.user * 100),
            "stime": int(times.system * 100),
            "cutime": int(times.children_user * 100),
            "cstime": int(times.children_system * 100),
            "num_threads": threading.active_count(),
            "rss": rss_kbyte() * 1024,
        }
        return self.reply(request, data=data)

    async def system_proc_stats(self, request: web.Request) -> web.Response:
        data: dict[str, Any] = {"ok": True, "sample_time": int(time.time() * 1000), **system_cpu_times()}
        data["percent"] = round(self.server.cpu.system_percent / 100.0, 4)
        return self.reply(request, data=data)

    async def meminfos(self, request: web.Request) -> web.Response:
        info = meminfo_kbyte()
        total = info.get("MemTotal", 0) or 1
        free = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
        data = {
            "ok": True,
            "sample_time": int(time.time() * 1000),
            "percent_ram": round((total - free) / total, 4),
            "percent_swap": 0.0,
            "MemActive": info.get("Active", 0),
            "RealInUse": total - free,
            "NotInUse": free,
            "MemTotal": total,
            "MemFree": info.get("MemFree", 0),
            "Buffers": info.get("Buffers", 0),
            "Cached": info.get("Cached", 0),
            "SwapTotal": info.get("SwapTotal", 0),
            "SwapFree": info.get("SwapFree", 0),
        }
        return self.reply(request, data=data)

    async def features(self, request: web.Request) -> web.Response:
        data = {
            "options": "tidecast",
            "options2": "",
            "build": "python",
            "build2": "",
            "features": {
                "ssl": True,
                "hls": True,
                "hds": False,
                "callback": True,
                "api": True,
                "httpd": True,
                "dvr": True,
                "transcode": True,
                "ingest": True,
                "stat": True,
                "caster": False,
                "complex_send": True,
                "tcp_nodelay": True,
                "so_sendbuf": False,
                "mr": True,
            },
        }
        return self.reply(request, data=data)

    async def requests(self, request: web.Request) -> web.Response:
        data = {
            "uri": str(request.url),
            "path": request.path,
            "METHOD": request.method,
            "headers": [{k: v} for k, v in request.headers.items() if k.lower() != "authorization"],
        }
        return self.reply(request, data=data)

    async def index(self, request: web.Request) -> web.Response:
        urls = {
            "versions": "the version of tidecast",
            "summaries": "the summary (pid, argv, pwd, cpu, mem) of tidecast",
            "vhosts": "all vhosts",
            "streams": "all streams",
            "clients": "all clients",
            "raw": "raw api for reload",
            "clusters": "origin cluster query",
            "cluster": "tidecast: the streams of every origin in the cluster",
        }
        return self.reply(request, urls=urls)

    async def versions(self, request: web.Request) -> web.Response:
        major, minor, revision = _version_tuple()
        data = {"major": major, "minor": minor, "revision": revision, "version": __version__}
        return self.reply(request, data=data)

    async def summaries(self, request: web.Request) -> web.Response:
        server = self.server
        rss = rss_kbyte()
        total = mem_total_kbyte() or 1
        load1, load5, load15 = loadavg()
        recv, send = server.hub.total_bytes()
        sampler = server.cpu
        data = {
            "ok": True,
            "now_ms": int(time.time() * 1000),
            "self": {
                "version": __version__,
                "compiled": bool(compiled_modules()),  # tidecast: the mypyc build of the hot path
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "argv": " ".join(sys.argv),
                "cwd": os.getcwd(),
                "mem_kbyte": rss,
                "mem_percent": round(rss / total, 4),
                "cpu_percent": round(sampler.process_percent / 100.0, 4),
                "srs_uptime": int(time.time() - server.started),
            },
            "system": {
                "cpu_percent": round(sampler.system_percent / 100.0, 4),
                "disk_read_KBps": 0,
                "disk_write_KBps": 0,
                "disk_busy_percent": 0,
                "mem_ram_kbyte": total,
                "mem_ram_percent": round(rss / total, 4),
                "mem_swap_kbyte": 0,
                "mem_swap_percent": 0,
                "cpus": os.cpu_count() or 1,
                "cpus_online": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
                "uptime": time.monotonic(),
                "ilde_time": 0,
                "load_1m": load1,
                "load_5m": load5,
                "load_15m": load15,
                "net_sample_time": int(time.time() * 1000),
                "net_recv_bytes": 0,
                "net_send_bytes": 0,
                "net_recvi_bytes": 0,
                "net_sendi_bytes": 0,
                "srs_sample_time": int(time.time() * 1000),
                "srs_recv_bytes": recv,
                "srs_send_bytes": send,
                "conn_sys": server.connection_count,
                "conn_sys_et": server.connection_count,
                "conn_sys_tw": 0,
                "conn_sys_udp": 0,
                "conn_srs": server.connection_count,
            },
        }
        return self.reply(request, data=data)

    # ------------------------------------------------------------ vhosts

    def _vhost_json(self, name: str) -> dict[str, Any]:
        server = self.server
        settings = server.hub.config.vhosts[name]
        streams = [s for s in server.hub.streams.values() if s.vhost == name]
        clients = [c for c in server.hub.clients.values() if c.vhost == name]
        recv_kbps, send_kbps = server.rates.kbps(f"vhost:{name}")
        return {
            "id": f"vhost-{name}",
            "name": name,
            "enabled": settings.enabled,
            "clients": len(clients),
            "streams": len(streams),
            "send_bytes": sum(s.send_bytes for s in streams),
            "recv_bytes": sum(s.recv_bytes for s in streams),
            "kbps": {"recv_30s": recv_kbps, "send_30s": send_kbps},
            "hls": {"enabled": settings.hls.enabled, "fragment": settings.hls.hls_fragment},
        }

    async def vhosts(self, request: web.Request) -> web.Response:
        vid = request.match_info.get("id")
        names = list(self.server.hub.config.vhosts)
        if vid:
            for name in names:
                if vid in (f"vhost-{name}", name):
                    return self.reply(request, vhost=self._vhost_json(name))
            return self.reply(request, code=ERROR_VHOST_NOT_FOUND)
        return self.reply(request, vhosts=[self._vhost_json(n) for n in names])

    # ------------------------------------------------------------ streams

    def stream_json(self, stream: LiveStream) -> dict[str, Any]:
        recv_kbps, send_kbps = self.server.rates.kbps(stream.id)
        video, audio = stream.describe_codecs()
        doc: dict[str, Any] = {
            "id": stream.id,
            "name": stream.name,
            "vhost": f"vhost-{stream.vhost}",
            "app": stream.app,
            "tcUrl": stream.publisher.tc_url if stream.publisher else "",
            "url": stream.url,
            "live_ms": int(time.time() * 1000),
            "clients": len(stream.players) + (1 if stream.publisher else 0),
            "frames": stream.frames,
            "send_bytes": stream.send_bytes,
            "recv_bytes": stream.recv_bytes,
            "kbps": {"recv_30s": recv_kbps, "send_30s": send_kbps},
            "publish": {"active": stream.active, "cid": stream.publisher.id if stream.publisher else None},
            "video": video,
            "audio": audio,
            "dropped_frames": stream.dropped_frames,
        }
        if stream.upstream is not None:
            doc["upstream"] = stream.upstream.describe()
        for details in self.server.stream_details:
            doc.update(details(stream.vhost, stream.app, stream.name))
        return doc

    async def streams(self, request: web.Request) -> web.Response:
        sid = request.match_info.get("id")
        streams = list(self.server.hub.streams.values())
        if sid:
            for stream in streams:
                if stream.id == sid:
                    return self.reply(request, stream=self.stream_json(stream))
            return self.reply(request, code=ERROR_STREAM_NOT_FOUND)
        start, count = paging(request)
        return self.reply(request, streams=[self.stream_json(s) for s in streams[start : start + count]])

    # ------------------------------------------------------------ clients

    def client_json(self, client: Client) -> dict[str, Any]:
        stream = client.stream
        return {
            "id": client.id,
            "vhost": f"vhost-{client.vhost}",
            "stream": stream.id if stream else "",
            "ip": client.ip,
            "pageUrl": client.page_url,
            "swfUrl": client.swf_url,
            "tcUrl": client.tc_url,
            "url": stream.url if stream else "",
            "name": stream.name if stream else "",
            "type": client.type,
            "publish": client.is_publisher,
            "alive": round(time.monotonic() - client.created, 3),
            "send_bytes": client.send_bytes,
            "recv_bytes": client.recv_bytes,
            "kbps": {"recv_30s": 0, "send_30s": 0},
            "dropped_frames": client.dropped if isinstance(client, Player) else 0,
        }

    async def clients(self, request: web.Request) -> web.Response:
        cid = request.match_info.get("id")
        clients = self.server.hub.clients
        if cid:
            client = clients.get(cid)
            if client is None:
                return self.reply(request, code=ERROR_CLIENT_NOT_FOUND)
            return self.reply(request, client=self.client_json(client))
        start, count = paging(request)
        listed = list(clients.values())[start : start + count]
        return self.reply(request, clients=[self.client_json(c) for c in listed])

    async def kick(self, request: web.Request) -> web.Response:
        client = self.server.hub.clients.get(request.match_info["id"])
        if client is None:
            return self.reply(request, code=ERROR_CLIENT_NOT_FOUND)
        client.kick()
        return self.reply(request)

    # ------------------------------------------------------------ raw and clusters

    async def raw(self, request: web.Request) -> web.Response:
        raw_api = self.server.hub.config.http_api.raw_api
        rpc = request.query.get("rpc", "")
        if not raw_api.enabled:
            return self.reply(request, code=ERROR_RAW_DISABLED)
        if rpc == "reload":
            if not raw_api.allow_reload:
                return self.reply(request, code=ERROR_RAW_DISABLED)
            ok = await self.server.reload("api")
            return self.reply(request) if ok else self.reply(request, code=1023)
        if rpc == "reload-fetch":
            return self.reply(request, data=dict(self.server.reload_state))
        return self.reply(request, code=ERROR_NOT_SUPPORTED)

    async def cluster(self, request: web.Request) -> web.Response:
        local = [self.stream_json(s) for s in self.server.hub.streams.values()]
        if self.cluster_directory is None:
            return self.reply(request, nodes=[{"self": True, "ok": True, "streams": len(local)}], streams=local)
        return self.reply(request, **await self.cluster_directory.cluster_view(local))

    async def clusters(self, request: web.Request) -> web.Response:
        if self.cluster_directory is None:
            return self.reply(request, data={"query": dict(request.query), "origin": None})
        data = self.cluster_directory.clusters_query(request.query)
        return self.reply(request, data=data)


def paging(request: web.Request) -> tuple[int, int]:
    try:
        start = max(0, int(request.query.get("start", "0")))
    except ValueError:
        start = 0
    try:
        count = int(request.query.get("count", "10"))
    except ValueError:
        count = 10
    return start, max(10, count)
