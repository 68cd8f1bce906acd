"""FLV framing: tags and header byte for byte, the incremental reader, garbage handling (with hypothesis)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidecast.codec.flv import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvReader,
    flv_header,
    flv_tag,
    is_keyframe,
    is_sequence_header,
    iter_flv_tags,
)
from tidecast.errors import ProtocolError


def make_bframes_clip(factory: pytest.TempPathFactory) -> Path:
    """6 s of 320x240 H.264 with B-frames (keyframe every second) + AAC, made once per test run."""
    path = factory.getbasetemp() / "bframes.flv"
    if not path.exists():
        tmp = path.with_suffix(".part.flv")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "6",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
             "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bframes_clip(tmp_path_factory)


def test_header_and_tag_layout() -> None:
    assert flv_header(True, True) == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv_header(True, False)[4] == 4 and flv_header(False, True)[4] == 1
    tag = flv_tag(TAG_VIDEO, 0x12345678, b"abc")
    assert tag[:11] == bytes((9, 0, 0, 3, 0x34, 0x56, 0x78, 0x12, 0, 0, 0))
    assert tag[11:14] == b"abc" and tag[14:] == (14).to_bytes(4, "big")


def test_ffmpeg_file_round_trips_byte_for_byte(clip: Path) -> None:
    data = clip.read_bytes()
    tags = list(iter_flv_tags(data))
    assert tags[0][0] == TAG_SCRIPT and {t for t, _, _ in tags} == {TAG_SCRIPT, TAG_AUDIO, TAG_VIDEO}
    assert flv_header(True, True) + b"".join(flv_tag(*tag) for tag in tags) == data


def test_reader_is_incremental(clip: Path) -> None:
    data = clip.read_bytes()
    whole = list(iter_flv_tags(data))
    reader = FlvReader()
    got: list[tuple[int, int, bytes]] = []
    for i in range(0, len(data), 777):
        got += reader.feed(data[i : i + 777])
    assert got == whole
    # A truncated tail is held back, not returned half.
    assert list(iter_flv_tags(data[:-3])) == whole[:-1]


def test_extended_timestamps_survive() -> None:
    data = flv_header(True, True) + flv_tag(TAG_VIDEO, 0x1_0000_00, b"x") + flv_tag(TAG_AUDIO, 0xFFFF_FFFF, b"")
    assert list(iter_flv_tags(data)) == [(TAG_VIDEO, 0x1_0000_00, b"x"), (TAG_AUDIO, 0xFFFF_FFFF, b"")]


@pytest.mark.parametrize(
    "garbage",
    [b"GIF89a" + bytes(20), b"FLV\x01\x05\x00\x00\x00\x00" + bytes(8), flv_header(True, True) + b"\x07" + bytes(20)],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        FlvReader().feed(garbage)


def test_keyframe_and_sequence_header_helpers(clip: Path) -> None:
    tags = list(iter_flv_tags(clip.read_bytes()))
    video = [p for t, _, p in tags if t == TAG_VIDEO]
    video_ts = [ts for t, ts, _ in tags if t == TAG_VIDEO]
    audio = [p for t, _, p in tags if t == TAG_AUDIO]
    assert is_sequence_header(TAG_VIDEO, video[0]) and not any(is_sequence_header(TAG_VIDEO, p) for p in video[1:])
    assert is_sequence_header(TAG_AUDIO, audio[0]) and not any(is_sequence_header(TAG_AUDIO, p) for p in audio[1:])
    keyframes = [ts for ts, p in zip(video_ts[1:], video[1:], strict=True) if is_keyframe(p)]
    # A GOP of 1 s; the last "keyframe" is ffmpeg's AVC end-of-sequence tag (packet type 2).
    assert keyframes[:6] == [0, 1000, 2000, 3000, 4000, 5000] and video[-1][1] == 2
    assert not is_sequence_header(TAG_SCRIPT, b"\x02\x00")
    # Enhanced RTMP: the high bit, frame type in bits 4-6, packet type 0 = sequence start.
    assert is_sequence_header(TAG_VIDEO, b"\x90hvc1") and is_keyframe(b"\x90hvc1")
    assert not is_sequence_header(TAG_VIDEO, b"\x91hvc1") and not is_keyframe(b"\xa1hvc1")
    assert is_sequence_header(TAG_VIDEO, b"\x1c\x00\x00\x00\x00")  # legacy HEVC (codec id 12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans(), st.integers(min_value=1, max_value=50))
def test_fuzz_garbage_raises_only_protocol_errors(data: bytes, with_header: bool, step: int) -> None:
    reader = FlvReader()
    stream = (flv_header(True, True) + data) if with_header else data
    try:
        for i in range(0, len(stream), step):
            for type_id, ts, payload in reader.feed(stream[i : i + step]):
                assert type_id in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT) and 0 <= ts <= 0xFFFFFFFF
                assert isinstance(payload, bytes)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=64)
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=40),
)
def test_fuzz_valid_streams_parse_back_whatever_the_split(tags: list[tuple[int, int, bytes]], step: int) -> None:
    stream = flv_header(True, True) + b"".join(flv_tag(*tag) for tag in tags)
    reader = FlvReader()
    got: list[tuple[int, int, bytes]] = []
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i : i + step])
    assert got == tags
