"""The web console and its MSE player in a real headless Chromium, against a real tidecast and ffmpeg."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit.browser import Browser, answer_auth, chromium_binary
from testkit.helpers import ROOT, Publisher, TidecastProcess, http_get, record, wait_for, wait_stream_live

Factory = Callable[..., TidecastProcess]
REMUX = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }"
IMG = ROOT / "docs" / "img"

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


def _clients(srv: TidecastProcess) -> list[dict[str, object]]:
    return list(srv.api_json("/api/v1/clients?count=100")["clients"])


def test_console_lists_plays_and_kicks(tidecast: Factory, clip: Path, browser: Browser, tmp_path: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/livestream"):
        wait_stream_live(srv, "livestream")
        watcher = record(f"{srv.http}/live/livestream.flv", tmp_path / "watch.flv", 60)
        try:
            flv_id = wait_for(
                lambda: next((c["id"] for c in _clients(srv) if c["type"] == "flv-play"), None), 10, what="FLV player"
            )
            browser.navigate(f"{srv.api}/console/")
            row = "document.querySelector('tr[data-stream=\"/live/livestream\"]')"
            video = browser.wait(f"{row} && {row}.querySelector('.codec-video').textContent", what="the stream row")
            audio = browser.eval(f"{row}.querySelector('.codec-audio').textContent")
            assert video.startswith("H264") and "320x240" in video, video
            assert audio.startswith("AAC") and "44100 Hz" in audio, audio
            assert browser.wait(f"{row}.querySelector('.players').textContent.includes('flv 1')")
            state = browser.eval("document.getElementById('state').textContent")
            assert state == "ready"
            assert browser.eval("document.getElementById('version').textContent").startswith("v")

            # The player: the MP4 endpoint is on the HTTP port, the console on the API port (CORS).
            assert srv.http_port != srv.api_port
            browser.eval(f"{row}.querySelector('button.play').click()")
            browser.wait("window.tidecastPlayer && document.getElementById('video').currentTime > 0", 20)
            start = browser.eval("document.getElementById('video').currentTime")
            played = browser.wait(
                f"(() => {{ const v = document.getElementById('video'); const p = window.tidecastPlayer;"
                f" if (p.error || v.error) return 'error: ' + (p.error || v.error.message);"
                f" return v.currentTime - {start} > 5.2 ? v.currentTime : 0; }})()",
                25,
                what="video.currentTime to advance 5 s",
            )
            assert not str(played).startswith("error"), played
            # The codecs string the script read from the init segment (High profile AVC, AAC-LC).
            codecs = browser.eval("window.tidecastPlayer.codecs")
            assert len(codecs) == 2 and codecs[0].startswith("avc1.64") and codecs[1] == "mp4a.40.2", codecs
            assert browser.eval("window.tidecastPlayer.error") == ""
            assert browser.eval("document.getElementById('video').error") is None
            assert any(c["type"] == "mp4-play" for c in _clients(srv))
            browser.wait(f"{row}.querySelector('.players').textContent.includes('mp4 1')")
            IMG.mkdir(parents=True, exist_ok=True)
            browser.screenshot(IMG / "console-streams.png")
            browser.screenshot(IMG / "console-player.png", "#player-section")

            # Kick the FLV player from its row.
            kick = f"document.querySelector('tr[data-client=\"{flv_id}\"] button.kick')"
            browser.wait(f"!!{kick}", what="the FLV player's row")
            browser.eval(f"{kick}.click()")
            wait_for(lambda: all(c["id"] != flv_id for c in _clients(srv)), 10, what="the kicked client to leave")
            browser.wait(f"!{kick}", what="the kicked client's row to go")
            assert watcher.wait(15) is not None
        finally:
            watcher.kill()
            watcher.wait()


def test_shareable_play_page(tidecast: Factory, clip: Path, browser: Browser) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/shared"):
        wait_stream_live(srv, "shared")
        browser.navigate(f"{srv.api}/console/play/live/shared")
        browser.wait("window.tidecastPlayer && document.getElementById('video').currentTime > 0", 20)
        start = browser.eval("document.getElementById('video').currentTime")
        browser.wait(f"document.getElementById('video').currentTime - {start} > 2", 15)
        assert browser.eval("window.tidecastPlayer.error") == ""
        assert browser.eval("document.getElementById('player-title').textContent") == "/live/shared"
        # A stream that is not there: the page says so instead of spinning.
        browser.navigate(f"{srv.api}/console/play/live/absent")
        text = browser.wait("document.getElementById('player-state').textContent.includes('404')", 10)
        assert text


def test_console_asks_for_credentials_when_api_auth_is_on(tmp_path: Path, browser: Browser) -> None:
    srv = TidecastProcess(tmp_path / "auth", vhost=REMUX)
    conf = srv.conf.read_text().replace(
        "allow_reload on; }", "allow_reload on; } auth { enabled on; username admin; password s3cret; }"
    )
    srv.conf.write_text(conf)
    srv.start()
    try:
        status, _, headers = http_get(f"{srv.api}/console/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        status, _, _ = http_get(f"{srv.api}/console/config.json")
        assert status == 401
        browser.call("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})
        challenges = answer_auth(browser, f"{srv.api}/console/", "admin", "s3cret", 4)
        browser.call("Fetch.disable")
        assert challenges, "the browser was never asked for credentials"
        assert challenges[0]["authChallenge"]["scheme"].lower() == "basic"
        assert challenges[0]["authChallenge"]["realm"] == "tidecast"
        # With the credentials given, the page and its API calls work.
        state = browser.wait("document.getElementById('state').textContent === 'ready'", 10)
        assert state
        config = json.loads(json.dumps(browser.eval("fetch('/console/config.json').then(r => r.json())")))
        assert config["api"]["auth"] is True and config["http"]["port"] == srv.http_port
    finally:
        srv.stop()
