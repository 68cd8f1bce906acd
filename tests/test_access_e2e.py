"""Access control end to end: a real tidecast, real ffmpeg/ffprobe, a real hook server, through the hub's gates."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from testkit.attacks import publish_session
from testkit.helpers import Publisher, TidecastProcess, free_port, http_get, wait_for, wait_stream_live
from testkit.rtmpclient import RtmpTestClient

Factory = Callable[..., TidecastProcess]


class HookServer:
    """aiohttp on 127.0.0.1 in a thread: `?token=good` admits, anything else answers code 1."""

    def __init__(self, delay_for: str = "", delay: float = 0.0) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self.gets: list[str] = []  # path and query of each GET (on_hls_notify)
        self.delay_for, self.delay = delay_for, delay
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [b for b in list(self.bodies) if b.get("action") == action]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if self.delay_for and self.delay_for in body.get("param", ""):
            await asyncio.sleep(self.delay)
        if body["action"] in ("on_connect", "on_publish", "on_play"):
            return web.json_response({"code": 0 if "token=good" in body.get("param", "") else 1})
        return web.Response(text="0")

    async def _notify(self, request: web.Request) -> web.Response:
        self.gets.append(request.path_qs)
        return web.Response(text="ok")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/notify/{tail:.*}", self._notify)
        runner = self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> HookServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def hooks() -> Iterator[HookServer]:
    with HookServer(delay_for="token=slow", delay=3.0) as server:
        yield server


def hooked_vhost(url: str, timeout: float = 5.0) -> str:
    names = ("on_publish", "on_unpublish", "on_play", "on_stop")
    return (
        "http_remux { enabled on; }\n"
        f"http_hooks {{ enabled on; timeout {timeout:g}; " + " ".join(f"{n} {url};" for n in names) + " }"
    )


def publish_exits(clip: Path, url: str, timeout: float = 20.0) -> int:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-re", "-i", str(clip), "-t", "2", "-c", "copy", "-f", "flv", url],
        capture_output=True,
        timeout=timeout,
    )
    return out.returncode


def probe(url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-rw_timeout", "5000000", "-show_streams", "-of", "json", url],
        capture_output=True,
        timeout=30,
    )


def active_streams(srv: TidecastProcess) -> list[str]:
    return [s["name"] for s in srv.api_json("/api/v1/streams?count=100")["streams"] if s["publish"]["active"]]


def test_hooks_admit_good_tokens_and_refuse_bad_ones(tidecast: Factory, clip: Path, hooks: HookServer) -> None:
    srv = tidecast(vhost=hooked_vhost(hooks.url()))
    assert publish_exits(clip, f"{srv.rtmp}/live/cam1?token=bad") != 0
    assert "cam1" not in active_streams(srv)
    with Publisher(clip, f"{srv.rtmp}/live/cam1?token=good"):
        wait_stream_live(srv, "cam1")
        assert probe(f"{srv.rtmp}/live/cam1?token=bad").returncode != 0
        good = probe(f"{srv.rtmp}/live/cam1?token=good")
        assert good.returncode == 0 and json.loads(good.stdout)["streams"]
        status, body, _ = http_get(f"{srv.http}/live/cam1.flv?token=bad", timeout=5)
        assert status == 403 and not body.startswith(b"FLV")
        flv = probe(f"{srv.http}/live/cam1.flv?token=good")
        assert flv.returncode == 0 and json.loads(flv.stdout)["streams"]
    (publish,) = [b for b in hooks.actions("on_publish") if "good" in b["param"]]
    assert {"action", "client_id", "ip", "vhost", "app", "stream", "param", "stream_url", "server_id"} <= set(publish)
    assert publish["app"] == "live" and publish["stream"] == "cam1" and publish["param"] == "?token=good"
    assert publish["stream_url"] == "/live/cam1" and publish["ip"] == "127.0.0.1"
    wait_for(lambda: hooks.actions("on_unpublish"), what="on_unpublish")
    wait_for(lambda: len(hooks.actions("on_stop")) >= 2, what="on_stop for both players")
    stop = hooks.actions("on_stop")[0]
    play_ids = {b["client_id"] for b in hooks.actions("on_play") if "good" in b["param"]}
    assert stop["client_id"] in play_ids and stop["stream"] == "cam1"


def test_a_dead_hook_server_refuses_within_the_timeout(tidecast: Factory, clip: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    srv = tidecast(vhost=f"http_hooks {{ enabled on; timeout 1; on_publish {dead}; }}")
    started = time.monotonic()
    assert publish_exits(clip, f"{srv.rtmp}/live/dead?token=good") != 0
    assert time.monotonic() - started < 6
    assert "dead" not in active_streams(srv)
    assert "hook on_publish refused client" in srv.log() and dead in srv.log()


def test_a_slow_hook_for_one_player_does_not_delay_another(tidecast: Factory, clip: Path, hooks: HookServer) -> None:
    srv = tidecast(vhost=hooked_vhost(hooks.url()))
    with Publisher(clip, f"{srv.rtmp}/live/cam1?token=good"):
        wait_stream_live(srv, "cam1")
        slow = subprocess.Popen(
            [sys.executable, "-c", "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=10)",
             f"{srv.http}/live/cam1.flv?token=slow"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            started = time.monotonic()
            good = probe(f"{srv.http}/live/cam1.flv?token=good")
            assert good.returncode == 0 and time.monotonic() - started < 2.5
        finally:
            slow.kill()
            slow.wait()


def test_signed_urls_end_to_end(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    key = tmp_path / "sign.key"
    key.write_text("e2e-secret\n")
    srv = tidecast(vhost=f"http_remux {{ enabled on; }} signed_url {{ enabled on; secret_file {key}; play off; }}")

    def sign(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "tidecast", "sign", "--secret-file", str(key), "--app", "live", *args],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    assert publish_exits(clip, f"{srv.rtmp}/live/cam2") != 0
    other = sign("--publish", "--stream", "cam3", "--base", srv.rtmp).replace("/cam3?", "/cam2?")
    assert publish_exits(clip, other) != 0
    with Publisher(clip, sign("--publish", "--stream", "cam2", "--base", srv.rtmp)):
        wait_stream_live(srv, "cam2")
        assert probe(f"{srv.rtmp}/live/cam2").returncode == 0  # play off: no signature needed
    assert "e2e-secret" not in srv.log()


def test_security_rules_end_to_end(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost="security { enabled on; deny publish 127.0.0.1; allow play all; }")
    assert publish_exits(clip, f"{srv.rtmp}/live/denied") != 0
    assert "denied" not in active_streams(srv)


def test_a_reaped_dvr_file_calls_on_dvr_with_its_path(tidecast: Factory, clip: Path, hooks: HookServer) -> None:
    url = hooks.url()
    srv = tidecast(
        vhost=f"dvr {{ enabled on; dvr_path ./rec/[app]/[stream].flv; }}\n"
        f"http_hooks {{ enabled on; on_publish {url}; on_dvr {url}; }}"
    )
    code = publish_exits(clip, f"{srv.rtmp}/live/taped?token=good")
    assert code == 0
    wait_for(lambda: hooks.actions("on_dvr"), timeout=10, what="the on_dvr hook")
    body = hooks.actions("on_dvr")[0]
    assert body["app"] == "live" and body["stream"] == "taped" and body["param"] == "?token=good"
    assert body["file"].endswith("rec/live/taped.flv") and "cwd" in body
    assert (srv.workdir / "rec/live/taped.flv").stat().st_size > 10_000


def test_each_hls_segment_calls_on_hls_and_on_hls_notify(
    tidecast: Factory, clip: Path, hooks: HookServer, tmp_path: Path
) -> None:
    """After a segment is renamed into place and listed, as SRS tells its hooks (used to push segments
    to a CDN or object store)."""
    url = hooks.url()
    notify = hooks.url("/notify/[app]/[stream]/[ts_url][param]")
    hls_dir = tmp_path / "hls"
    srv = tidecast(
        vhost=f"hls {{ enabled on; hls_fragment 1; hls_window 10; hls_path {hls_dir}; }}\n"
        f"http_hooks {{ enabled on; on_publish {url}; on_hls {url}; on_hls_notify {notify}; }}"
    )
    with Publisher(clip, f"{srv.rtmp}/live/seg?token=good"):
        wait_stream_live(srv, "seg")
        wait_for(lambda: len(hooks.actions("on_hls")) >= 3, timeout=15, what="three on_hls hooks")
        wait_for(lambda: len(hooks.gets) >= 3, timeout=5, what="three on_hls_notify GETs")
    bodies = hooks.actions("on_hls")[:3]
    for body in bodies:
        assert body["app"] == "live" and body["stream"] == "seg" and body["param"] == "?token=good"
        assert body["m3u8"] == str(hls_dir / "live" / "seg.m3u8") and body["m3u8_url"] == "live/seg.m3u8"
        assert body["url"] == f"live/seg-{body['seq_no']}.ts" and body["file"] == str(hls_dir / body["url"])
        assert 0.5 <= body["duration"] <= 3.0 and "cwd" in body and body["client_id"]
    numbers = [b["seq_no"] for b in bodies]
    assert numbers == list(range(numbers[0], numbers[0] + 3)), numbers
    assert all((hls_dir / b["url"]).is_file() for b in bodies)
    assert hooks.gets[0] == f"/notify/live/seg/live/seg-{numbers[0]}.ts?token=good"


PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\ncam1-0.ts\n"


def hls_vhost(root: Path, rest: str) -> str:
    """A vhost with HLS on into `root`, and a playlist already there."""
    (root / "live").mkdir(parents=True, exist_ok=True)
    (root / "live" / "cam1.m3u8").write_text(PLAYLIST)
    return f"hls {{ enabled on; hls_path {root}; }} {rest}"


def test_hls_playlists_need_a_signed_url_when_plays_do(tidecast: Factory, tmp_path: Path) -> None:
    key = tmp_path / "sign.key"
    key.write_text("hls-secret\n")
    srv = tidecast(vhost=hls_vhost(tmp_path / "hls", f"signed_url {{ enabled on; secret_file {key}; publish off; }}"))
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "sign", "--secret-file", str(key), "--play", "--app", "live",
         "--stream", "cam1", "--suffix", ".m3u8", "--ttl", "600", "--base", srv.http],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    signed = out.stdout.strip()
    status, body, _ = http_get(f"{srv.http}/live/cam1.m3u8")
    assert status == 403 and b"sign" in body, body
    status, body, _ = http_get(signed.replace("/cam1.m3u8", "/cam2.m3u8"))
    assert status == 403, "a signature is for one stream"
    for _ in range(3):
        status, body, _ = http_get(signed)
        assert status == 200 and body.decode() == PLAYLIST
    assert http_get(f"{srv.http}/live/cam1-0.ts")[0] == 404, "segments are not checked (this one is absent)"


def test_hls_playlist_reloads_call_on_play_once_per_player(
    tidecast: Factory, hooks: HookServer, tmp_path: Path
) -> None:
    srv = tidecast(vhost=hls_vhost(tmp_path / "hls", hooked_vhost(hooks.url())))
    for _ in range(5):
        status, _, _ = http_get(f"{srv.http}/live/cam1.m3u8?token=good")
        assert status == 200
    status, body, _ = http_get(f"{srv.http}/live/cam1.m3u8?token=bad")
    assert status == 403, body
    plays = hooks.actions("on_play")
    assert [p["param"] for p in plays] == ["?token=good", "?token=bad"], plays
    assert plays[0]["stream"] == "cam1" and plays[0]["app"] == "live"


def test_media_sent_while_the_publish_hook_decides_is_all_kept(tidecast: Factory) -> None:
    """An encoder that pipelines: publish, then media at once, in three writes while on_publish is still
    out. What follows the publish in its read waits decoded, the later writes wait in the socket (reading
    is paused); all of it reaches the stream once the hook admits."""
    with HookServer(delay_for="slow=1", delay=2.0) as server:
        srv = tidecast(vhost=hooked_vhost(server.url()))
        client = RtmpTestClient(srv.host, srv.rtmp_port, connect=False)
        session = publish_session("held?token=good&slow=1", f"{srv.rtmp}/live", frames=50)
        third = len(session) // 3
        try:
            for i in range(3):
                client.sock.sendall(session[i * third : (i + 1) * third if i < 2 else len(session)])
                time.sleep(0.3)  # all three well inside the hook's two seconds
            assert not active_streams(srv)

            def frames() -> int:
                streams = srv.api_json("/api/v1/streams?count=100")["streams"]
                return next((s["frames"] for s in streams if s["name"] == "held" and s["publish"]["active"]), 0)

            # Two sequence headers and 50 video and 50 audio frames: none lost while held.
            wait_for(lambda: frames() == 102, timeout=10, what="all 102 media messages in the stream")
            assert len(server.actions("on_publish")) == 1
        finally:
            client.close()
