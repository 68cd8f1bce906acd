"""RTMP live streaming with real ffmpeg publishers and players against a real tidecast."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from pathlib import Path

from testkit.helpers import (
    Publisher,
    TidecastProcess,
    decode_errors,
    ffprobe_json,
    media_duration,
    record,
    wait_for,
    wait_stream_live,
)
from testkit.rtmpclient import RtmpTestClient, SyntheticPublisher, stalled_player

from tidecast import __version__

Factory = Callable[..., TidecastProcess]


def _video_keyframe(payload: bytes) -> bool:
    return bool(payload) and payload[0] >> 4 == 1


def test_publish_probe_and_two_players_record(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv = tidecast()
    with Publisher(clip, f"{srv.rtmp}/live/show"):
        wait_stream_live(srv, "show")
        info = ffprobe_json(f"{srv.rtmp}/live/show")
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == ["aac", "h264"]
        tags = info["format"].get("tags", {})
        assert tags.get("server_version") == __version__, tags
        assert tags.get("server", "").startswith("TIDECAST/")
        outs = [tmp_path / f"p{i}.flv" for i in range(2)]
        procs = [record(f"{srv.rtmp}/live/show", out, 10) for out in outs]
        for proc in procs:
            _, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err.decode(errors="replace")
    for out in outs:
        assert decode_errors(out) == ""
        assert 9.0 <= media_duration(out) <= 11.0


def test_vhost_from_query_and_second_publisher_rejected(tidecast: Factory, clip: Path) -> None:
    srv = tidecast()
    with Publisher(clip, f"{srv.rtmp}/live/one?vhost=__defaultVhost__"):
        wait_stream_live(srv, "one")
        second = Publisher(clip, f"{srv.rtmp}/live/one")
        try:
            second.proc.wait(timeout=15)
        finally:
            second.stop()
        assert second.proc.returncode != 0
        assert "already being published" in srv.log()
        # The first publisher was not disturbed.
        assert wait_stream_live(srv, "one")["publish"]["active"]


def test_mid_stream_join_starts_on_keyframe_and_survives_republish(tidecast: Factory, clip: Path) -> None:
    srv = tidecast()
    pub = Publisher(clip, f"{srv.rtmp}/live/gop")
    try:
        wait_stream_live(srv, "gop")
        time.sleep(1.5)  # well inside a GOP
        player = RtmpTestClient(srv.host, srv.rtmp_port)
        player.play("gop")
        player.wait_status("NetStream.Play.Start")
        player.read_for(1.0)
        frames = [p for p in player.video_payloads if not (p[0] & 0x0F == 7 and p[1] == 0)]
        assert frames and _video_keyframe(frames[0]), "first video frame after the sequence header is not a keyframe"
        assert player.received.metadata, "no onMetaData for the joining player"
    finally:
        pub.stop()
    player.wait_status("NetStream.Play.UnpublishNotify")
    before = len(player.received.media)
    with Publisher(clip, f"{srv.rtmp}/live/gop"):
        player.wait_status("NetStream.Play.PublishNotify", timeout=15)
        player.read_for(2.0)
    assert len(player.received.media) > before + 20, "no media after the republish"
    ts = [m[1] for m in player.received.media if m[0] == 9]
    assert all(b >= a for a, b in itertools.pairwise(ts)), "timestamps went backwards across the republish"
    player.close()


def test_stalled_player_does_not_slow_others_and_memory_stays_bounded(tidecast: Factory) -> None:
    srv = tidecast(vhost="play { queue_length 3; }")
    # 8 Mbps fills the stalled players' socket buffers within seconds.
    pub = SyntheticPublisher(srv.host, srv.rtmp_port, "slow", kbps=8000)
    try:
        wait_stream_live(srv, "slow")
        stalled = [stalled_player(srv.host, srv.rtmp_port, "slow") for _ in range(3)]
        good = RtmpTestClient(srv.host, srv.rtmp_port)
        good.play("slow")
        good.read_for(4.0)
        rss_before = srv.rss_kb()
        started = time.monotonic()
        first = len(good.received.media)
        good.read_for(8.0)
        elapsed = time.monotonic() - started
        rss_after = srv.rss_kb()
        window = good.received.media[first:]
        span_s = (window[-1][1] - window[0][1]) / 1000.0
        assert span_s >= 0.9 * elapsed, f"healthy player got {span_s:.1f}s of media in {elapsed:.1f}s"
        assert rss_after - rss_before < 20_000, f"RSS grew {rss_after - rss_before} KB with stalled players"
        stream = next(s for s in srv.api_json("/api/v1/streams")["streams"] if s["name"] == "slow")
        assert stream["dropped_frames"] > 0, "the stalled players never skipped anything"
        good.close()
        for sock in stalled:
            sock.close()
    finally:
        pub.close()


def test_malformed_input_closes_only_that_connection(tidecast: Factory, clip: Path) -> None:
    srv = tidecast()
    with Publisher(clip, f"{srv.rtmp}/live/ok"):
        wait_stream_live(srv, "ok")
        # A handshake, then a chunk stream that starts with a type-1 header.
        bad = socket.create_connection((srv.host, srv.rtmp_port))
        bad.sendall(b"\x03" + bytes(1536))
        bad.recv(3073, socket.MSG_WAITALL)
        bad.sendall(bytes(1536) + b"\x43" + b"\xff" * 40)
        bad.settimeout(5)
        assert bad.recv(65536) == b"" or bad.recv(65536) == b""
        bad.close()
        # Not RTMP at all.
        http = socket.create_connection((srv.host, srv.rtmp_port))
        http.sendall(b"GET / HTTP/1.1\r\n\r\n")
        http.settimeout(5)
        assert http.recv(100) == b""
        http.close()
        # A TCP health probe: connect and close, no warning (empty_ip_ok).
        socket.create_connection((srv.host, srv.rtmp_port)).close()
        wait_for(lambda: "malformed input" in srv.log(), what="the malformed-input log line")
        assert wait_stream_live(srv, "ok")["publish"]["active"]
        player = RtmpTestClient(srv.host, srv.rtmp_port)
        player.play("ok")
        player.wait_status("NetStream.Play.Start")
        player.close()
    lines = [line for line in srv.log().splitlines() if "malformed input" in line]
    assert len(lines) == 2, lines
    assert all("127.0.0.1" in line for line in lines)
    assert "type-1 header" in lines[0] and "version byte" in lines[1]


def test_max_connections_counts_every_connection(tidecast: Factory) -> None:
    srv = tidecast(globals_="max_connections 3;")
    held = [socket.create_connection((srv.host, srv.rtmp_port)) for _ in range(2)]
    # The third connection is the API request the helper makes below; hold one more RTMP.
    held.append(socket.create_connection((srv.host, srv.rtmp_port)))
    time.sleep(0.3)
    extra = socket.create_connection((srv.host, srv.rtmp_port))
    extra.settimeout(5)
    extra.sendall(b"\x03" + bytes(1536))
    try:
        data = extra.recv(10)
    except ConnectionResetError:
        data = b""
    assert data == b""
    wait_for(lambda: "max_connections 3" in srv.log(), what="the max_connections log line")
    for sock in held:
        sock.close()
    extra.close()


def test_late_joiners_start_near_zero_over_rtmp_and_http_flv_as_srs_players_do(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost="http_remux { enabled on; }")
    with Publisher(clip, f"{srv.rtmp}/live/late"):
        wait_stream_live(srv, "late")
        time.sleep(6)  # well past the first GOPs: stream time is ~6 s
        for url in (f"{srv.rtmp}/live/late", f"{srv.http}/live/late.flv"):
            info = ffprobe_json(url, "-show_entries", "stream=start_time:format=start_time")
            starts = [float(s["start_time"]) for s in info["streams"] if "start_time" in s]
            assert starts and max(starts) < 1.0, (url, info)


def _arrival_gaps(srv: TidecastProcess, stream: str) -> list[float]:
    """Seconds between consecutive media arrivals at a player, while a 25 fps publisher sends a frame every 40 ms."""
    pub = SyntheticPublisher(srv.host, srv.rtmp_port, stream, kbps=300)
    try:
        wait_stream_live(srv, stream)
        player = RtmpTestClient(srv.host, srv.rtmp_port)
        player.play(stream)
        player.wait_status("NetStream.Play.Start")
        player.read_for(4.0)
        player.close()
    finally:
        pub.close()
    arrivals = [t for _, _, _, t in player.received.media]
    assert len(arrivals) > 50, f"only {len(arrivals)} media messages in 4 s"
    return [b - a for a, b in itertools.pairwise(arrivals[10:])]


def test_merged_read_takes_the_publishers_bytes_a_window_at_a_time(tidecast: Factory) -> None:
    # Writes leave at once (mw_latency 0), so what the player sees is how the server read.
    play = "play { mw_latency 0; mw_msgs 0; }"
    merged = tidecast("merged", vhost=f"{play}\npublish {{ mr on; mr_latency 600; }}")
    gaps = _arrival_gaps(merged, "mr")
    # 4 s in windows of 600 ms: a handful of pauses of about the window, the frames in between at once.
    assert 3 <= sum(1 for g in gaps if g > 0.4) <= 8, gaps
    assert sum(1 for g in gaps if g < 0.02) > 0.7 * len(gaps), gaps

    # mr off (SRS's default): each frame as it comes (a loaded CI machine may stall once).
    plain = tidecast("plain", vhost=play)
    gaps = _arrival_gaps(plain, "plain")
    assert sum(1 for g in gaps if g > 0.4) <= 1, gaps

    # min_latency turns merged reads off, as it does in SRS.
    low = tidecast("low", vhost=f"min_latency on;\n{play}\npublish {{ mr on; mr_latency 600; }}")
    assert sum(1 for g in _arrival_gaps(low, "low") if g > 0.4) <= 1


def test_merged_read_longer_than_normal_timeout_keeps_the_publisher(tidecast: Factory) -> None:
    # A read every 3 s, while normal_timeout is 2 s: the quiet is mr's, not the encoder's.
    srv = tidecast(vhost="publish { mr on; mr_latency 3000; normal_timeout 2000; }")
    pub = SyntheticPublisher(srv.host, srv.rtmp_port, "long", kbps=300)
    try:
        wait_stream_live(srv, "long")
        time.sleep(7.0)
        assert pub.error is None, pub.error
        stream = wait_stream_live(srv, "long")
        assert stream["publish"]["active"]
    finally:
        pub.close()
    assert "sent no media" not in srv.log()
