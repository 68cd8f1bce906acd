"""Enhanced RTMP end to end: ffmpeg 9 publishes HEVC/AV1/VP9 (with AAC or Opus) to a real tidecast.

ffmpeg 9 reads the stream back over RTMP and HTTP-FLV and must find the same
codecs and size; a recording of the HTTP-FLV decodes cleanly; /api/v1/streams
names the codec, profile and size; for HEVC the HLS segments carry HEVC.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit.ff9 import FFMPEG9, decode_errors, make_clip, needs_ffmpeg9, streams
from testkit.helpers import TidecastProcess, ffprobe_json, wait_for, wait_stream_live
from testkit.rtmpclient import RtmpTestClient

from tidecast.codec.audio import classify_audio
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, FlvReader
from tidecast.codec.video import classify, is_coded_frame

pytestmark = needs_ffmpeg9

Factory = Callable[..., TidecastProcess]
VHOST = (
    "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }\n"
    "hls { enabled on; hls_fragment 1; hls_window 6; hls_path ./html; }\n"
)
CASES = {
    # codec, audio, ffmpeg's names, the API's video codec and profile
    "hevc": ("hevc", "aac", "HEVC", "Main"),
    "av1": ("av1", "aac", "AV1", "Main"),
    "vp9": ("vp9", "opus", "VP9", "Profile 0"),
}


class Ffmpeg9Publisher:
    """ffmpeg 9 looping an enhanced-FLV clip in real time to an RTMP URL (E-RTMP on the wire)."""

    def __init__(self, clip: Path, url: str, log: Path) -> None:
        assert FFMPEG9 is not None
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 -- the child writes it for its life
        self.proc = subprocess.Popen(
            [FFMPEG9, "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv", url],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._out,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ertmp")
    return {
        name: make_clip(d / f"{name}.flv", video, audio, size="352x288", seconds=4)
        for name, (video, audio, _, _) in CASES.items()
    }


@pytest.fixture
def published(
    request: pytest.FixtureRequest, tidecast: Factory, clips: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[str, TidecastProcess]]:
    name = request.param
    srv = tidecast(vhost=VHOST)
    pub = Ffmpeg9Publisher(clips[name], f"{srv.rtmp}/live/{name}", tmp_path / "publisher.log")
    try:
        wait_stream_live(srv, name, timeout=15)
        yield name, srv
    finally:
        pub.stop()
        assert pub.proc.returncode in (0, -15, 255), pub.log.read_text()


def _join_burst(srv: TidecastProcess, name: str, seconds: float = 1.0) -> list[tuple[int, int, bytes]]:
    """The first tags a late HTTP-FLV player gets (the join burst and a little more)."""
    reader = FlvReader()
    tags: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(f"{srv.http}/live/{name}.flv", timeout=5) as resp:
        while time.monotonic() < deadline:
            tags += reader.feed(resp.read1(65536))
    return tags


def _check_api_and_join_burst(srv: TidecastProcess, name: str) -> None:
    video, audio, api_codec, api_profile = CASES[name]

    # The API (SRS's stream object shape) knows the codec, profile and size.
    def described() -> dict[str, object] | None:
        for s in srv.api_json("/api/v1/streams?count=100")["streams"]:
            if s["name"] == name and s["video"] and s["video"]["width"] and s["audio"]:
                return dict(s)
        return None

    stream = wait_for(described, 5, what=f"{name}'s size and audio in /api/v1/streams")
    assert stream["video"]["codec"] == api_codec and stream["video"]["profile"] == api_profile
    assert (stream["video"]["width"], stream["video"]["height"]) == (352, 288)
    assert stream["audio"]["codec"] == {"aac": "AAC", "opus": "Opus"}[audio]
    assert stream["audio"]["sample_rate"] == (48000 if audio == "opus" else 44100)
    # A late joiner starts with both decoder configurations, then a keyframe.
    tags = _join_burst(srv, name)
    first_video = next(classify(p) for t, _, p in tags if t == TAG_VIDEO)
    first_audio = next(classify_audio(p) for t, _, p in tags if t == TAG_AUDIO)
    assert first_video.is_sequence_header and first_video.codec == video
    assert first_audio.is_sequence_header and first_audio.codec == audio
    frames = [classify(p) for t, _, p in tags if t == TAG_VIDEO and is_coded_frame(classify(p))]
    assert frames and frames[0].is_keyframe


@pytest.mark.parametrize("published", list(CASES), indirect=True)
def test_enhanced_rtmp_round_trip(published: tuple[str, TidecastProcess], tmp_path: Path) -> None:
    name, srv = published
    video, audio, _, _ = CASES[name]
    if name != "vp9":  # see test_vp9_opus_api_and_join_burst
        _check_api_and_join_burst(srv, name)
    # RTMP and HTTP-FLV players get the same codecs.
    expected = [
        {"type": "video", "codec": video, "width": 352, "height": 288},
        {"type": "audio", "codec": audio},
    ]
    for url in (f"{srv.rtmp}/live/{name}", f"{srv.http}/live/{name}.flv"):
        assert sorted(streams(url), key=lambda s: s["type"], reverse=True) == expected, url
    # A 2 s recording of the HTTP-FLV decodes cleanly from its first frame on.
    assert FFMPEG9 is not None
    out = tmp_path / f"{name}.mkv"
    rec = subprocess.run(
        [FFMPEG9, "-v", "error", "-rw_timeout", "15000000", "-i", f"{srv.http}/live/{name}.flv", "-t", "2",
         "-c", "copy", "-y", str(out)],
        capture_output=True, timeout=40,
    )  # fmt: skip
    assert rec.returncode == 0, rec.stderr.decode(errors="replace")
    assert decode_errors(str(out)) == ""
    if video == "hevc":
        # HLS over MPEG-TS carries the HEVC (stream type 0x24).
        m3u8 = srv.workdir / "html" / "live" / f"{name}.m3u8"
        wait_for(lambda: m3u8.exists() and ".ts" in m3u8.read_text(), 10, what="the HEVC playlist")
        segment = m3u8.parent / next(line for line in m3u8.read_text().splitlines() if line.endswith(".ts"))
        probed = ffprobe_json(str(segment))["streams"]
        assert sorted(s["codec_name"] for s in probed) == ["aac", "hevc"]


def test_hevc_and_av1_through_an_edge(tidecast: Factory, clips: dict[str, Path], tmp_path: Path) -> None:
    origin = tidecast("origin", vhost=VHOST)
    edge = tidecast("edge", vhost=VHOST + f"cluster {{ mode remote; origin 127.0.0.1:{origin.rtmp_port}; }}\n")
    pubs = [Ffmpeg9Publisher(clips[n], f"{origin.rtmp}/live/{n}", tmp_path / f"{n}.log") for n in ("hevc", "av1")]
    try:
        for name in ("hevc", "av1"):
            wait_stream_live(origin, name, timeout=15)
            video, audio, api_codec, _ = CASES[name]
            expected = [
                {"type": "video", "codec": video, "width": 352, "height": 288},
                {"type": "audio", "codec": audio},
            ]
            # The first player makes the edge pull from the origin; the second reads the edge's cache.
            for url in (f"{edge.rtmp}/live/{name}", f"{edge.http}/live/{name}.flv"):
                assert sorted(streams(url), key=lambda s: s["type"], reverse=True) == expected, url
            on_edge = next(s for s in edge.api_json("/api/v1/streams?count=100")["streams"] if s["name"] == name)
            assert on_edge["video"]["codec"] == api_codec and on_edge["video"]["width"] == 352
    finally:
        for pub in pubs:
            pub.stop()


@pytest.mark.parametrize("published", ["vp9"], indirect=True)
def test_vp9_opus_api_and_join_burst(published: tuple[str, TidecastProcess]) -> None:
    # The OpusHead is cached for late joiners once live/stream.py uses classify_audio, and VP9's
    # size needs describe_codecs to pass the GOP's keyframe to describe_video.
    name, srv = published
    _check_api_and_join_burst(srv, name)


class RawPublisher:
    """Publishes FLV tags as they are, paced in real time and looped: a wire form ffmpeg cannot send."""

    def __init__(self, srv: TidecastProcess, stream: str, tags: list[tuple[int, int, bytes]]) -> None:
        self.client = RtmpTestClient(srv.host, srv.rtmp_port)
        session = self.client.session
        session.create_stream()
        self.client._flush()
        self.client._wait_result("createStream", 10.0)
        session.publish(stream)
        self.client._flush()
        self.client.wait_status("NetStream.Publish.Start")
        self.tags = [t for t in tags if t[0] in (TAG_AUDIO, TAG_VIDEO)]
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        session, sock = self.client.session, self.client.sock

        def header(type_id: int, payload: bytes) -> bool:
            tag = classify(payload) if type_id == TAG_VIDEO else classify_audio(payload)
            return tag.is_sequence_header

        # The sequence headers go once; the media loops with a continuing clock.
        media = [t for t in self.tags if not header(t[0], t[2])]
        span = self.tags[-1][1] + 40
        start = time.monotonic()
        for loop in itertools.count():
            for type_id, ts, payload in self.tags if loop == 0 else media:
                at = loop * span + ts
                delay = start + at / 1000 - time.monotonic()
                if delay > 0 and self.stop_flag.wait(delay):
                    return
                sock.sendall(session.send_media(type_id, at, payload))

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        self.client.close()


def test_srs_legacy_hevc_codec_id_12(tidecast: Factory, clips: dict[str, Path]) -> None:
    from test_hls_hevc import _legacy

    srv = tidecast(vhost=VHOST)
    legacy = _legacy(FlvReader().feed(clips["hevc"].read_bytes()))
    assert all(p[0] & 0x8F == 12 for t, _, p in legacy if t == TAG_VIDEO)  # no E-RTMP bit, codec id 12
    pub = RawPublisher(srv, "legacy", legacy)
    try:
        wait_stream_live(srv, "legacy", timeout=15)
        stream = next(s for s in srv.api_json("/api/v1/streams?count=100")["streams"] if s["name"] == "legacy")
        assert stream["video"] == {"codec": "HEVC", "profile": "Main", "level": stream["video"]["level"],
                                   "width": 352, "height": 288}  # fmt: skip
        # Relayed unchanged: the join burst is in the legacy form, and ffmpeg 9 reads it as HEVC.
        tags = _join_burst(srv, "legacy")
        first = next(p for t, _, p in tags if t == TAG_VIDEO)
        assert first[:2] == b"\x1c\x00"
        for url in (f"{srv.rtmp}/live/legacy", f"{srv.http}/live/legacy.flv"):
            found = sorted(streams(url), key=lambda s: s["type"], reverse=True)
            assert found == [{"type": "video", "codec": "hevc", "width": 352, "height": 288},
                             {"type": "audio", "codec": "aac"}], url  # fmt: skip
        m3u8 = srv.workdir / "html" / "live" / "legacy.m3u8"
        wait_for(lambda: m3u8.exists() and ".ts" in m3u8.read_text(), 10, what="the legacy HEVC playlist")
        segment = m3u8.parent / next(line for line in m3u8.read_text().splitlines() if line.endswith(".ts"))
        assert sorted(s["codec_name"] for s in ffprobe_json(str(segment))["streams"]) == ["aac", "hevc"]
    finally:
        pub.close()
