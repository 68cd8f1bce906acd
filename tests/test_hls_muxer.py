"""The codecs and the HLS muxer, fed a real ffmpeg clip's FLV tags (no server)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidecast.codec import aac, avc
from tidecast.codec.flv import FlvReader, flv_header, flv_tag, iter_flv_tags
from tidecast.codec.mpegts import TsMuxer
from tidecast.config import Hls
from tidecast.errors import ProtocolError
from tidecast.hls.segmenter import HlsMuxer


@pytest.fixture(scope="module")
def bframes_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "b.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "6",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
         "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _mux(clip: Path, out: Path, hls: Hls, publishes: int = 1, speed: float = 0.0) -> HlsMuxer:
    """Feed the clip's tags `publishes` times; `speed` > 0 paces them at that multiple of real time."""
    hls.hls_path = str(out)
    muxer = HlsMuxer(hls, "__defaultVhost__", "live", "s")
    tags = list(iter_flv_tags(clip.read_bytes()))
    offset = 0
    for _ in range(publishes):
        muxer.on_publish()
        last = 0
        started = time.monotonic()
        for type_id, ts, payload in tags:
            if speed:
                delay = started + ts / 1000.0 / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            muxer.on_message(type_id, ts + offset, payload)
            last = ts + offset
        muxer.on_unpublish()
        offset = last + 40
    return muxer


def _video_packets(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_packets", "-show_entries",
         "packet=flags,dts_time", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return list(json.loads(out.stdout)["packets"])


def test_flv_round_trip_and_reader_errors() -> None:
    data = flv_header(True, True) + flv_tag(9, 0x1234567, b"abc") + flv_tag(8, 5, b"")
    assert list(iter_flv_tags(data)) == [(9, 0x1234567, b"abc"), (8, 5, b"")]
    reader = FlvReader()
    assert reader.feed(data[:20]) == [] and len(reader.feed(data[20:])) == 2
    with pytest.raises(ProtocolError):
        FlvReader().feed(b"GIF89a" + bytes(20))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_flv_reader_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        FlvReader().feed(flv_header(True, True) + data)
    except ProtocolError:
        pass


def test_sps_dimensions_and_aac_config(bframes_clip: Path) -> None:
    tags = list(iter_flv_tags(bframes_clip.read_bytes()))
    video_sh = next(p for t, _, p in tags if t == 9 and p[1] == 0)
    config = avc.parse_config(video_sh[5:])
    assert avc.parse_sps(config.sps[0]) == (320, 240)
    audio_sh = next(p for t, _, p in tags if t == 8 and p[1] == 0)
    asc = aac.parse_config(audio_sh[2:])
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 44100, 1)


def test_adts_stream_is_read_by_ffprobe(bframes_clip: Path, tmp_path: Path) -> None:
    tags = list(iter_flv_tags(bframes_clip.read_bytes()))
    asc = aac.parse_config(next(p for t, _, p in tags if t == 8 and p[1] == 0)[2:])
    frames = [p[2:] for t, _, p in tags if t == 8 and p[1] == 1]
    out = tmp_path / "a.aac"
    out.write_bytes(b"".join(aac.adts_header(asc, len(f)) + f for f in frames))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)], capture_output=True, text=True
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "aac" and stream["sample_rate"] == "44100"


def test_ts_packets_are_188_bytes_with_continuous_counters() -> None:
    muxer = TsMuxer()
    data = muxer.tables(True, True) + b"".join(
        muxer.pes(0x100, 0xE0, bytes(range(256)) * (n % 7 + 1), 90000 + n, 90000 + n, n % 3 == 0, n == 0)
        for n in range(40)
    )
    assert len(data) % 188 == 0
    counters: dict[int, int] = {}
    for i in range(0, len(data), 188):
        packet = data[i : i + 188]
        assert packet[0] == 0x47
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        cc = packet[3] & 0x0F
        if pid in counters:
            assert cc == (counters[pid] + 1) & 0x0F
        counters[pid] = cc


def test_segments_start_on_keyframes_decode_cleanly_and_continue(bframes_clip: Path, tmp_path: Path) -> None:
    muxer = _mux(bframes_clip, tmp_path, Hls(hls_fragment=2.0, hls_dispose=0))
    playlist = m3u8.load(muxer.m3u8_path)
    assert playlist.target_duration == 2 and len(playlist.segments) == 3
    assert abs(sum(s.duration for s in playlist.segments) - 6.0) < 0.2
    previous_end = None
    for seg in playlist.segments:
        path = tmp_path / "live" / seg.uri
        errors = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
        ).stderr
        assert errors == "", errors
        packets = _video_packets(path)
        assert packets[0]["flags"].startswith("K"), "a segment does not start with a keyframe"
        first_dts = float(packets[0]["dts_time"])
        if previous_end is not None:
            assert abs(first_dts - previous_end) < 0.05, (first_dts, previous_end)
        previous_end = float(packets[-1]["dts_time"]) + 0.04
    # A live playlist has no ENDLIST: ffmpeg would wait for more, so read 5.5 of its 6 s.
    whole = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", muxer.m3u8_path, "-t", "5.5", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert whole.returncode == 0 and whole.stderr == ""


def test_window_by_duration_and_cleanup(bframes_clip: Path, tmp_path: Path) -> None:
    muxer = _mux(bframes_clip, tmp_path, Hls(hls_fragment=1.0, hls_window=3.0, hls_dispose=0))
    playlist = m3u8.load(muxer.m3u8_path)
    assert 3.0 <= sum(s.duration for s in playlist.segments) < 4.1
    on_disk = {p.name for p in (tmp_path / "live").glob("*.ts")}
    listed = {s.uri for s in playlist.segments}
    # Everything listed is there; of the rest only the recently dropped linger (RFC 8216 6.2.2).
    assert listed <= on_disk, (on_disk, listed)
    newest_dropped = min(int(name[2:-3]) for name in listed)
    assert all(int(name[2:-3]) < newest_dropped for name in on_disk - listed)
    assert playlist.media_sequence == 6 - len(playlist.segments)


def test_republish_adds_a_discontinuity_and_dispose_removes_only_ours(bframes_clip: Path, tmp_path: Path) -> None:
    muxer = _mux(bframes_clip, tmp_path, Hls(hls_fragment=2.0, hls_dispose=5.0), publishes=2)
    text = Path(muxer.m3u8_path).read_text()
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    playlist = m3u8.loads(text)
    assert [s.uri for s in playlist.segments][:4] == ["s-0.ts", "s-1.ts", "s-2.ts", "s-3.ts"]
    other = tmp_path / "live" / "other-0.ts"
    other.write_bytes(b"x")
    assert not muxer.maybe_dispose(muxer.last_message + 1)
    assert muxer.maybe_dispose(muxer.last_message + 6)
    assert not Path(muxer.m3u8_path).exists() and list((tmp_path / "live").glob("s-*")) == []
    assert other.exists()


def test_leftovers_of_a_crash_are_cleaned_on_publish(bframes_clip: Path, tmp_path: Path) -> None:
    stale = tmp_path / "live" / "s-77.ts"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (tmp_path / "live" / "s-78.ts.tmp").write_bytes(b"old")
    _mux(bframes_clip, tmp_path, Hls(hls_fragment=2.0))
    assert not stale.exists() and not (tmp_path / "live" / "s-78.ts.tmp").exists()


def test_a_reader_never_sees_a_dangling_or_partial_file(bframes_clip: Path, tmp_path: Path) -> None:
    hls = Hls(hls_fragment=0.5, hls_window=1.5, hls_dispose=0)
    problems: list[str] = []
    stop = threading.Event()
    playlist = tmp_path / "live" / "s.m3u8"

    def reader() -> None:
        while not stop.is_set():
            try:
                text = playlist.read_text()
            except FileNotFoundError:
                continue
            for seg in m3u8.loads(text).segments:
                try:
                    size = (playlist.parent / seg.uri).stat().st_size
                except FileNotFoundError:
                    problems.append(f"missing {seg.uri}")
                    continue
                if size % 188:
                    problems.append(f"partial {seg.uri}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        _mux(bframes_clip, tmp_path, hls, publishes=3, speed=10.0)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:5]
