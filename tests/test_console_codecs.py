"""The console's player in headless Chromium with AV1 and VP9 + Opus, and the console of an edge."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit import ff9
from testkit.browser import Browser, chromium_binary
from testkit.ff9 import FFMPEG9
from testkit.helpers import Publisher, TidecastProcess, wait_stream_live

Factory = Callable[..., TidecastProcess]
REMUX = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }"

pytestmark = pytest.mark.skipif(
    chromium_binary() is None, reason="chromium is not installed: apt-get install -y chromium (scripts/test.sh does)"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


BROWSER_CODECS = {"av1": ("av1", "aac", "av01.0.", "mp4a.40.2"), "vp9": ("vp9", "opus", "vp09.00.", "opus")}


@pytest.fixture(scope="module")
def browser_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if FFMPEG9 is None:
        pytest.skip("needs the imageio-ffmpeg wheel: pip install -e '.[test]'")
    d = tmp_path_factory.mktemp("console-ertmp")
    return {k: ff9.make_clip(d / f"{k}.flv", v, a, seconds=3) for k, (v, a, _, _) in BROWSER_CODECS.items()}


@pytest.mark.parametrize("name", list(BROWSER_CODECS))
def test_player_plays_av1_and_vp9_opus(
    name: str, tidecast: Factory, browser_clips: dict[str, Path], browser: Browser, tmp_path: Path
) -> None:
    """The codecs string the script reads from the init segment is one Chromium's MSE accepts and plays."""
    assert FFMPEG9 is not None
    srv = tidecast(vhost=REMUX)
    with open(tmp_path / "publisher.log", "wb") as out:
        pub = subprocess.Popen(
            [FFMPEG9, "-v", "error", "-re", "-stream_loop", "-1", "-i", str(browser_clips[name]), "-c", "copy",
             "-f", "flv", f"{srv.rtmp}/live/{name}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
        try:
            wait_stream_live(srv, name, timeout=15)
            browser.navigate(f"{srv.api}/console/play/live/{name}")
            browser.wait("window.tidecastPlayer && document.getElementById('video').currentTime > 0", 20)
            start = browser.eval("document.getElementById('video').currentTime")
            browser.wait(f"document.getElementById('video').currentTime - {start} > 2", 15)
            assert browser.eval("window.tidecastPlayer.error") == ""
            codecs = browser.eval("window.tidecastPlayer.codecs")
            _, _, video, audio = BROWSER_CODECS[name]
            assert len(codecs) == 2 and codecs[0].startswith(video) and codecs[1] == audio, codecs
        finally:
            pub.terminate()
            pub.wait(10)


def test_edge_console_shows_upstream_and_plays_through_the_edge(
    tidecast: Factory, clip: Path, browser: Browser
) -> None:
    origin = tidecast("origin", vhost=REMUX)
    edge = tidecast("edge", vhost=REMUX + f"\ncluster {{ mode remote; origin 127.0.0.1:{origin.rtmp_port}; }}")
    with Publisher(clip, f"{origin.rtmp}/live/edged"):
        wait_stream_live(origin, "edged")
        # The play page on the edge: its MP4 endpoint makes the edge pull from the origin.
        browser.navigate(f"{edge.api}/console/play/live/edged")
        browser.wait("window.tidecastPlayer && document.getElementById('video').currentTime > 0", 20)
        start = browser.eval("document.getElementById('video').currentTime")
        browser.wait(f"document.getElementById('video').currentTime - {start} > 2", 15)
        assert browser.eval("window.tidecastPlayer.error") == ""
        browser.navigate(f"{edge.api}/console/")
        assert browser.wait("document.getElementById('roles').textContent") == "edge"
        row = "document.querySelector('tr[data-stream=\"/live/edged\"]')"
        upstream = browser.wait(
            f"{row} && {row}.children[7].textContent.startsWith('pull') && {row}.children[7].textContent"
        )
        assert f"127.0.0.1:{origin.rtmp_port}" in upstream, upstream
