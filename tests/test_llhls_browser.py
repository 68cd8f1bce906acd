"""hls.js (lowLatencyMode) in headless Chromium plays tidecast's low-latency HLS; glass-to-player latency.

ffmpeg encodes a live test source (x264 zerolatency, real time) and publishes
it; tidecast stamps each segment with EXT-X-PROGRAM-DATE-TIME = its anchor
(the wall clock of media time 0, taken at the first message) + the media
time. The player samples `Date.now() - hls.playingDate` (wall clock minus the
displayed frame's date). The glass-to-player latency adds what happened
before the anchor: the anchor minus the moment tidecast accepted ffmpeg's
connection. ffmpeg opens its output before its `-re` clock and its encoder
start, so every frame is made after that moment and the figure is an upper
bound; it leaves out ffmpeg's own process start-up, which grows with the
machine's load and is no part of the stream's latency.

Needs Debian's chromium and the npm packages of tests/web (scripts/test.sh
installs both); skipped when they are missing.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import TidecastProcess, http_get, http_json, wait_for

WEB = Path(__file__).parent / "web"
HLS_JS = WEB / "node_modules" / "hls.js" / "dist" / "hls.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not HLS_JS.exists() or shutil.which("node") is None,
    reason="needs chromium, node and tests/web/node_modules (bash scripts/test.sh installs them)",
)

Factory = Callable[..., TidecastProcess]

PLAY_SECONDS = 14
LL = "hls { enabled on; hls_variant lowlatency; hls_part 0.2; hls_fragment 1; hls_window 4; hls_path ./html; }"


def _live_publisher(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "ffmpeg", "-v", "error", "-re",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-keyint_min", "25",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _first_pdt(text: str) -> float | None:
    """The date of segment 0 (media time ~0: the stream's anchor), while it is still in the window."""
    if "#EXT-X-MEDIA-SEQUENCE:0\n" not in text:
        return None
    found = re.search(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text)
    if found is None:
        return None
    return datetime.datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()


def test_hlsjs_plays_low_latency_under_two_seconds(tidecast: Factory, tmp_path: Path) -> None:
    srv = tidecast(vhost=LL)
    shutil.copy(HLS_JS, srv.html / "hls.min.js")
    shutil.copy(WEB / "player.html", srv.html / "player.html")
    publisher = _live_publisher(f"{srv.rtmp}/live/glass")
    try:

        def anchor() -> float | None:
            status, body, _ = http_get(f"{srv.http}/live/glass.m3u8")
            return _first_pdt(body.decode()) if status == 200 else None

        anchored = float(wait_for(anchor, 15, interval=0.05, what="segment 0 of the playlist"))
        asked = time.time()  # before the server reads its clock: the connection's age is an upper bound
        publishers = [c for c in http_json(f"{srv.api}/api/v1/clients")["clients"] if c["publish"]]
        assert len(publishers) == 1, publishers
        startup = anchored - (asked - publishers[0]["alive"])
        assert 0 <= startup < 5, f"ffmpeg took {startup:.2f}s from its connection to its first frame"
        run = subprocess.run(
            ["node", str(WEB / "play.mjs"), f"{srv.http}/player.html?src=/live/glass.m3u8", str(PLAY_SECONDS)],
            capture_output=True,
            text=True,
            timeout=PLAY_SECONDS + 60,
            cwd=WEB,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        publisher.terminate()
        publisher.wait(10)
    assert result["support"]["hls"] and result["support"]["h264"], result
    assert not [e for e in result["errors"] if "fatal=true" in e], result["errors"]
    assert result["partLoads"] > 10, f"hls.js loaded {result['partLoads']} parts: not in low-latency mode?"
    # The first seconds are the player's start-up and catch-up: measure the settled playback.
    settled = [s for s in result["samples"] if s["wall"] > result["samples"][0]["wall"] + 6000]
    assert len(settled) > 30, f"only {len(settled)} samples of a playing video: {result}"
    glass = sorted(s["latency"] + startup for s in settled)
    p50 = statistics.median(glass)
    p95 = glass[int(len(glass) * 0.95) - 1]
    own = statistics.median(s["hlsLatency"] for s in settled)
    first = result["samples"][0]
    print(
        f"glass-to-player latency over {len(glass)} samples: p50 {p50:.3f}s p95 {p95:.3f}s "
        f"min {glass[0]:.3f}s max {glass[-1]:.3f}s (connection to first frame {startup:.3f}s included); "
        f"hls.js's own latency estimate p50 {own:.3f}s, target {first['target']:.3f}s, at start "
        f"{first['hlsLatency']:.3f}s; {result['partLoads']} parts loaded; {result['resyncs']} jumps to live"
    )
    assert p50 < 2.0 and p95 < 2.5, f"latency p50 {p50:.2f}s p95 {p95:.2f}s"
    assert result["resyncs"] <= 1, f"the player fell behind {result['resyncs']} times"
