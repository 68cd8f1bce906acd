"""HLS from a real tidecast: playlists on disk and over its own HTTP server, as nginx and players see them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import m3u8
from testkit.helpers import Publisher, TidecastProcess, http_get, wait_for, wait_stream_live

Factory = Callable[..., TidecastProcess]

HLS = "hls {{ enabled on; hls_fragment 1; hls_window {window}; hls_path {path}; hls_dispose 3; }}"


def _hls_server(tidecast: Factory, tmp_path: Path, window: int = 6) -> tuple[TidecastProcess, Path]:
    hls_dir = tmp_path / "hls"
    hls_dir.mkdir()
    srv = tidecast(vhost=HLS.format(path=hls_dir, window=window))
    return srv, hls_dir


def test_playlist_appears_parses_and_plays_over_http(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, hls_dir = _hls_server(tidecast, tmp_path)
    playlist = hls_dir / "live" / "tv.m3u8"
    with Publisher(clip, f"{srv.rtmp}/live/tv"):
        wait_stream_live(srv, "tv")
        started = time.monotonic()
        wait_for(playlist.exists, timeout=6, what="the playlist")
        assert time.monotonic() - started < 4.0, "the playlist took longer than ~1 fragment"
        time.sleep(8.0)
        parsed = m3u8.loads(playlist.read_text())
        assert parsed.target_duration is not None and 1 <= parsed.target_duration <= 2
        total = sum(seg.duration for seg in parsed.segments)
        assert 4.0 <= total <= 8.5, f"window of {total:.1f}s for hls_window 6"
        status, body, headers = http_get(f"{srv.http}/live/tv.m3u8")
        assert status == 200 and body.startswith(b"#EXTM3U")
        assert headers["Content-Type"] in ("application/vnd.apple.mpegurl", "application/x-mpegURL")
        assert "no-cache" in headers.get("Cache-Control", "")
        seg_status, _, seg_headers = http_get(f"{srv.http}/live/{parsed.segments[-1].uri}")
        assert seg_status == 200 and seg_headers["Content-Type"].lower() == "video/mp2t"
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", f"{srv.http}/live/tv.m3u8", "-t", "10", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_directory_is_always_consistent_for_a_sharing_nginx(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, hls_dir = _hls_server(tidecast, tmp_path, window=3)
    playlist = hls_dir / "live" / "nas.m3u8"
    problems: list[str] = []
    stop = threading.Event()
    checks = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                text = playlist.read_text()
            except FileNotFoundError:
                time.sleep(0.01)
                continue
            if not text.startswith("#EXTM3U"):
                problems.append(f"partial playlist: {text[:40]!r}")
            for seg in m3u8.loads(text).segments:
                path = playlist.parent / seg.uri
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    problems.append(f"playlist names missing {seg.uri}")
                    continue
                if size == 0 or size % 188:
                    problems.append(f"{seg.uri} is truncated ({size} bytes)")
            checks[0] += 1
            time.sleep(0.005)

    thread = threading.Thread(target=reader, daemon=True)
    with Publisher(clip, f"{srv.rtmp}/live/nas"):
        wait_stream_live(srv, "nas")
        thread.start()
        time.sleep(10.0)
        stop.set()
        thread.join(5)
    assert checks[0] > 200, "the reader barely ran"
    assert not problems, problems[:5]
    # Cleanup deleted what slid out of the window, and only that.
    named = {seg.uri for seg in m3u8.loads(playlist.read_text()).segments}
    on_disk = {p.name for p in playlist.parent.glob("nas-*.ts")}
    seq = {name: int(name[4:-3]) for name in on_disk | named}
    assert named <= on_disk, named - on_disk
    # Dropped segments linger one playlist's duration for players that loaded the last one
    # (RFC 8216 6.2.2); then they go. The first ones are gone after 10 s of a 3 s window.
    assert all(seq[name] < min(seq[n] for n in named) for name in on_disk - named)
    assert "nas-0.ts" not in on_disk
    # Dispose removes this stream's files after hls_dispose (3 s) idle, and nothing else.
    keep = playlist.parent / "keep.txt"
    keep.write_text("not ours")
    # The worker deletes the playlist first (no reader is left naming a missing segment), then the
    # segments, in one step that a busy machine may split: wait for the step, not its first unlink.
    wait_for(
        lambda: not playlist.exists() and not list(playlist.parent.glob("nas-*.ts")), timeout=15, what="hls_dispose"
    )
    assert not list(playlist.parent.glob("nas-*.ts"))
    assert keep.exists()


def test_republish_continues_the_playlist_with_a_discontinuity(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, hls_dir = _hls_server(tidecast, tmp_path)
    srv.stop()
    srv.conf.write_text(srv.conf.read_text().replace("hls_dispose 3;", "hls_dispose 60;"))
    srv.start()
    playlist = hls_dir / "live" / "re.m3u8"
    with Publisher(clip, f"{srv.rtmp}/live/re"):
        wait_for(lambda: playlist.exists() and len(m3u8.loads(playlist.read_text()).segments) >= 2, timeout=15)
    first = m3u8.loads(playlist.read_text())
    with Publisher(clip, f"{srv.rtmp}/live/re"):
        wait_for(
            lambda: (
                m3u8.loads(playlist.read_text()).media_sequence + len(m3u8.loads(playlist.read_text()).segments)
                > first.media_sequence + len(first.segments) + 1
            ),
            timeout=15,
            what="segments after the republish",
        )
    text = playlist.read_text()
    assert "#EXT-X-DISCONTINUITY" in text
