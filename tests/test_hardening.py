"""Attacks and SRS drop-in breaks found with real peers, against a real server (issue: hardening).

Each test reproduces a finding that held before the fix: names that escaped
hls_path, HTTP sockets that hoarded connections, a reload that took RTMP down,
FLV headers that made audio-only players wait forever.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import Publisher, TidecastProcess, http_get, wait_for, wait_stream_live
from testkit.rtmpclient import RtmpTestClient

Factory = Callable[..., TidecastProcess]


@pytest.mark.parametrize("name", ["../../victim", "../../../../../../tmp/tidecast-pwn", "a/../../victim"])
def test_hostile_stream_names_are_refused_and_touch_nothing_outside(tidecast: Factory, name: str) -> None:
    srv = tidecast(vhost="hls { enabled on; hls_path ./hls; hls_fragment 1; hls_dispose 1; }")
    victim = srv.workdir / "victim-7.ts"
    victim.write_bytes(b"precious")
    client = RtmpTestClient(srv.host, srv.rtmp_port)
    client.publish(name)
    status = client.wait_status("NetStream.Publish.BadName")
    assert "name" in status["description"]
    client.close()
    time.sleep(1.5)
    assert victim.read_bytes() == b"precious"
    assert not list(srv.workdir.glob("*.m3u8")) and not Path("/tmp/tidecast-pwn.m3u8").exists()
    assert srv.api_json("/api/v1/streams")["streams"] == []
    assert "\n" not in status["description"]


def test_hostile_app_name_refused_at_connect_time_over_http_flv_too(tidecast: Factory) -> None:
    srv = tidecast(vhost="http_remux { enabled on; }")
    status, body, _ = http_get(f"{srv.http}/..%2F..%2Fetc/passwd.flv")
    assert status in (400, 403, 404), body
    status, body, _ = http_get(f"{srv.http}/live/bad%0Aname.flv")
    assert status in (400, 404), body  # aiohttp's router or the hub's name check
    status, body, _ = http_get(f"{srv.http}/live/bad%20name.flv")
    assert status == 400 and b"stream name" in body
    assert "bad\nname" not in srv.log()


def test_idle_http_sockets_cannot_lock_out_rtmp_or_probes(tidecast: Factory) -> None:
    srv = tidecast(globals_="max_connections 20;")
    idle = [socket.create_connection((srv.host, srv.http_port)) for _ in range(40)]
    try:
        # RTMP keeps its own budget and probes a reserve.
        client = RtmpTestClient(srv.host, srv.rtmp_port)
        client.close()
        assert http_get(f"{srv.api}/healthz")[0] == 200
        # Sockets that never send a request are closed after the header timeout.
        start = time.monotonic()
        for s in idle[:3]:
            s.settimeout(15)
            assert s.recv(1) == b""
        assert time.monotonic() - start < 14
    finally:
        for s in idle:
            s.close()


def test_a_full_http_port_still_answers_its_own_probe_at_once(tidecast: Factory) -> None:
    srv = tidecast(globals_="max_connections 20;")
    idle = [socket.create_connection((srv.host, srv.http_port)) for _ in range(30)]
    try:
        time.sleep(0.3)
        start = time.monotonic()
        for _ in range(3):
            assert http_get(f"{srv.http}/healthz", timeout=3)[0] == 200
        assert time.monotonic() - start < 3, "no waiting for the header timeout to free room"
        # The probes took the places of the oldest silent sockets: those are closed.
        idle[0].settimeout(3)
        try:
            assert idle[0].recv(1) == b""
        except ConnectionResetError:
            pass  # closed with a reset: as good
    finally:
        for s in idle:
            s.close()


def test_reload_to_a_port_in_use_keeps_rtmp_listening_and_fails(tidecast: Factory) -> None:
    srv = tidecast()
    busy = socket.socket()
    busy.bind((srv.host, 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        text = srv.conf.read_text().replace(f"listen {srv.host}:{srv.rtmp_port};", f"listen {srv.host}:{port};")
        srv.conf.write_text(text)
        answer = srv.api_json("/api/v1/raw?rpc=reload")
        assert answer["code"] != 0
        state = srv.api_json("/api/v1/raw?rpc=reload-fetch")["data"]
        assert state["err"] == 1 and "listen" in state["msg"]
        client = RtmpTestClient(srv.host, srv.rtmp_port)  # the old listener still serves
        client.close()
    finally:
        busy.close()


def test_reload_that_changes_workers_says_it_needs_a_restart(tidecast: Factory) -> None:
    srv = tidecast()
    srv.conf.write_text("workers 2;\n" + srv.conf.read_text())
    assert srv.api_json("/api/v1/raw?rpc=reload")["code"] == 0
    wait_for(lambda: "workers 1 -> 2 needs a restart" in srv.log(), 10)
    assert srv.api_json("/api/v1/raw?rpc=reload-fetch")["data"]["err"] == 0


def test_api_trailing_slashes_new_endpoints_and_safe_jsonp(tidecast: Factory) -> None:
    srv = tidecast()
    for path in ("/api/v1/", "/api/v1/summaries/", "/api/v1/versions/", "/api/v1/streams/", "/api/v1/vhosts/"):
        status, body, _ = http_get(f"{srv.api}{path}")
        assert status == 200 and json.loads(body)["code"] == 0, path
    for path in ("rusages", "self_proc_stats", "system_proc_stats", "meminfos", "features", "requests"):
        doc = srv.api_json(f"/api/v1/{path}")
        assert doc["code"] == 0 and doc["data"], path
    assert srv.api_json("/api/v1/meminfos")["data"]["MemTotal"] > 0
    status, body, _ = http_get(f"{srv.api}/api/v1/versions?callback=cb_1")
    assert status == 200 and body.startswith(b"cb_1(")
    status, _, _ = http_get(f"{srv.api}/api/v1/versions?callback=%3Cscript%3Ealert(1)%3C/script%3E")
    assert status == 400


def test_metrics_need_the_api_credentials_when_auth_is_on(tmp_path: Path) -> None:
    srv = TidecastProcess(tmp_path / "auth")
    auth = "auth { enabled on; username u; password p; } raw_api {"
    srv.conf.write_text(srv.conf.read_text().replace("raw_api {", auth))
    srv.start()
    try:
        assert http_get(f"{srv.api}/metrics")[0] == 401
        assert http_get(f"{srv.api}/api/v1/streams")[0] == 401
        assert http_get(f"{srv.api}/healthz")[0] == 200
    finally:
        srv.stop()


def _flv_header(url: str) -> bytes:
    with socket.create_connection(_addr(url), timeout=5) as s:
        path = "/" + url.split("//")[1].split("/", 1)[1]
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"FLV" not in data and len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        start = data.index(b"FLV")
        return data[start : start + 9]


def _addr(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    return host, int(port)


def test_audio_only_stream_gets_an_audio_only_flv_header(tidecast: Factory, tmp_path: Path) -> None:
    srv = tidecast(vhost="http_remux { enabled on; }")
    clip = tmp_path / "audio.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "4", "-c:a", "aac",
         "-f", "flv", str(clip)],
        check=True,
    )  # fmt: skip
    with Publisher(clip, f"{srv.rtmp}/live/radio"):
        wait_for(
            lambda: any(s["name"] == "radio" and s["audio"] for s in srv.api_json("/api/v1/streams")["streams"]),
            what="the audio-only stream",
        )
        header = _flv_header(f"{srv.http}/live/radio.flv")
    assert header[:3] == b"FLV" and header[4] == 0x04, header


def test_rtmp_play_of_name_dot_flv_plays_name_as_an_srs_edge_asks(tidecast: Factory, clip: Path) -> None:
    srv = tidecast()
    with Publisher(clip, f"{srv.rtmp}/live/show"):
        wait_stream_live(srv, "show")
        client = RtmpTestClient(srv.host, srv.rtmp_port)
        client.play("show.flv")
        client.wait_status("NetStream.Play.Start")
        got = client.read_for(2.0)
        client.close()
    assert any(m[0] == 9 for m in got.media)
    query = srv.api_json("/api/v1/clusters?vhost=__defaultVhost__&app=live&stream=show.flv&ip=127.0.0.1")
    assert query["code"] == 0


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_a_connection_closed_on_a_peer_that_reads_nothing_is_reset_after_the_grace(use_uvloop: bool) -> None:
    # A player kicked for reading nothing was closed with close(), which waits for its buffer to drain:
    # its socket, its buffered bytes and its client entry stayed for as long as the peer did.
    import asyncio

    import uvloop

    from tidecast.net.sockets import close_transport

    async def scenario() -> tuple[int, int, str]:
        loop = asyncio.get_running_loop()
        made: list[asyncio.Transport] = []
        lost = loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)  # type: ignore[arg-type]

            def connection_lost(self, exc: Exception | None) -> None:
                lost.set_result(None)

        server = await loop.create_server(Server, "127.0.0.1", 0)
        peer = socket.create_connection(server.sockets[0].getsockname()[:2])
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.sleep(0.05)
        made[0].write(bytes(8 << 20))  # far more than the kernel takes for a peer that never reads
        close_transport(made[0], grace=0.2)
        buffered = made[0].get_write_buffer_size()
        await asyncio.wait_for(lost, 2.0)
        peer.settimeout(2.0)
        got, how = 0, "open"
        try:
            while data := peer.recv(65536):
                got += len(data)
            how = "eof"
        except OSError as exc:
            how = type(exc).__name__
        peer.close()
        server.close()
        return buffered, got, how

    buffered, got, how = uvloop.run(scenario()) if use_uvloop else asyncio.run(scenario())
    assert buffered > 1 << 20
    assert how == "ConnectionResetError" and got < 1 << 20, (how, got)
