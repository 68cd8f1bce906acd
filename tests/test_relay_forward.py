"""forward: in-process ForwardSinks fed from a real clip push to a real tidecast, which plays and restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from testkit.helpers import TidecastProcess, ffprobe_json, free_port, http_json

from tidecast.codec.flv import iter_flv_tags
from tidecast.config import parse_text
from tidecast.relay.forward import ForwardManager, ForwardSink, is_sequence_header
from tidecast.relay.vars import StreamInfo

Start = Callable[..., TidecastProcess]


class ClipFeeder:
    """Plays a clip's FLV tags in real time, looped, into the attached sinks, as a live stream would."""

    def __init__(self, clip: Path) -> None:
        self.tags = list(iter_flv_tags(clip.read_bytes()))
        self.metadata = next((p for t, _, p in self.tags if t == 18), None)
        self.headers = [(t, ts, p) for t, ts, p in self.tags if t in (8, 9) and is_sequence_header(t, p)]
        self.media = [(t, ts, p) for t, ts, p in self.tags if t in (8, 9) and not is_sequence_header(t, p)]
        self.duration = self.media[-1][1] + 40
        self.sinks: list[ForwardSink] = []

    def attach(self, sink: ForwardSink) -> None:
        # What the lead's attach does: the current metadata and sequence headers first.
        self.sinks.append(sink)
        if self.metadata is not None:
            sink.on_metadata(self.metadata)
        for type_id, ts, payload in self.headers:
            sink.on_message(type_id, ts, payload)

    def detach(self, sink: ForwardSink) -> None:
        self.sinks.remove(sink)

    async def run(self) -> None:
        began = time.monotonic()
        loop = 0
        while True:
            for type_id, ts, payload in self.media:
                at = loop * self.duration + ts
                delay = began + at / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for sink in list(self.sinks):
                    sink.on_message(type_id, at, payload)
            loop += 1


def live(server: TidecastProcess, name: str) -> bool:
    try:
        streams = server.api_json("/api/v1/streams?count=100")["streams"]
    except OSError:
        return False
    return any(s["name"] == name and s["publish"]["active"] and s["video"] is not None for s in streams)


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def video_size(info: dict[str, Any]) -> tuple[str, int, int]:
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return video["codec_name"], video["width"], video["height"]


def test_a_forward_plays_on_the_destination_and_resumes_after_it_restarts(tidecast: Start, clip: Path) -> None:
    b = tidecast("b")
    config = parse_text(
        f"listen 1935;\nvhost __defaultVhost__ {{ forward {{ enabled on; destination {b.rtmp[7:]}; }} }}"
    )
    manager = ForwardManager(config)
    feeder = ClipFeeder(clip)
    info = StreamInfo("__defaultVhost__", "live", "livestream", 1935, param="?token=abc", host="127.0.0.1")
    found: dict[str, Any] = {}

    async def main() -> None:
        feeding = asyncio.get_running_loop().create_task(feeder.run())
        try:
            await scenario()
        finally:
            feeding.cancel()
            await manager.close()

    async def scenario() -> None:
        manager.on_publish(info, feeder.attach, feeder.detach)
        [sink] = feeder.sinks
        sink.backoff = (0.2, 0.5, 1.0)
        await until(lambda: live(b, "livestream"), 10, "the forward to be live on B")
        found["first"] = await asyncio.to_thread(ffprobe_json, f"{b.rtmp}/live/livestream")
        found["describe"] = manager.describe()
        found["metrics"] = {(m.name, s.labels.get("state", "")): s.value for m in manager.metrics() for s in m.samples}
        assert b.proc is not None
        b.proc.kill()  # kill -9: no goodbye on the RTMP connection
        b.proc.wait()
        await until(lambda: sink.state in ("backoff", "connecting"), 10, "the forward to notice")
        found["down_state"] = sink.state
        await asyncio.sleep(1.5)  # the destination stays down a while: the forward keeps retrying
        await asyncio.to_thread(b.start)
        await until(lambda: live(b, "livestream"), 15, "the forward to resume on the restarted B")
        found["second"] = await asyncio.to_thread(ffprobe_json, f"{b.rtmp}/live/livestream")
        found["reconnects"] = sink.reconnects
        manager.on_unpublish(*info.key)
        found["stopped"] = sink.state
        await until(lambda: not live(b, "livestream"), 10, "the forward to end on B")

    asyncio.run(main())
    assert video_size(found["first"]) == ("h264", 320, 240)
    assert video_size(found["second"]) == ("h264", 320, 240)
    [d] = found["describe"]
    assert d["state"] == "forwarding" and d["url"] == f"{b.rtmp}/live/livestream?token=abc"
    assert found["metrics"][("tidecast_forward_destinations", "forwarding")] == 1
    assert found["down_state"] in ("backoff", "connecting")
    assert found["reconnects"] == 1
    assert found["stopped"] == "stopped"


def test_the_backend_names_destinations_per_stream(tidecast: Start, clip: Path) -> None:
    b = tidecast("b")
    port = free_port()
    calls: list[dict[str, Any]] = []

    async def forward_api(request: web.Request) -> web.Response:
        calls.append(await request.json())
        urls = [f"{b.rtmp}/other/from_backend"]
        return web.json_response({"code": 0, "data": {"urls": urls}})

    config = parse_text(
        "listen 1935;\nvhost __defaultVhost__ { forward { enabled on; "
        f"backend http://127.0.0.1:{port}/api/v1/forward; }} }}"
    )
    manager = ForwardManager(config, server_id="vid-test")
    feeder = ClipFeeder(clip)
    info = StreamInfo("__defaultVhost__", "live", "livestream", 1935, param="?k=v", tc_url="rtmp://127.0.0.1/live")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/v1/forward", forward_api)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        feeding = asyncio.get_running_loop().create_task(feeder.run())
        try:
            manager.on_publish(info, feeder.attach, feeder.detach)
            await until(lambda: live(b, "from_backend"), 10, "the backend's destination to be live")
        finally:
            feeding.cancel()
            await manager.close()
            await runner.cleanup()

    asyncio.run(main())
    assert len(calls) == 1
    assert calls[0] == {
        "action": "on_forward",
        "server_id": "vid-test",
        "client_id": "",
        "ip": "",
        "vhost": "__defaultVhost__",
        "app": "live",
        "tcUrl": "rtmp://127.0.0.1/live",
        "stream": "livestream",
        "param": "?k=v",
    }


def test_reload_adds_and_removes_destinations_of_live_streams() -> None:
    down = free_port()  # nothing listens there: the sink keeps retrying

    def config(forward: str) -> Any:
        return parse_text(f"listen 1935;\nvhost __defaultVhost__ {{ {forward} }}")

    manager = ForwardManager(config("forward { enabled off; }"))
    attached: list[ForwardSink] = []
    detached: list[ForwardSink] = []
    info = StreamInfo("__defaultVhost__", "live", "s", 1935)
    seen: dict[str, Any] = {}

    async def main() -> None:
        try:
            manager.on_publish(info, attached.append, detached.append)
            seen["none"] = list(attached)
            manager.reload(config(f"forward {{ enabled on; destination 127.0.0.1:{down}; }}"))
            [sink] = attached
            await asyncio.sleep(0.5)
            seen["state"], seen["error"] = sink.state, sink.error
            # While the destination is away only the current GOP is kept.
            sink.on_message(9, 0, b"\x17\x00\x00\x00\x00")  # AVC sequence header
            sink.on_message(9, 0, b"\x17\x01\x00\x00\x00key")
            sink.on_message(9, 40, b"\x27\x01\x00\x00\x00inter")
            sink.on_message(9, 80, b"\x17\x01\x00\x00\x00key2")
            seen["gop"] = [ts for _, ts, _ in sink.gop], sink.video_sh is not None, sink.dropped
            manager.reload(config("forward { enabled off; }"))
            seen["detached"] = detached == [sink] and sink.state == "stopped"
        finally:
            await manager.close()

    asyncio.run(main())
    assert seen["none"] == []
    assert seen["state"] in ("backoff", "connecting"), seen
    assert "connect call failed" in seen["error"].lower(), seen["error"]
    assert seen["gop"] == ([80], True, 2)
    assert seen["detached"]


def test_the_relays_route_lists_forwards_and_processes() -> None:
    from tidecast.relay import Relays
    from tidecast.relay.api import relay_routes

    relays = Relays(parse_text("listen 1935;\nvhost __defaultVhost__ { exec { enabled on; publish sleep 30; } }"))
    port = free_port()

    def reply(request: web.Request, code: int = 0, **fields: Any) -> web.Response:
        return web.json_response({"code": code, **fields})

    async def main() -> Any:
        app = web.Application()
        app.add_routes(relay_routes(lambda: relays, reply))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            relays.on_publish(StreamInfo("__defaultVhost__", "live", "s", 1935), lambda s: None, lambda s: None)
            return await asyncio.to_thread(http_json, f"http://127.0.0.1:{port}/api/v1/relays")
        finally:
            await relays.close()
            await runner.cleanup()

    body = asyncio.run(main())
    assert body["code"] == 0 and body["forwards"] == []
    [proc] = body["processes"]
    assert (proc["kind"], proc["name"], proc["command"], proc["stream"]) == (
        "exec",
        "__defaultVhost__/live/s publish#1",
        "sleep 30",
        "s",
    )
    assert proc["state"] in ("starting", "running") and proc["restarts"] == 0
