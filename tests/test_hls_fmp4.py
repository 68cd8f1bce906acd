"""HLS in fMP4 (CMAF): `hls_variant fmp4`.

In-process: real FLV clips (Debian's ffmpeg for H.264+AAC, ffmpeg 9 for HEVC,
AV1, VP9 and Opus) through the real Fmp4Muxer; the playlists are read back
and decoded by ffmpeg. Through a real tidecast: ffmpeg publishes, ffprobe
plays the playlist over tidecast's HTTP server.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import m3u8
import pytest
from testkit import ff9
from testkit.helpers import Publisher, TidecastProcess, ffprobe_json, http_get, wait_for, wait_stream_live

from tidecast import config
from tidecast.codec.flv import FlvReader
from tidecast.hls.fmp4 import Fmp4Muxer

Tags = list[tuple[int, int, bytes]]
Factory = Callable[..., TidecastProcess]


def mux(tags: Tags, path: Path, fragment: float = 1.0, variant: str = "fmp4") -> Fmp4Muxer:
    hls = dataclasses.replace(
        config.Hls(enabled=True, hls_fragment=fragment, hls_dispose=0.0, hls_variant=variant), hls_path=str(path)
    )
    muxer = Fmp4Muxer(hls, "__defaultVhost__", "live", "s")
    muxer.on_publish()
    for type_id, ts, payload in tags:
        muxer.on_message(type_id, ts, payload)
    muxer.on_unpublish()
    assert not muxer._error_logged, "the muxer reported an error"
    return muxer


def boxes(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 8])
        pos += size
    return out


def ended(playlist: str) -> str:
    """A copy of a live playlist with EXT-X-ENDLIST, so ffmpeg reads it to the end instead of waiting for more."""
    path = Path(playlist)
    copy = path.with_name("vod-" + path.name)
    copy.write_text(path.read_text() + "#EXT-X-ENDLIST\n")
    return str(copy)


def decode_errors(target: Path) -> str:
    cmd = ["ffmpeg", "-v", "error", "-i", ended(str(target)), "-f", "null", "-"]
    run = subprocess.run(cmd, capture_output=True, timeout=60)
    return run.stderr.decode() if run.returncode == 0 else f"exit {run.returncode}: {run.stderr.decode()}"


@pytest.fixture(scope="module")
def h264_tags(clip: Path) -> Tags:
    return FlvReader().feed(clip.read_bytes())


def test_h264_aac_playlist_is_version_7_with_map_and_decodes(h264_tags: Tags, tmp_path: Path) -> None:
    muxer = mux(h264_tags, tmp_path)
    text = Path(muxer.m3u8_path).read_text()
    parsed = m3u8.loads(text)
    assert "#EXT-X-VERSION:7" in text and text.count("#EXT-X-MAP:URI=") == 1
    assert len(parsed.segments) == 6 and all(s.uri.endswith(".m4s") for s in parsed.segments)
    assert abs(sum(s.duration for s in parsed.segments) - 6.0) < 0.1
    init = tmp_path / "live" / parsed.segments[0].init_section.uri
    assert boxes(init.read_bytes()) == [b"ftyp", b"moov"]
    assert b"avcC" in init.read_bytes() and b"esds" in init.read_bytes()
    for seg in parsed.segments:
        kinds = boxes((tmp_path / "live" / seg.uri).read_bytes())
        assert kinds[0] == b"moof" and set(kinds) == {b"moof", b"mdat"}  # one fragment a second
    info = ffprobe_json(muxer.m3u8_path)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert decode_errors(Path(muxer.m3u8_path)) == ""
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"


def test_republish_with_another_codec_gets_a_new_init_and_a_discontinuity(h264_tags: Tags, tmp_path: Path) -> None:
    if ff9.FFMPEG9 is None:
        pytest.skip("needs the imageio-ffmpeg wheel")
    hevc = FlvReader().feed(ff9.make_clip(tmp_path / "hevc.flv", "hevc", "aac", seconds=3).read_bytes())
    hls = dataclasses.replace(config.Hls(enabled=True, hls_fragment=1.0, hls_variant="fmp4"), hls_path=str(tmp_path))
    muxer = Fmp4Muxer(hls, "__defaultVhost__", "live", "s")
    for tags in (h264_tags, hevc):
        muxer.on_publish()
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts, payload)
        muxer.on_unpublish()
    parsed = m3u8.loads(Path(muxer.m3u8_path).read_text())
    maps = [s.init_section.uri for s in parsed.segments]
    assert maps[0] != maps[-1] and set(maps) == {maps[0], maps[-1]}
    first_hevc = maps.index(maps[-1])
    assert parsed.segments[first_hevc].discontinuity and not any(s.discontinuity for s in parsed.segments[:first_hevc])
    assert b"hvcC" in (tmp_path / "live" / maps[-1]).read_bytes()
    joined = tmp_path / "last.mp4"  # what a player decodes after the discontinuity: the new init, then a segment
    live = tmp_path / "live"
    joined.write_bytes((live / maps[-1]).read_bytes() + (live / parsed.segments[-1].uri).read_bytes())
    assert [s["codec"] for s in ff9.streams(str(joined))] == ["hevc", "aac"]


def test_a_new_run_numbers_its_init_segments_after_the_old_runs(h264_tags: Tags, tmp_path: Path) -> None:
    """A killed run (or the previous owner on a shared hls_path) left init-0: ours is init-1, and init-0 stays
    as long as its segments do, so no init name comes back with other tracks."""
    first = mux(h264_tags, tmp_path)
    old_init = tmp_path / "live" / "s-init-0.mp4"
    assert old_init.exists() and first.init_count == 1
    second = mux(h264_tags, tmp_path)  # a new muxer: another process's view of the same directory
    parsed = m3u8.loads(Path(second.m3u8_path).read_text())
    assert {s.init_section.uri for s in parsed.segments} == {"s-init-1.mp4"}
    assert parsed.media_sequence == 6 and parsed.segments[0].discontinuity
    assert old_init.exists()  # 6 s of ours < 1 s + the old playlist's 6 s
    assert decode_errors(Path(second.m3u8_path)) == ""


@ff9.needs_ffmpeg9
@pytest.mark.parametrize(
    ("video", "audio", "config_box"),
    [("hevc", "aac", b"hvcC"), ("av1", "aac", b"av1C"), ("vp9", "opus", b"vpcC")],
)
def test_every_codec_reads_back_with_ffmpeg9(video: str, audio: str, config_box: bytes, tmp_path: Path) -> None:
    clip = ff9.make_clip(tmp_path / f"{video}.flv", video, audio, seconds=3)
    muxer = mux(FlvReader().feed(clip.read_bytes()), tmp_path / "hls")
    parsed = m3u8.loads(Path(muxer.m3u8_path).read_text())
    assert len(parsed.segments) == 3
    init = (Path(muxer.m3u8_path).parent / parsed.segments[0].init_section.uri).read_bytes()
    assert config_box in init and (b"dOps" if audio == "opus" else b"esds") in init
    if video != "vp9":  # VP9's size is in its keyframes only
        entry = init.index(video.replace("hevc", "hvc1").replace("av1", "av01").encode())
        assert init[entry + 4 + 24 : entry + 4 + 28] == (320).to_bytes(2, "big") + (240).to_bytes(2, "big")
    found = ff9.streams(ended(muxer.m3u8_path))
    assert [s["codec"] for s in found] == [video, audio]
    assert found[0]["width"] == 320 and found[0]["height"] == 240
    assert ff9.decode_errors(ended(muxer.m3u8_path)) == ""


def test_served_by_tidecast_and_played_by_ffprobe(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    hls_dir = tmp_path / "hls"
    srv = tidecast(vhost=f"hls {{ enabled on; hls_variant fmp4; hls_fragment 1; hls_window 6; hls_path {hls_dir}; }}")
    with Publisher(clip, f"{srv.rtmp}/live/tv"):
        wait_stream_live(srv, "tv")
        playlist = hls_dir / "live" / "tv.m3u8"
        wait_for(lambda: playlist.exists() and playlist.read_text().count("#EXTINF") >= 3, 15, what="3 segments")
        status, body, headers = http_get(f"{srv.http}/live/tv.m3u8")
        assert status == 200 and b"#EXT-X-MAP" in body and b"#EXT-X-PART" not in body
        parsed = m3u8.loads(body.decode())
        status, init, headers = http_get(f"{srv.http}/live/{parsed.segments[0].init_section.uri}")
        assert status == 200 and headers["Content-Type"] == "video/mp4" and boxes(init)[:2] == [b"ftyp", b"moov"]
        status, seg, headers = http_get(f"{srv.http}/live/{parsed.segments[-1].uri}")
        assert status == 200 and headers["Content-Type"] == "video/iso.segment" and boxes(seg)[0] == b"moof"
        info = ffprobe_json(f"{srv.http}/live/tv.m3u8")
        assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
