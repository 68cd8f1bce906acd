"""HTTP-FLV, static files, the SRS-compatible API, metrics and probes, against a real tidecast."""

from __future__ import annotations

import base64
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from testkit.helpers import (
    Publisher,
    TidecastProcess,
    decode_errors,
    ffprobe_json,
    http_get,
    http_json,
    record,
    wait_for,
    wait_stream_live,
)
from testkit.rtmpclient import RtmpTestClient

Factory = Callable[..., TidecastProcess]
REMUX = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }"


def _metrics(srv: TidecastProcess) -> dict[str, list[Any]]:
    _, body, _ = http_get(f"{srv.api}/metrics")
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def _stream_sample(families: dict[str, list[Any]], name: str, stream: str) -> float:
    for sample in families.get(name, []):
        if sample.labels.get("stream") == stream:
            return float(sample.value)
    raise AssertionError(f"{name} has no sample for stream {stream}: {families.get(name)}")


def test_flv_and_rtmp_players_of_one_stream_keep_up(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/mix"):
        wait_stream_live(srv, "mix")
        info = ffprobe_json(f"{srv.http}/live/mix.flv")
        assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
        urls = [f"{srv.http}/live/mix.flv"] * 2 + [f"{srv.rtmp}/live/mix"] * 2
        outs = [tmp_path / f"out{i}.flv" for i in range(len(urls))]
        started = time.monotonic()
        procs = [record(url, out, 8) for url, out in zip(urls, outs, strict=True)]
        for proc in procs:
            _, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err.decode(errors="replace")
        elapsed = time.monotonic() - started
    # Each player got 8 s of media in about 8 s of wall time: all kept up.
    assert elapsed < 8 + 6, f"players took {elapsed:.1f}s for 8s of media"
    for out in outs:
        assert decode_errors(out) == ""
        assert ffprobe_json(str(out))["format"]["duration"] >= "7.5"


def test_flv_head_cors_and_unknown_stream(tidecast: Factory) -> None:
    srv = tidecast(vhost=REMUX)
    status, _, headers = http_get(f"{srv.http}/live/nothing.flv")
    assert status == 404
    assert headers.get("Access-Control-Allow-Origin") == "*"
    status, body, _ = http_get(f"{srv.http}/live/nothing.flv", method="HEAD")
    assert status == 404 and body == b""


def test_api_endpoints_match_srs_shapes_and_kick(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    versions = srv.api_json("/api/v1/versions")
    assert versions["code"] == 0 and {"major", "minor", "revision", "version"} <= set(versions["data"])
    assert {"server", "service", "pid"} <= set(versions)
    assert http_json(f"{srv.http}/api/v1/versions")["data"] == versions["data"]
    summaries = srv.api_json("/api/v1/summaries")["data"]
    assert summaries["ok"] is True
    assert {"version", "pid", "ppid", "argv", "cwd", "mem_kbyte", "mem_percent", "cpu_percent", "srs_uptime"} <= set(
        summaries["self"]
    )
    assert {"cpu_percent", "load_1m", "conn_srs"} <= set(summaries["system"])

    with Publisher(clip, f"{srv.rtmp}/live/api"):
        wait_stream_live(srv, "api")
        player = RtmpTestClient(srv.host, srv.rtmp_port)
        player.play("api")
        player.wait_status("NetStream.Play.Start")
        player.read_for(2.5)

        vhosts = srv.api_json("/api/v1/vhosts")["vhosts"]
        vhost = vhosts[0]
        assert {"id", "name", "enabled", "clients", "streams", "send_bytes", "recv_bytes", "kbps", "hls"} <= set(vhost)
        assert {"recv_30s", "send_30s"} <= set(vhost["kbps"]) and {"enabled", "fragment"} <= set(vhost["hls"])
        assert srv.api_json(f"/api/v1/vhosts/{vhost['id']}")["vhost"]["name"] == vhost["name"]

        streams = srv.api_json("/api/v1/streams")["streams"]
        stream = next(s for s in streams if s["name"] == "api")
        keys = {"id", "name", "vhost", "app", "tcUrl", "url", "live_ms", "clients", "frames", "send_bytes"}
        assert keys | {"recv_bytes", "kbps", "publish", "video", "audio"} <= set(stream)
        assert stream["publish"]["active"] is True and stream["publish"]["cid"]
        assert stream["video"]["codec"] == "H264" and stream["audio"]["codec"] == "AAC"
        assert (stream["video"]["width"], stream["video"]["height"]) == (320, 240)
        assert stream["clients"] == 2 and stream["url"] == "/live/api"
        assert srv.api_json(f"/api/v1/streams/{stream['id']}")["stream"]["id"] == stream["id"]
        assert srv.api_json("/api/v1/streams/nope")["code"] == 2048

        clients = srv.api_json("/api/v1/clients")["clients"]
        assert {c["type"] for c in clients} == {"fmle-publish", "rtmp-play"}
        play = next(c for c in clients if c["type"] == "rtmp-play")
        keys = {"id", "vhost", "stream", "ip", "pageUrl", "swfUrl", "tcUrl", "url", "name", "type", "publish"}
        assert keys | {"alive", "send_bytes", "recv_bytes", "kbps"} <= set(play)
        assert play["publish"] is False and play["stream"] == stream["id"]
        assert srv.api_json(f"/api/v1/clients/{play['id']}")["client"]["id"] == play["id"]
        assert srv.api_json("/api/v1/clients/nope")["code"] == 2049
        assert len(srv.api_json("/api/v1/clients?start=0&count=1")["clients"]) == 2  # count = max(10, count)

        # Kicking the player closes its connection and it leaves /clients.
        assert srv.api_json(f"/api/v1/clients/{play['id']}", method="DELETE")["code"] == 0
        player.sock.settimeout(5)
        try:
            player.read_for(3)
            closed = False
        except (ConnectionError, OSError):
            closed = True
        assert closed, "the kicked player is still connected"
        wait_for(
            lambda: all(c["id"] != play["id"] for c in srv.api_json("/api/v1/clients")["clients"]),
            what="the kicked client to leave /api/v1/clients",
        )
        # Kicking the publisher by publish.cid ends the stream.
        srv.api_json(f"/api/v1/clients/{stream['publish']['cid']}", method="DELETE")
        wait_for(
            lambda: not any(s["publish"]["active"] for s in srv.api_json("/api/v1/streams")["streams"]),
            what="the kicked publisher to leave",
        )


def test_raw_api_reload_and_fetch(tidecast: Factory) -> None:
    srv = tidecast()
    assert srv.api_json("/api/v1/raw?rpc=reload")["code"] == 0
    fetched = wait_for(
        lambda: (d := srv.api_json("/api/v1/raw?rpc=reload-fetch")["data"])["state"] == 90 and d,
        what="reload state 90",
    )
    assert {"err", "msg", "state", "rid"} <= set(fetched)
    off = tidecast("off", globals_="")
    off.conf.write_text(off.conf.read_text().replace("raw_api { enabled on; allow_reload on; }", ""))
    off.stop()
    off.start()
    assert off.api_json("/api/v1/raw?rpc=reload")["code"] == 1061


def test_metrics_parse_and_move_while_playing(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/m"):
        wait_stream_live(srv, "m")
        player = RtmpTestClient(srv.host, srv.rtmp_port)
        player.play("m")
        player.read_for(1.0)
        first = _metrics(srv)
        for name in ("srs_build_info", "srs_cpu_percent", "srs_memory", "srs_send_bytes", "srs_streams", "srs_clients"):
            assert name in first, f"{name} missing from /metrics"
        player.read_for(2.5)
        second = _metrics(srv)
        assert _stream_sample(second, "tidecast_stream_players", "m") == 1
        for name in ("tidecast_stream_receive_bytes", "tidecast_stream_send_bytes", "tidecast_stream_frames"):
            assert _stream_sample(second, name, "m") > _stream_sample(first, name, "m"), name
        assert _stream_sample(second, "tidecast_stream_ingest_kbps", "m") > 100
        assert "tidecast_reloads" in second and "tidecast_draining" in second
        # The collector's runs (rare with the raised thresholds: none may fall in these seconds) and how late
        # the housekeeping tick came; tests/test_pauses.py counts real collections.
        for name in ("tidecast_gc_collections", "tidecast_gc_pause_seconds", "tidecast_gc_pause_max_seconds"):
            by_generation = {s.labels["generation"]: s.value for s in second[name] if not s.name.endswith("_created")}
            assert set(by_generation) == {"0", "1", "2"} and min(by_generation.values()) >= 0, (name, by_generation)
        late = second["tidecast_loop_tick_late_max_seconds"][0].value
        assert 0.0 <= late < 1.0, late
        player.close()


def test_probes_and_builtin_files_from_an_empty_dir(tidecast: Factory) -> None:
    srv = tidecast()
    for base in (srv.api, srv.http):
        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/readyz")[0] == 200
    assert not any(srv.html.iterdir())
    status, body, headers = http_get(f"{srv.http}/")
    assert status == 200 and b"tidecast" in body.lower() and headers["Content-Type"].startswith("text/html")
    status, body, _ = http_get(f"{srv.http}/crossdomain.xml")
    assert status == 200 and b"cross-domain-policy" in body
    (srv.html / "index.html").write_text("mine")
    assert http_get(f"{srv.http}/index.html")[1] == b"mine"
    assert http_get(f"{srv.http}/../etc/passwd")[0] in (403, 404)


def test_api_auth_and_warning(tidecast: Factory) -> None:
    srv = tidecast(
        config_text=None,
        globals_="",
    )
    srv.stop()
    text = srv.conf.read_text().replace(
        "raw_api { enabled on; allow_reload on; }",
        "raw_api { enabled on; } auth { enabled on; username admin; password s3cret; }",
    )
    srv.conf.write_text(text)
    srv.start(wait=False)
    wait_for(lambda: http_get(f"{srv.api}/healthz")[0] == 200 if _up(srv) else False, what="server up")
    assert http_get(f"{srv.api}/api/v1/summaries")[0] == 401
    request = urllib.request.Request(f"{srv.api}/api/v1/summaries")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"admin:s3cret").decode())
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    assert http_get(f"{srv.api}/api/v1/versions")[0] == 200  # versions stay open for probes


def _up(srv: TidecastProcess) -> bool:
    try:
        http_get(f"{srv.api}/healthz", timeout=1)
        return True
    except (OSError, urllib.error.URLError):
        return False


def test_kicking_an_http_flv_player_closes_its_connection(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/kickflv"):
        wait_stream_live(srv, "kickflv")
        with urllib.request.urlopen(f"{srv.http}/live/kickflv.flv", timeout=5) as response:
            assert response.read(3) == b"FLV"
            play = wait_for(
                lambda: next((c for c in srv.api_json("/api/v1/clients")["clients"] if c["type"] == "flv-play"), None),
                what="the HTTP-FLV player in /api/v1/clients",
            )
            assert srv.api_json(f"/api/v1/clients/{play['id']}", method="DELETE")["code"] == 0
            # The stream keeps sending to the others; this connection ends, so reading reaches its end.
            deadline = time.monotonic() + 5
            ended = False
            while time.monotonic() < deadline:
                try:
                    if not response.read(65536):
                        ended = True
                        break
                except (OSError, http.client.IncompleteRead):  # reset, or closed inside a chunk
                    ended = True
                    break
            assert ended, "the kicked HTTP-FLV player is still being sent the stream"
        wait_for(
            lambda: all(c["id"] != play["id"] for c in srv.api_json("/api/v1/clients")["clients"]),
            what="the kicked HTTP-FLV player to leave /api/v1/clients",
        )
