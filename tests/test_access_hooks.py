"""The HTTP hook caller against a real aiohttp hook server on 127.0.0.1 (HTTP and HTTPS)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from testkit.helpers import free_port

from tidecast.access._contract import JoinRequest
from tidecast.access.hooks import HookCaller, HookGate, HookObserver, dvr_body, hls_body, hls_notify_url, judge
from tidecast.config import HttpHooks


def join(action: str = "play", **kw: str) -> JoinRequest:
    fields = {
        "action": action,
        "client_id": "7x2k9q1m",
        "ip": "127.0.0.1",
        "vhost": "__defaultVhost__",
        "app": "live",
        "stream": "" if action == "connect" else "cam1",
        "param": "?token=good",
        "tc_url": "rtmp://127.0.0.1:1935/live",
        "page_url": "http://www.example.com/live.html",
        "protocol": "rtmp",
        "stream_id": "" if action == "connect" else "vid-3",
        "server_id": "vid-srv1",
    }
    fields.update(kw)
    return JoinRequest(**fields)


class HookServer:
    """A hook server whose paths answer as named; it records every request and the peak concurrency."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body or query)
        self.active = 0
        self.peak = 0
        self.port = 0
        self.scheme = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def calls(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            raw = await request.read()
            body: Any = json.loads(raw) if raw else request.query_string
            self.requests.append((request.method, request.path, body))
            return await self.answer(request)
        finally:
            self.active -= 1

    async def answer(self, request: web.Request) -> web.StreamResponse:
        name = request.path.strip("/").split("/")[0]
        if name == "split":  # {"code": 0} in two chunks, 50 ms apart
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b'{"co')
            await asyncio.sleep(0.05)
            await resp.write(b'de": 0}')
            await resp.write_eof()
            return resp
        if name.startswith("sleep"):  # /sleepMS: answer 0 after MS milliseconds
            await asyncio.sleep(int(name[5:]) / 1000)
            return web.Response(text="0")
        fixed = {
            "zero": (200, "0"),
            "zero-nl": (200, "0\n"),
            "created": (201, "0"),
            "code0": (200, '{"code": 0, "data": "x"}'),
            "code1": (200, '{"code": 1}'),
            "code-str": (200, '{"code": "0"}'),
            "code-bool": (200, '{"code": false}'),
            "one": (200, "1"),
            "e500": (500, "0"),
            "e403": (403, '{"code": 0}'),
            "empty": (200, ""),
            "html": (200, "<html>nope</html>"),
        }
        status, text = fixed.get(name, (404, "no such hook"))
        return web.Response(status=status, text=text)


@asynccontextmanager
async def hook_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[HookServer]:
    server = HookServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server.port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", server.port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    server.scheme = "https" if ssl_context else "http"
    try:
        yield server
    finally:
        await runner.cleanup()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def hooks(**kw: Any) -> HttpHooks:
    return HttpHooks(enabled=True, **kw)


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("path", "admitted", "code", "detail"),
    [
        ("/zero", True, 0, "HTTP 200 0"),
        ("/zero-nl", True, 0, "HTTP 200 0"),
        ("/created", True, 0, "HTTP 201 0"),
        ("/code0", True, 0, "HTTP 200 code 0"),
        ("/split", True, 0, "HTTP 200 code 0"),
        ("/code1", False, 3064, "HTTP 200 code 1"),
        ("/code-str", False, 3064, "HTTP 200 with no integer code"),
        ("/code-bool", False, 3064, "HTTP 200 with no integer code"),
        ("/one", False, 3008, 'HTTP 200 answering "1", not 0'),
        ("/e500", False, 4005, "HTTP 500"),
        ("/e403", False, 4005, "HTTP 403"),
        ("/empty", False, 3008, "HTTP 200 with an empty body"),
        ("/html", False, 3008, "HTTP 200 with a body that is not JSON"),
        ("/missing", False, 4005, "HTTP 404"),
    ],
)
def test_verdicts_as_srs_judges_them(path: str, admitted: bool, code: int, detail: str) -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller()
            gate = HookGate(caller, hooks(on_play=[server.url(path)]))
            refusal = await gate.check(join())
            await caller.close()
        if admitted:
            assert refusal is None
        else:
            assert refusal is not None and refusal.code == code
            assert refusal.reason == f"refused by the on_play hook ({detail})"
        assert len(server.calls(path)) == 1

    run(test)


def test_judge_alone() -> None:
    assert judge(200, b" 0 ").verdict == "ok" and judge(200, b"0.0").verdict == "refused"
    assert judge(200, b'{"code": 0.0}').verdict == "refused" and judge(200, b"[0]").verdict == "refused"
    assert judge(204, b"").detail == "HTTP 204"


def test_refused_port_and_timeout_refuse_in_time(caplog: pytest.LogCaptureFixture) -> None:
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}/hook?key=secret123"

    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller()
            with caplog.at_level(logging.WARNING, logger="tidecast.hooks"):
                started = time.monotonic()
                refused = await HookGate(caller, hooks(on_publish=[dead])).check(join("publish"))
                assert time.monotonic() - started < 1.0
                assert refused is not None and refused.code == 1018
                assert refused.reason == (
                    "refused by the on_publish hook (no answer (cannot connect: Connection refused))"
                )

                started = time.monotonic()
                slow = hooks(on_publish=[server.url("/sleep3000")], timeout=0.4)
                refused = await HookGate(caller, slow).check(join("publish", client_id="slowclnt"))
                took = time.monotonic() - started
                assert 0.35 < took < 1.0, took
                assert refused is not None and refused.code == 1011
                assert refused.reason == "refused by the on_publish hook (no answer within 0.4 s)"
            await caller.close()
        lines = [r.getMessage() for r in caplog.records if r.name == "tidecast.hooks"]
        assert lines == [
            f"hook on_publish refused client 7x2k9q1m (ip 127.0.0.1, vhost __defaultVhost__, live/cam1): "
            f"http://127.0.0.1:{dead_port}/hook?key=… no answer (cannot connect: Connection refused)",
            f"hook on_publish refused client slowclnt (ip 127.0.0.1, vhost __defaultVhost__, live/cam1): "
            f"{server.url('/sleep3000')} no answer within 0.4 s",
        ]
        assert "secret123" not in caplog.text and "token=good" not in caplog.text

    run(test)


def test_several_urls_are_called_in_turn_and_the_first_refusal_wins() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller()
            urls = [server.url("/zero/a"), server.url("/code0/b"), server.url("/zero/c")]
            assert await HookGate(caller, hooks(on_connect=urls)).check(join("connect")) is None
            assert [path for _, path, _ in server.requests] == ["/zero/a", "/code0/b", "/zero/c"]
            server.requests.clear()
            urls = [server.url("/zero/a"), server.url("/code1/b"), server.url("/zero/c")]
            refused = await HookGate(caller, hooks(on_connect=urls)).check(join("connect"))
            assert refused is not None and refused.reason == "refused by the on_connect hook (HTTP 200 code 1)"
            assert [path for _, path, _ in server.requests] == ["/zero/a", "/code1/b"]  # c never asked
            await caller.close()

    run(test)


def test_https_hook_urls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def test() -> None:
        async with hook_server(server_tls) as server:
            trusting = ssl.create_default_context(cafile=str(cert))
            caller = HookCaller(ssl_context=trusting)
            assert server.url("/zero").startswith("https://")
            assert await HookGate(caller, hooks(on_play=[server.url("/zero")])).check(join()) is None
            await caller.close()
            # The system's CAs do not know this certificate: refused, and the reason says why.
            caller = HookCaller()
            refused = await HookGate(caller, hooks(on_play=[server.url("/zero")])).check(join())
            await caller.close()
            assert refused is not None and refused.reason == (
                "refused by the on_play hook (no answer (TLS certificate not trusted))"
            )
            assert len(server.calls("/zero")) == 1

    run(test)


# ---------------------------------------------------------------- bounds


def test_bounded_concurrency_admits_a_burst_and_counts_it() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller(concurrency=8, queue_limit=1000)
            gate = HookGate(caller, hooks(on_play=[server.url("/sleep20")]))
            started = time.monotonic()
            results = await asyncio.gather(*(gate.check(join(client_id=f"c{i:07d}")) for i in range(200)))
            took = time.monotonic() - started
            assert results == [None] * 200
            assert len(server.calls("/sleep20")) == 200
            assert server.peak <= 8, server.peak
            assert server.peak >= 4  # it did run in parallel
            assert took >= 200 / 8 * 0.02 * 0.9  # ... and no more than 8 at once
            assert caller.waiting == 0 and caller.in_flight == 0

            class Wrap(Collector):
                def collect(self):  # type: ignore[no-untyped-def]
                    return caller.metrics()

            registry = CollectorRegistry()
            registry.register(Wrap())
            text = generate_latest(registry).decode()
            assert 'tidecast_hook_calls_total{hook="on_play",verdict="ok"} 200.0' in text
            assert 'tidecast_hook_latency_seconds_count{hook="on_play"} 200.0' in text
            assert 'tidecast_hook_latency_seconds_bucket{hook="on_play",le="0.01"} 0.0' in text
            assert 'tidecast_hook_latency_seconds_bucket{hook="on_play",le="+Inf"} 200.0' in text
            await caller.close()

    run(test)


def test_an_overfull_queue_refuses_at_once() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller(concurrency=1, queue_limit=2)
            gate = HookGate(caller, hooks(on_play=[server.url("/sleep300")]))
            tasks = [asyncio.create_task(gate.check(join(client_id=f"c{i:07d}"))) for i in range(6)]
            await asyncio.sleep(0.05)
            done = [t for t in tasks if t.done()]
            assert len(done) == 3  # 1 in flight, 2 waiting, 3 refused without waiting
            for t in done:
                refusal = t.result()
                assert refusal is not None and refusal.reason == (
                    "refused by the on_play hook (too many hook calls waiting (2))"
                )
            assert await asyncio.gather(*tasks[:3]) == [None, None, None]
            assert caller.calls[("on_play", "overload")] == 3 and caller.calls[("on_play", "ok")] == 3
            await caller.close()

    run(test)


def test_a_slow_hook_for_one_client_does_not_delay_another() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller(concurrency=4)
            slow = asyncio.create_task(HookGate(caller, hooks(on_play=[server.url("/sleep3000")])).check(join()))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert await HookGate(caller, hooks(on_play=[server.url("/zero")])).check(join()) is None
            assert time.monotonic() - started < 0.3
            assert not slow.done()
            slow.cancel()
            await caller.close()

    run(test)


def test_notifications_never_block_and_drop_when_their_queue_is_full() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller(notify_workers=1, notify_queue_limit=3)
            observer = HookObserver(caller, hooks(on_stop=[server.url("/sleep500")], on_play=[server.url("/zero")]))
            started = time.monotonic()
            for i in range(10):
                observer.on_event("stop", join(client_id=f"c{i:07d}"))
            assert time.monotonic() - started < 0.05
            # A dead on_stop server holds no admission slot.
            assert await HookGate(caller, observer.settings).check(join()) is None
            assert time.monotonic() - started < 0.3
            await asyncio.sleep(0.05)
            # Three queued (the worker had not run yet), seven dropped and counted.
            assert caller.calls[("on_stop", "dropped")] == 7
            await caller.close(drain=5.0)
            assert len(server.calls("/sleep500")) == 3
            assert caller.calls[("on_stop", "ok")] == 3

    run(test)


def test_disabled_or_empty_hooks_call_nothing() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller()
            off = HttpHooks(enabled=False, on_play=[server.url("/code1")], on_stop=[server.url("/zero")])
            assert await HookGate(caller, off).check(join()) is None
            assert await HookGate(caller, hooks(on_play=[server.url("/code1")])).check(join("publish")) is None
            HookObserver(caller, off).on_event("stop", join())
            HookObserver(caller, hooks()).on_event("stop", join())
            HookObserver(caller, hooks(on_stop=[server.url("/zero")])).on_event("flush", join())
            await caller.close(drain=1.0)
            assert server.requests == []

    run(test)


# ---------------------------------------------------------------- bodies


COMMON = {"server_id": "vid-srv1", "service_id": "svc9", "client_id": "7x2k9q1m", "ip": "127.0.0.1"}
STREAM = {
    **COMMON,
    "vhost": "__defaultVhost__",
    "app": "live",
    "tcUrl": "rtmp://127.0.0.1:1935/live",
    "stream": "cam1",
    "param": "?token=good",
    "stream_url": "/live/cam1",
    "stream_id": "vid-3",
}


def test_bodies_carry_srs_fields_for_each_hook() -> None:
    async def test() -> None:
        async with hook_server() as server:
            caller = HookCaller()
            urls = {name: [server.url(f"/zero/{name}")] for name in ("on_connect", "on_publish", "on_play")}
            notify = {name: [server.url(f"/zero/{name}")] for name in ("on_close", "on_unpublish", "on_stop")}
            notify["on_dvr"] = [server.url("/zero/on_dvr")]
            notify["on_hls"] = [server.url("/zero/on_hls")]
            notify["on_hls_notify"] = [server.url("/zero/[server_id]/[app]/[stream]/[ts_url][param]")]
            settings = hooks(**urls, **notify)
            gate, observer = HookGate(caller, settings, "svc9"), HookObserver(caller, settings, "svc9", cwd="/srv")
            for action in ("connect", "publish", "play"):
                assert await gate.check(join(action)) is None
            observer.on_event("unpublish", join("publish"))
            observer.on_event("stop", join())
            observer.on_close(join("connect"), send_bytes=1234, recv_bytes=567)
            observer.on_dvr(join("publish"), "./objs/nginx/html/live/cam1.1700000000000.flv")
            observer.on_hls(join("publish"), "./html/live/cam1-7.ts", "cam1-7.ts", "./html/live/cam1.m3u8",
                            "live/cam1.m3u8", 7, 2.0416)  # fmt: skip
            observer.on_hls_notify(join("publish"), "live/cam1-7.ts")
            await caller.close(drain=5.0)

        def one(name: str) -> dict[str, Any]:
            (body,) = server.calls(f"/zero/{name}")
            assert isinstance(body, dict)
            return body

        connect = {**COMMON, "vhost": "__defaultVhost__", "app": "live", "stream": "", "param": "?token=good",
                   "tcUrl": "rtmp://127.0.0.1:1935/live", "pageUrl": "http://www.example.com/live.html"}  # fmt: skip
        assert one("on_connect") == {**connect, "action": "on_connect"}
        assert one("on_publish") == {**STREAM, "action": "on_publish"}
        assert one("on_play") == {**STREAM, "action": "on_play", "pageUrl": "http://www.example.com/live.html"}
        assert one("on_unpublish") == {**STREAM, "action": "on_unpublish"}
        assert one("on_stop") == {**STREAM, "action": "on_stop"}
        assert one("on_close") == {**COMMON, "action": "on_close", "vhost": "__defaultVhost__", "app": "live",
                                   "send_bytes": 1234, "recv_bytes": 567}  # fmt: skip
        assert one("on_dvr") == {**STREAM, "action": "on_dvr", "cwd": "/srv",
                                 "file": "./objs/nginx/html/live/cam1.1700000000000.flv"}  # fmt: skip
        hls = {"cwd": "/srv", "duration": 2.042, "file": "./html/live/cam1-7.ts", "url": "live/cam1-7.ts",
               "m3u8": "./html/live/cam1.m3u8", "m3u8_url": "live/cam1.m3u8", "seq_no": 7}  # fmt: skip
        assert one("on_hls") == {**STREAM, "action": "on_hls", **hls}
        gets = [(method, path, query) for method, path, query in server.requests if method == "GET"]
        assert gets == [("GET", "/zero/vid-srv1/live/cam1/live/cam1-7.ts", "token=good")]

    run(test)


def test_body_builders_alone() -> None:
    named = join(vhost="video.test.com", stream_id="")
    body = dvr_body(named, "a.flv", cwd="/x")
    assert body["stream_url"] == "video.test.com/live/cam1" and "stream_id" not in body
    assert hls_body(named, "f.ts", "http://cdn/f.ts", "m.m3u8", "live/m.m3u8", 1, 1.0)["url"] == "http://cdn/f.ts"
    assert hls_notify_url("http://n/[app]/[ts_url]", named, "http://cdn/f.ts") == "http://cdn/f.ts"


# ---------------------------------------------------------------- AccessControl


def test_access_control_runs_each_vhosts_checks_and_survives_reloads(tmp_path: Path) -> None:
    from tidecast.access import AccessControl
    from tidecast.config import ConfigError, parse_text

    async def test() -> None:
        async with hook_server() as server:
            config = parse_text(
                "listen 1935;\n"
                f"vhost hooked {{ http_hooks {{ enabled on; on_play {server.url('/code1')}; "
                f"on_stop {server.url('/zero/stop')}; }} }}\n"
                "vhost __defaultVhost__ { security { enabled on; deny play 10.0.0.0/8; } }\n"
            )
            access = AccessControl(config, service_id="svc")
            refused = await access.check(join(vhost="hooked"))
            assert refused is not None and refused.reason == "refused by the on_play hook (HTTP 200 code 1)"
            assert await access.check(join(vhost="unknown.example.com")) is None  # default vhost: not denied
            denied = await access.check(join(vhost="unknown.example.com", ip="10.1.1.1"))
            assert denied is not None and denied.code == 1053
            access.on_event("stop", join(vhost="hooked"))
            access.on_event("stop", join(vhost="__defaultVhost__"))  # no hooks there: nothing sent
            assert access.hooks("hooked") is not None and access.hooks("__defaultVhost__") is None

            # A reload: new settings, the same caller (session, bounds, counts).
            text = f"listen 1935;\nvhost hooked {{ http_hooks {{ enabled on; on_play {server.url('/zero')}; }} }}"
            reloaded = AccessControl(parse_text(text), caller=access.caller)
            assert await reloaded.check(join(vhost="hooked")) is None
            assert access.caller.calls[("on_play", "refused")] == 1 and access.caller.calls[("on_play", "ok")] == 1
            with pytest.raises(ConfigError, match="vhost s signed_url: the environment variable NOPE"):
                AccessControl(parse_text("listen 1;vhost s{signed_url{enabled on;secret_env NOPE;}}"), env={})
            await access.caller.close(drain=2.0)
            assert server.calls("/zero/stop")[0]["action"] == "on_stop"
            assert server.calls("/zero/stop")[0]["service_id"] == "svc"
            assert len(server.calls("/zero/stop")) == 1

    run(test)
