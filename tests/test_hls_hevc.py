"""HEVC in MPEG-TS HLS: ffmpeg 9's enhanced-FLV HEVC+AAC muxed by the real HlsMuxer in-process.

The segments must announce stream type 0x24, start on keyframes with
AUD + VPS/SPS/PPS, and decode cleanly, alone and as a playlist, with
Debian's ffmpeg/ffprobe 5.1 and with ffmpeg 9. SRS's legacy HEVC form (codec
id 12) must give the same segments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import m3u8
import pytest
from testkit.ff9 import decode_errors as decode_errors9
from testkit.ff9 import make_clip, needs_ffmpeg9

from test_codec_mpegts import parse_ts, split_pes
from tidecast import config
from tidecast.codec import audio, hevc
from tidecast.codec import video as v
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, FlvReader
from tidecast.codec.mpegts import PMT_PID, STREAM_TYPE_HEVC, VIDEO_PID
from tidecast.hls.segmenter import HlsMuxer

pytestmark = needs_ffmpeg9

Tags = list[tuple[int, int, bytes]]


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> Tags:
    # x265's default open GOP: keyframes are CRA pictures with leading pictures, the hard case.
    clip = make_clip(tmp_path_factory.mktemp("hevc") / "hevc.flv", "hevc", "aac", seconds=6)
    return FlvReader().feed(clip.read_bytes())


def mux(tags: Tags, path: Path, fragment: float = 2.0) -> HlsMuxer:
    hls = dataclasses.replace(config.Hls(enabled=True, hls_fragment=fragment, hls_dispose=0.0), hls_path=str(path))
    muxer = HlsMuxer(hls, "__defaultVhost__", "live", "s")
    muxer.on_publish()
    for type_id, ts, payload in tags:
        muxer.on_message(type_id, ts, payload)
    muxer.on_unpublish()
    return muxer


def ffprobe(path: Path, *args: str) -> Any:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def decode_errors(target: Path) -> str:
    cmd = ["ffmpeg", "-v", "error", "-i", str(target), "-f", "null", "-"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return run.stderr if run.returncode == 0 else f"exit {run.returncode}: {run.stderr}"


def segments(muxer: HlsMuxer) -> list[Path]:
    return [Path(seg.path) for seg in muxer.playlist.segments]


def test_hevc_segments_announce_0x24_and_start_with_parameter_sets(tags: Tags, tmp_path: Path) -> None:
    muxer = mux(tags, tmp_path)
    segs = segments(muxer)
    assert len(segs) == 3  # 6 s at 2 s fragments, keyframe every second
    header = next(p for t, _, p in tags if t == TAG_VIDEO)
    cfg = hevc.parse_config(header[v.classify(header).offset :])
    for seg in segs:
        pes, psi = parse_ts(seg.read_bytes())
        pmt = psi[PMT_PID]
        # pointer, table id, length(2), program(2), version, section(2), PCR PID(2), info length(2), then streams.
        assert pmt[13] == STREAM_TYPE_HEVC and ((pmt[14] & 0x1F) << 8 | pmt[15]) == VIDEO_PID
        video = [p for p in pes if p.pid == VIDEO_PID]
        assert video[0].random_access
        _, pts, dts, first = split_pes(bytes(video[0].data))
        assert first.startswith(hevc.AUD + cfg.annexb_headers())
        assert dts is None or pts >= dts
        # Every access unit starts with an AUD; only keyframes carry the parameter sets.
        units = [split_pes(bytes(p.data))[3] for p in video]
        assert all(u.startswith(hevc.AUD) for u in units)
        assert sum(cfg.annexb_headers() in u for u in units) == 2  # two keyframes per 2 s segment


def test_hevc_segments_probe_and_decode_cleanly(tags: Tags, tmp_path: Path) -> None:
    muxer = mux(tags, tmp_path)
    for seg in segments(muxer):
        info = ffprobe(seg, "-show_streams")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 320, 240)
        assert audio["codec_name"] == "aac"
        # Each segment alone: a player may start at any of them.
        assert decode_errors(seg) == ""
        assert decode_errors9(str(seg)) == ""
        frames = ffprobe(seg, "-select_streams", "v", "-show_frames", "-show_entries", "frame=key_frame")["frames"]
        assert frames[0]["key_frame"] == 1
        assert len(frames) >= 48  # 2 s at 25 fps (open-GOP leading pictures of the first CRA may be skipped)
    playlist = m3u8.load(str(muxer.m3u8_path))
    assert len(playlist.segments) == 3 and all(s.duration == pytest.approx(2.0, abs=0.05) for s in playlist.segments)
    ended = Path(muxer.m3u8_path).with_name("ended.m3u8")
    ended.write_text(Path(muxer.m3u8_path).read_text() + "#EXT-X-ENDLIST\n")
    assert decode_errors(ended) == ""
    count = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
         "stream=nb_read_frames,codec_name", "-of", "json", str(ended)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream = json.loads(count.stdout)["streams"][0]
    assert stream["codec_name"] == "hevc" and int(stream["nb_read_frames"]) >= 148  # of 150


def _legacy(tags: Tags) -> Tags:
    """The same stream in SRS's legacy HEVC form (codec id 12, AVCPacketType and SI24 cts in every frame)."""
    out: Tags = []
    for type_id, ts, payload in tags:
        if type_id == TAG_VIDEO:
            tag = v.classify(payload)
            body = payload[tag.offset : tag.end]
            if tag.is_sequence_header:
                payload = v.sequence_header(v.HEVC, body, enhanced=False)
            elif v.is_coded_frame(tag):
                payload = bytes(((tag.frame_type << 4) | 12, 1)) + (tag.cts & 0xFFFFFF).to_bytes(3, "big") + body
            else:
                continue  # the Metadata packet has no legacy form
        out.append((type_id, ts, payload))
    return out


def test_legacy_hevc_codec_id_12_gives_the_same_segments(tags: Tags, tmp_path: Path) -> None:
    enhanced = segments(mux(tags, tmp_path / "e"))
    legacy = segments(mux(_legacy(tags), tmp_path / "l"))
    assert [p.read_bytes() for p in legacy] == [p.read_bytes() for p in enhanced]


def test_h264_is_still_muxed_as_0x1b(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "h264.flv", "h264", "aac", seconds=2)
    muxer = mux(FlvReader().feed(clip.read_bytes()), tmp_path / "hls", fragment=1.0)
    seg = segments(muxer)[0]
    _, psi = parse_ts(seg.read_bytes())
    assert psi[PMT_PID][13] == 0x1B
    assert decode_errors(seg) == ""


def test_av1_video_is_left_out_of_mpegts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # AV1 has no HLS-over-TS mapping players read: the TS variant carries the audio only, and says so once.
    clip = make_clip(tmp_path / "av1.flv", "av1", "aac", seconds=2)
    with caplog.at_level(logging.WARNING, logger="tidecast.hls"):
        muxer = mux(FlvReader().feed(clip.read_bytes()), tmp_path / "hls", fragment=1.0)
    info = ffprobe(segments(muxer)[0], "-show_streams")
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "live/s: video codec av1 has no MPEG-TS mapping" in warnings[0]


def _enhanced_audio(tags: Tags) -> Tags:
    """AAC in the E-RTMP form (FourCC "mp4a"), as a v2 publisher may send it."""
    out: Tags = []
    for type_id, ts, payload in tags:
        if type_id == TAG_AUDIO:
            payload = (audio.sequence_start if payload[1] == 0 else audio.coded_frames)(audio.AAC, payload[2:])
        out.append((type_id, ts, payload))
    return out


def test_enhanced_rtmp_aac_gives_the_same_segments(tags: Tags, tmp_path: Path) -> None:
    legacy = segments(mux(tags, tmp_path / "l"))
    enhanced = segments(mux(_enhanced_audio(tags), tmp_path / "e"))
    assert [p.read_bytes() for p in enhanced] == [p.read_bytes() for p in legacy]
    assert "aac" in [s["codec_name"] for s in ffprobe(enhanced[0], "-show_streams")["streams"]]


def test_codec_change_within_a_publish_cuts_with_a_new_pmt_and_a_discontinuity(tags: Tags, tmp_path: Path) -> None:
    h264 = FlvReader().feed(make_clip(tmp_path / "h264.flv", "h264", "aac", seconds=4).read_bytes())
    hls = dataclasses.replace(config.Hls(enabled=True, hls_fragment=2.0, hls_dispose=0.0), hls_path=str(tmp_path))
    muxer = HlsMuxer(hls, "__defaultVhost__", "live", "s")
    muxer.on_publish()
    for type_id, ts, payload in h264:
        muxer.on_message(type_id, ts, payload)
    for type_id, ts, payload in tags:  # the encoder switched to HEVC; the clock goes on
        if type_id != 18:
            muxer.on_message(type_id, ts + 4000, payload)
    muxer.on_unpublish()
    segs = muxer.playlist.segments
    types = [parse_ts(Path(seg.path).read_bytes())[1][PMT_PID][13] for seg in segs]
    assert types == [0x1B, 0x1B, STREAM_TYPE_HEVC, STREAM_TYPE_HEVC, STREAM_TYPE_HEVC]
    assert [seg.discontinuity for seg in segs] == [False, False, True, False, False]
    assert "#EXT-X-DISCONTINUITY" in Path(muxer.m3u8_path).read_text()
    for seg in segs:
        assert decode_errors(Path(seg.path)) == ""
