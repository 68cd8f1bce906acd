"""Low-latency HLS (`hls_variant lowlatency`) from a real tidecast with ffmpeg publishing.

The in-memory playlist has parts, a preload hint and server control; blocking
reloads (`_HLS_msn`, `_HLS_part`) are held until what they ask for exists,
and the hold is measured; delta updates skip old segments; the preload-hinted
part is held until it is cut; ffmpeg plays the playlist; an edge makes its
own parts from the stream it pulls.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import m3u8
from testkit.helpers import Publisher, TidecastProcess, http_get, wait_for, wait_stream_live

Factory = Callable[..., TidecastProcess]

LL = "hls {{ enabled on; hls_variant lowlatency; hls_part 0.2; hls_fragment 1; hls_window {window}; hls_path {path}; }}"


def _server(tidecast: Factory, tmp_path: Path, window: int = 4) -> tuple[TidecastProcess, Path]:
    hls_dir = tmp_path / "hls"
    return tidecast(vhost=LL.format(path=hls_dir, window=window)), hls_dir


def _get(url: str, timeout: float = 10.0) -> tuple[int, str, float]:
    started = time.monotonic()
    status, body, _ = http_get(url, timeout=timeout)
    return status, body.decode(errors="replace"), time.monotonic() - started


def _last(text: str) -> tuple[int, int]:
    """(the open segment's msn, its parts so far) of a low-latency playlist."""
    # Counted by hand: m3u8 lists the open segment's parts as one more segment.
    sequence = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    assert sequence is not None
    msn = int(sequence.group(1)) + text.count("#EXTINF")
    tail = text.rsplit("#EXTINF", 1)[-1]
    return msn, tail.count("#EXT-X-PART:")


def text_now(srv: TidecastProcess, name: str = "dl") -> str:
    return _get(f"{srv.http}/live/{name}.m3u8")[1]


def _wait_playlist(srv: TidecastProcess, name: str, segments: int = 2) -> str:
    def ready() -> str | None:
        status, text, _ = _get(f"{srv.http}/live/{name}.m3u8")
        return text if status == 200 and text.count("#EXTINF") >= segments else None

    return str(wait_for(ready, 15, what=f"{segments} segments in the {name} playlist"))


def test_playlist_has_parts_hint_and_server_control(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, hls_dir = _server(tidecast, tmp_path)
    with Publisher(clip, f"{srv.rtmp}/live/ll"):
        wait_stream_live(srv, "ll")
        text = _wait_playlist(srv, "ll", 3)
        assert "#EXT-X-VERSION:9" in text
        assert "#EXT-X-PART-INF:PART-TARGET=0.200" in text
        assert re.search(r"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,.*PART-HOLD-BACK=0\.600", text)
        assert re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="ll-\d+\.part\d+\.m4s"', text)
        assert "#EXT-X-PROGRAM-DATE-TIME:" in text and '#EXT-X-MAP:URI="ll-init-0.mp4"' in text
        parts = re.findall(r"#EXT-X-PART:DURATION=([\d.]+),URI=\"([^\"]+)\"(,INDEPENDENT=YES)?", text)
        assert len(parts) >= 5
        assert all(0.0 < float(d) <= 0.2 for d, _, _ in parts), "a part outlasts PART-TARGET"
        # 25 fps, a keyframe a second, 1 s segments: each segment's first part is the independent one.
        assert any(ind for _, _, ind in parts) and not all(ind for _, _, ind in parts)
        status, body, headers = http_get(f"{srv.http}/live/{parts[-1][1]}")
        assert status == 200 and body[4:8] == b"moof" and headers["Content-Type"] == "video/mp4"
        # The disk keeps the plain fMP4 playlist for nginx: no parts, which exist in memory only.
        disk = (hls_dir / "live" / "ll.m3u8").read_text()
        assert "#EXT-X-MAP" in disk and "#EXT-X-PART" not in disk and "PRELOAD-HINT" not in disk
        assert not list((hls_dir / "live").glob("*.part*"))


def test_parts_inits_and_recent_segments_from_memory_honour_byte_ranges(
    tidecast: Factory, clip: Path, tmp_path: Path
) -> None:
    # They used to ignore Range and send everything with a 200, unlike the same files served from disk.
    srv, _ = _server(tidecast, tmp_path)
    with Publisher(clip, f"{srv.rtmp}/live/rg"):
        wait_stream_live(srv, "rg")
        text = _wait_playlist(srv, "rg", 2)
        part = re.findall(r'#EXT-X-PART:DURATION=[\d.]+,URI="([^"]+)"', text)[-1]
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
        assert init is not None
        for name in (part, init.group(1)):
            url = f"{srv.http}/live/{name}"
            status, whole, headers = http_get(url)
            assert status == 200 and headers["Accept-Ranges"] == "bytes"
            size = len(whole)
            status, body, headers = http_get(url, headers={"Range": "bytes=0-99"})
            assert (status, body, headers["Content-Range"]) == (206, whole[:100], f"bytes 0-99/{size}")
            status, body, headers = http_get(url, headers={"Range": "bytes=-50"})
            tail = (206, whole[-50:], f"bytes {size - 50}-{size - 1}/{size}")
            assert (status, body, headers["Content-Range"]) == tail
            status, body, _ = http_get(url, headers={"Range": f"bytes=100-{size + 1000}"})
            assert (status, body) == (206, whole[100:])  # a last byte past the end means to the end
            status, _, headers = http_get(url, headers={"Range": f"bytes={size}-"})
            assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
            status, _, headers = http_get(url, headers={"Range": "bytes=0-1,5-9"})  # as the disk's files answer
            assert status == 416 and headers["Content-Range"] == f"bytes */{size}"


def test_blocking_reload_holds_until_the_segment_and_part_exist(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, _ = _server(tidecast, tmp_path)
    with Publisher(clip, f"{srv.rtmp}/live/bl"):
        wait_stream_live(srv, "bl")
        msn, _ = _last(_wait_playlist(srv, "bl"))
        # A whole future segment: msn is open now, so msn + 1 is about two segments (~1-2 s) away.
        status, text, held = _get(f"{srv.http}/live/bl.m3u8?_HLS_msn={msn + 1}")
        assert status == 200 and 0.3 < held < 3.0, f"held {held:.2f}s"
        assert _last(text)[0] - 1 >= msn + 1, "answered before the segment existed"
        # The next part: held about one part duration.
        msn, done = _last(text)
        holds = []
        for _ in range(5):
            status, text, held = _get(f"{srv.http}/live/bl.m3u8?_HLS_msn={msn}&_HLS_part={done}")
            assert status == 200
            new_msn, new_done = _last(text)
            assert (new_msn, new_done) > (msn, done), "answered without the awaited part"
            holds.append(held)
            msn, done = new_msn, new_done
        assert max(holds) < 0.6 and sum(holds) / len(holds) > 0.05, f"part holds {holds}"
        # Something already there is answered at once; too far ahead is refused.
        assert _get(f"{srv.http}/live/bl.m3u8?_HLS_msn={msn - 1}")[2] < 0.2
        assert _get(f"{srv.http}/live/bl.m3u8?_HLS_msn={msn + 10}")[0] == 400
        assert _get(f"{srv.http}/live/bl.m3u8?_HLS_part=1")[0] == 400
        # The preload-hinted part is held until it is cut, then served.
        hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text)
        assert hint is not None
        started = time.monotonic()
        status, body, _ = http_get(f"{srv.http}/live/{hint.group(1)}")
        assert status == 200 and body[4:8] == b"moof" and time.monotonic() - started < 0.6


def test_delta_update_skips_old_segments_and_an_unpublish_releases_waiters(
    tidecast: Factory, clip: Path, tmp_path: Path
) -> None:
    srv, _ = _server(tidecast, tmp_path, window=12)
    with Publisher(clip, f"{srv.rtmp}/live/dl") as publisher:
        wait_stream_live(srv, "dl")
        full = _wait_playlist(srv, "dl", 11)
        status, delta, _ = _get(f"{srv.http}/live/dl.m3u8?_HLS_skip=YES")
        target = m3u8.loads(full).target_duration
        assert status == 200 and target is not None and f"CAN-SKIP-UNTIL={6 * target:.1f}" in full
        skipped = re.search(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)", delta)
        assert skipped is not None and int(skipped.group(1)) >= 1
        assert delta.count("#EXTINF") + int(skipped.group(1)) >= full.count("#EXTINF")
        assert len(delta) < len(full)
        publisher.stop()
    # The publisher left: a reload waiting for a part that will never come is answered at once, not held.
    wait_for(lambda: "PRELOAD-HINT" not in _get(f"{srv.http}/live/dl.m3u8")[1], 10, what="the hint to go")
    status, text, held = _get(f"{srv.http}/live/dl.m3u8?_HLS_msn={_last(text_now(srv))[0]}&_HLS_part=9")
    assert status == 200 and held < 0.5 and "#EXTINF" in text, (status, held)


def test_ffmpeg_plays_the_low_latency_playlist(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv, _ = _server(tidecast, tmp_path)
    with Publisher(clip, f"{srv.rtmp}/live/ff"):
        wait_stream_live(srv, "ff")
        _wait_playlist(srv, "ff")
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", f"{srv.http}/live/ff.m3u8", "-t", "4", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=40,
        )
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_edge_makes_its_own_parts(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    origin = tidecast("origin")
    edge = tidecast(
        "edge",
        vhost=(
            f"cluster {{ mode remote; origin 127.0.0.1:{origin.rtmp_port}; }}\n"
            + LL.format(path=tmp_path / "edge-hls", window=4)
        ),
    )
    with Publisher(clip, f"{origin.rtmp}/live/ed"):
        wait_stream_live(origin, "ed")
        assert http_get(f"{edge.http}/live/ed.m3u8")[0] == 404  # the request starts the pull
        text = _wait_playlist(edge, "ed", 2)
        assert "#EXT-X-PART:" in text and "PRELOAD-HINT" in text
        msn, done = _last(text)
        status, text, held = _get(f"{edge.http}/live/ed.m3u8?_HLS_msn={msn}&_HLS_part={done}")
        assert status == 200 and _last(text) > (msn, done) and held < 1.0
