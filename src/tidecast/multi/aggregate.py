"""The public API of a multi-worker server: answers that describe the whole server.

Every worker serves the public API port (SO_REUSEPORT), so whichever worker a
request lands on asks every worker's private API (itself included) and merges:
streams once each, with the players of every worker; clients as a union;
totals summed; a kick or a reload reaches the worker (or all workers) it must.
The relays between workers are the server's own plumbing and are left out of
every count. Paths not listed here are answered by the worker that got them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from tidecast.multi.relay import RELAY_TYPE
from tidecast.multi.role import TOKEN_HEADER, Sibling, WorkerRole
from tidecast.net.api import JSONP_CALLBACK, paging

FETCH_TIMEOUT_S = 3.0
ERROR_CLIENT_NOT_FOUND = 2049
ERROR_STREAM_NOT_FOUND = 2048
ERROR_VHOST_NOT_FOUND = 1062
ERROR_WORKER_DOWN = 1029  # reported when a reload could not reach every worker
_ALL = "100000"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Answer = tuple[Sibling, dict[str, Any] | None]


# ---------------------------------------------------------------- merging (pure)


def merge_streams(answers: list[Answer]) -> tuple[list[dict[str, Any]], dict[tuple[int, str], str]]:
    """One entry per stream, its publisher's worker's entry as the base; and (worker, local id) -> merged id."""
    groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    for sibling, doc in answers:
        for entry in (doc or {}).get("streams") or []:
            if isinstance(entry, dict):
                key = (str(entry.get("vhost")), str(entry.get("app")), str(entry.get("name")))
                groups.setdefault(key, []).append((sibling.index, entry))
    merged: list[dict[str, Any]] = []
    ids: dict[tuple[int, str], str] = {}
    for entries in groups.values():

        def info(entry: dict[str, Any]) -> dict[str, Any]:
            found = entry.get("worker")
            return found if isinstance(found, dict) else {}

        def is_origin(entry: dict[str, Any]) -> bool:
            return bool((entry.get("publish") or {}).get("active")) and not info(entry).get("pulled")

        base_index, base = next(((i, e) for i, e in entries if is_origin(e)), entries[0])
        doc = {k: v for k, v in base.items() if k != "worker"}
        players = sum(int(info(e).get("players", 0)) for _, e in entries)
        pulled = [e for _, e in entries if info(e).get("pulled")]
        doc["clients"] = players + (1 if is_origin(base) else 0)
        relayed = sum(int(e.get("recv_bytes", 0)) for e in pulled)
        doc["send_bytes"] = sum(int(e.get("send_bytes", 0)) for _, e in entries) - relayed
        kbps = dict(base.get("kbps") or {})
        kbps["send_30s"] = sum(int((e.get("kbps") or {}).get("send_30s", 0)) for _, e in entries) - sum(
            int((e.get("kbps") or {}).get("recv_30s", 0)) for e in pulled
        )
        doc["kbps"] = kbps
        doc["dropped_frames"] = sum(int(e.get("dropped_frames", 0)) for _, e in entries)
        doc["workers"] = [
            {"worker": i, "players": int(info(e).get("players", 0)), "pulled": bool(info(e).get("pulled")),
             "publisher": i == base_index and is_origin(base)}
            for i, e in entries
        ]  # fmt: skip
        for i, e in entries:
            ids[(i, str(e.get("id")))] = str(doc.get("id"))
        merged.append(doc)
    return merged, ids


def merge_clients(answers: list[Answer], ids: dict[tuple[int, str], str]) -> list[dict[str, Any]]:
    clients: list[dict[str, Any]] = []
    for sibling, doc in answers:
        for entry in (doc or {}).get("clients") or []:
            if not isinstance(entry, dict) or entry.get("type") == RELAY_TYPE:
                continue
            entry = dict(entry)
            entry["stream"] = ids.get((sibling.index, str(entry.get("stream"))), entry.get("stream"))
            entry["worker"] = sibling.index
            clients.append(entry)
    return clients


_SUMMED_SELF = ("mem_kbyte", "mem_percent", "cpu_percent")
_SUMMED_SYSTEM = ("srs_recv_bytes", "srs_send_bytes", "conn_sys", "conn_sys_et", "conn_srs")


def merge_summaries(answers: list[Answer], own: int, supervisor_pid: int) -> dict[str, Any]:
    datas = [(s, (doc or {}).get("data")) for s, doc in answers]
    usable = [(s, d) for s, d in datas if isinstance(d, dict)]
    base = next((d for s, d in usable if s.index == own), usable[0][1] if usable else {})
    data: dict[str, Any] = json.loads(json.dumps(base))
    me, system = data.setdefault("self", {}), data.setdefault("system", {})
    for name in _SUMMED_SELF:
        me[name] = round(sum(float((d.get("self") or {}).get(name, 0)) for _, d in usable), 4)
    me["mem_kbyte"] = int(me["mem_kbyte"])
    for name in _SUMMED_SYSTEM:
        system[name] = sum(int((d.get("system") or {}).get(name, 0)) for _, d in usable)
    me["pid"] = supervisor_pid  # the pid in the pid file: the process signals go to
    data["workers"] = [
        {"worker": s.index, "ok": isinstance(d, dict), "pid": (d or {}).get("self", {}).get("pid") if d else None}
        for s, d in datas
    ]
    return data


def merge_vhosts(vhosts: list[Answer], streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order: list[str] = []
    by_name: dict[str, dict[str, Any]] = {}
    for _, doc in vhosts:
        for entry in (doc or {}).get("vhosts") or []:
            if isinstance(entry, dict) and entry.get("name") not in by_name:
                by_name[str(entry.get("name"))] = dict(entry)
                order.append(str(entry.get("name")))
    for name, entry in by_name.items():
        mine = [s for s in streams if s.get("vhost") == f"vhost-{name}"]
        entry["streams"] = len(mine)
        entry["clients"] = sum(int(s.get("clients", 0)) for s in mine)
        entry["send_bytes"] = sum(int(s.get("send_bytes", 0)) for s in mine)
        entry["recv_bytes"] = sum(int(s.get("recv_bytes", 0)) for s in mine)
        entry["kbps"] = {
            "recv_30s": sum(int((s.get("kbps") or {}).get("recv_30s", 0)) for s in mine),
            "send_30s": sum(int((s.get("kbps") or {}).get("send_30s", 0)) for s in mine),
        }
    return [by_name[n] for n in order]


# Prometheus text: families whose series are summed, except these.
_FIRST_ONLY = {"srs_build_info", "srs_node_uname_info", "srs_node_uname"}
_MIN = {"tidecast_ready"}
# The worst of the workers' stalls is the server's: a player of either worker waited that long.
_MAX = {"tidecast_draining", "tidecast_gc_pause_max_seconds", "tidecast_loop_tick_late_max_seconds"}
_PUBLISHER_ONLY = {"tidecast_stream_receive_bytes", "tidecast_stream_frames", "tidecast_stream_ingest_kbps"}
_HIDDEN = {"tidecast_worker_pulled", "tidecast_worker_relay_players"}


def _samples(text: str) -> list[tuple[str, str, str, float]]:
    """(family, series name, labels text, value) for each sample line."""
    out: list[tuple[str, str, str, float]] = []
    family = ""
    for line in text.splitlines():
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                family = parts[2]
            continue
        if not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        name, brace, labels = series.partition("{")
        try:
            out.append((family, name, brace + labels, float(value)))
        except ValueError:
            continue
    return out


def merge_metrics(texts: list[tuple[Sibling, str | None]]) -> str:
    """Sum the workers' series; a relayed stream's copies and the relays themselves are not counted twice."""
    headers: dict[str, list[str]] = {}
    values: dict[str, dict[tuple[str, str], float]] = {}
    for sibling, text in texts:
        if text is None:
            continue
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                family = line.split(" ", 3)[2]
                lines = headers.setdefault(family, [])
                if line not in lines:
                    lines.append(line)
        samples = _samples(text)
        pulled = {labels for _, name, labels, _ in samples if name == "tidecast_worker_pulled"}
        relays = {labels: v for _, name, labels, v in samples if name == "tidecast_worker_relay_players"}
        first = sibling is texts[0][0]
        for family, name, labels, value in samples:
            if family in _HIDDEN:
                continue
            if family in _FIRST_ONLY and not first:
                continue
            if name in _PUBLISHER_ONLY and labels in pulled:
                continue
            if name == "tidecast_stream_players":
                value -= relays.get(labels, 0.0)
            elif name == "srs_streams":
                value -= len(pulled)
            elif name == "srs_clients":
                value -= sum(relays.values())
            family_values = values.setdefault(family, {})
            key = (name, labels)
            if key not in family_values:
                family_values[key] = value
            elif family in _MIN:
                family_values[key] = min(family_values[key], value)
            elif family in _MAX:
                family_values[key] = max(family_values[key], value)
            else:
                family_values[key] += value
    out: list[str] = []
    for family, lines in headers.items():
        if family in _HIDDEN:
            continue
        out.extend(lines)
        for (name, labels), value in values.get(family, {}).items():
            out.append(f"{name}{labels} {value!r}")
    up = ["# HELP tidecast_worker_up 1 for each worker that answered this scrape", "# TYPE tidecast_worker_up gauge"]
    for sibling, text in texts:
        up.append(f'tidecast_worker_up{{worker="{sibling.index}"}} {1.0 if text is not None else 0.0}')
    return "\n".join([*out, *up]) + "\n"


# ---------------------------------------------------------------- the middleware


class Aggregator:
    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S), headers={TOKEN_HEADER: self.role.token}
            )
        return self._session

    async def _one(self, sibling: Sibling, method: str, path: str, text: bool) -> Any:
        try:
            async with self.session().request(method, f"{sibling.api}{path}") as resp:
                if resp.status != 200:
                    return None
                return await resp.text() if text else await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None  # a worker being restarted: the answer covers the others

    async def fetch(self, path: str, method: str = "GET") -> list[Answer]:
        workers = self.role.workers
        docs = await asyncio.gather(*(self._one(s, method, path, False) for s in workers))
        return [(s, d if isinstance(d, dict) else None) for s, d in zip(workers, docs, strict=True)]

    async def fetch_text(self, path: str) -> list[tuple[Sibling, str | None]]:
        workers = self.role.workers
        texts = await asyncio.gather(*(self._one(s, "GET", path, True) for s in workers))
        return list(zip(workers, texts, strict=True))

    def reply(self, request: web.Request, answers: list[Answer], code: int = 0, **fields: Any) -> web.Response:
        own = next((d for s, d in answers if s.index == self.role.index and d), None)
        own = own or next((d for _, d in answers if d), {})
        body: dict[str, Any] = {"code": code}
        for name in ("server", "service", "pid"):
            if name in own:
                body[name] = own[name]
        body.update(fields)
        # A worker that did not answer in FETCH_TIMEOUT_S (saturated, stopped, being restarted) is left out
        # of the lists: say which, so a partial view is never taken for the whole server's.
        missing = [s.index for s, d in answers if d is None]
        if missing:
            body["workers_missing"] = missing
        text = json.dumps(body, ensure_ascii=False)
        callback = request.query.get("callback")
        if callback:
            if JSONP_CALLBACK.fullmatch(callback) is None:
                raise web.HTTPBadRequest(text="callback must be a JavaScript identifier (A-Z a-z 0-9 _ $ .)\n")
            return web.Response(text=f"{callback}({text})", content_type="text/javascript")
        return web.Response(text=text, content_type="application/json")

    async def _streams(self) -> tuple[list[Answer], list[dict[str, Any]], dict[tuple[int, str], str]]:
        answers = await self.fetch(f"/api/v1/streams?count={_ALL}")
        merged, ids = merge_streams(answers)
        return answers, merged, ids

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = path.split("/")
        method = request.method
        if path == "/metrics" and method == "GET":
            texts = await self.fetch_text("/metrics")
            return web.Response(text=merge_metrics(texts), content_type="text/plain", charset="utf-8")
        if len(parts) < 4 or parts[1:3] != ["api", "v1"]:
            return await handler(request)
        what, ident = parts[3], "/".join(parts[4:])
        if what == "streams" and method == "GET":
            answers, merged, _ = await self._streams()
            if ident:
                found = next((s for s in merged if s.get("id") == ident), None)
                if found is None:
                    return self.reply(request, answers, ERROR_STREAM_NOT_FOUND)
                return self.reply(request, answers, stream=found)
            start, count = paging(request)
            return self.reply(request, answers, streams=merged[start : start + count])
        if what == "clients" and ident and method in ("GET", "DELETE"):
            answers = await self.fetch(f"/api/v1/clients/{ident}", method)
            hit = next((d for _, d in answers if d and d.get("code") == 0), None)
            if hit is None:
                return self.reply(request, answers, ERROR_CLIENT_NOT_FOUND)
            return self.reply(request, answers, **({"client": hit["client"]} if method == "GET" else {}))
        if what == "clients" and method == "GET":
            _, _, ids = await self._streams()
            answers = await self.fetch(f"/api/v1/clients?count={_ALL}")
            start, count = paging(request)
            return self.reply(request, answers, clients=merge_clients(answers, ids)[start : start + count])
        if what == "summaries" and method == "GET":
            answers = await self.fetch("/api/v1/summaries")
            return self.reply(request, answers, data=merge_summaries(answers, self.role.index,
                                                                     self.role.supervisor_pid))  # fmt: skip
        if what == "vhosts" and method == "GET":
            answers = await self.fetch("/api/v1/vhosts")
            _, merged, _ = await self._streams()
            vhosts = merge_vhosts(answers, merged)
            if ident:
                found = next((v for v in vhosts if ident in (v.get("id"), v.get("name"))), None)
                if found is None:
                    return self.reply(request, answers, ERROR_VHOST_NOT_FOUND)
                return self.reply(request, answers, vhost=found)
            return self.reply(request, answers, vhosts=vhosts)
        if what == "raw" and request.query.get("rpc") == "reload":
            answers = await self.fetch(request.path_qs, method)
            failed = [(s, d) for s, d in answers if d is None or d.get("code") != 0]
            if not failed:
                return self.reply(request, answers)
            _, doc = failed[0]
            code = int(doc.get("code", ERROR_WORKER_DOWN)) if doc else ERROR_WORKER_DOWN
            return self.reply(request, answers, code, workers=[
                {"worker": s.index, "code": d.get("code") if d else None} for s, d in answers])  # fmt: skip
        if what == "clusters":
            answers = await self.fetch(request.path_qs, method)
            hit = next((d for _, d in answers if d and ((d.get("data") or {}).get("origin"))), None)
            hit = hit or next((d for s, d in answers if d and s.index == self.role.index), None)
            if hit is None:
                return await handler(request)
            return self.reply(request, answers, data=hit.get("data"))
        return await handler(request)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
