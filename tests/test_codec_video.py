"""codec.video.classify / codec.audio.classify_audio: legacy FLV and E-RTMP tag bodies, on ffmpeg 9's real output."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit.ff9 import make_clip, needs_ffmpeg9

from tidecast.codec import av1, hevc, vp9
from tidecast.codec import video as v
from tidecast.codec.audio import (
    AAC,
    CODED_FRAMES,
    MULTICHANNEL_CONFIG,
    OPUS,
    SEQUENCE_START,
    classify_audio,
    coded_frames,
    sequence_start,
)
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags
from tidecast.errors import ProtocolError

pytestmark = needs_ffmpeg9


def _tags(path: Path, type_id: int) -> list[bytes]:
    return [p for t, _, p in iter_flv_tags(path.read_bytes()) if t == type_id]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "hevc": make_clip(d / "hevc.flv", "hevc", "aac", seconds=2),
        "av1": make_clip(d / "av1.flv", "av1", "opus", seconds=2),
        "vp9": make_clip(d / "vp9.flv", "vp9", None, seconds=2),
        "h264": make_clip(d / "h264.flv", "h264", "aac", seconds=2),
    }


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9", "h264"])
def test_ffmpeg9_output_is_classified(clips: dict[str, Path], codec: str) -> None:
    tags = [v.classify(p) for p in _tags(clips[codec], TAG_VIDEO)]
    name = {"h264": v.AVC}.get(codec, codec)
    assert {t.codec for t in tags} == {name}
    assert tags[0].is_sequence_header and tags[0].packet_type == v.SEQUENCE_START
    assert sum(t.is_sequence_header for t in tags) == 1
    # 2 s at 25 fps, a keyframe every 25 frames: exactly two keyframes, the first frame one of them.
    frames = [t for t in tags if v.is_coded_frame(t)]
    assert len(frames) == 50
    assert frames[0].is_keyframe and sum(t.is_keyframe for t in frames) == 2
    assert all(t.enhanced == (codec != "h264") for t in tags)
    if codec == "h264":
        assert all(t.offset == 5 for t in tags)
    else:
        # ffmpeg 9 sends a Metadata packet (colorInfo, frame type 5) after the sequence start.
        meta = [t for t in tags if t.packet_type == v.METADATA]
        assert len(meta) == 1 and not meta[0].is_keyframe and not meta[0].is_sequence_header
    if codec in ("hevc", "h264"):
        assert any(t.cts > 0 for t in frames)  # B-frames: some composition offsets are positive
    if codec == "hevc":
        # ffmpeg 9 sends CodedFramesX (no SI24) when the offset is 0, CodedFrames with it otherwise.
        assert {t.packet_type for t in frames} == {v.CODED_FRAMES, v.CODED_FRAMES_X}
        assert all(t.offset == (5 if t.packet_type == v.CODED_FRAMES_X else 8) for t in frames)
        assert all(t.cts == 0 for t in frames if t.packet_type == v.CODED_FRAMES_X)
    if codec in ("av1", "vp9"):
        assert all(t.cts == 0 and t.offset == 5 for t in frames)  # AV1/VP9 frames carry no composition time


def test_the_codec_data_offset_points_at_the_record(clips: dict[str, Path]) -> None:
    for codec, first in (("hevc", 1), ("av1", 0x81), ("vp9", 1)):
        payload = _tags(clips[codec], TAG_VIDEO)[0]
        tag = v.classify(payload)
        assert payload[tag.offset] == first and tag.end == len(payload)
    frame = next(p for p in _tags(clips["hevc"], TAG_VIDEO) if v.classify(p).is_keyframe)
    tag = v.classify(frame)
    nal_size = int.from_bytes(frame[tag.offset : tag.offset + 4], "big")
    assert tag.offset + 4 + nal_size <= len(frame)


def test_legacy_forms() -> None:
    # AVC (codec id 7) and SRS's legacy HEVC (codec id 12): AVCPacketType and SI24 cts.
    for codec_id, name in ((7, v.AVC), (12, v.HEVC)):
        header = v.classify(bytes((0x10 | codec_id, 0, 0, 0, 0, 1, 2)))
        assert (header.codec, header.is_sequence_header, header.is_keyframe, header.offset) == (name, True, False, 5)
        key = v.classify(bytes((0x10 | codec_id, 1, 0xFF, 0xFF, 0xD8, 0, 0, 0, 1)))  # cts -40
        assert (key.packet_type, key.is_keyframe, key.cts, key.offset) == (v.CODED_FRAMES, True, -40, 5)
        assert not key.enhanced
        inter = v.classify(bytes((0x20 | codec_id, 1, 0, 0, 80, 0)))
        assert (inter.is_keyframe, inter.cts) == (False, 80)
        end = v.classify(bytes((0x10 | codec_id, 2, 0, 0, 0)))
        assert end.packet_type == v.SEQUENCE_END and not end.is_keyframe and not end.is_sequence_header
    # Other legacy codecs: a frame from byte 1 on.
    vp6 = v.classify(b"\x14\x00abc")
    assert (vp6.codec, vp6.is_keyframe, vp6.offset) == ("vp6", True, 1)
    # A command frame (type 5) is neither header nor keyframe.
    cmd = v.classify(b"\x57\x00")
    assert not cmd.is_keyframe and not cmd.is_sequence_header and cmd.frame_type == v.COMMAND_FRAME


def test_enhanced_forms_built_by_hand() -> None:
    assert v.classify(v.sequence_header(v.HEVC, b"\x01rec")) == (
        v.HEVC, v.SEQUENCE_START, 1, True, False, 0, 5, 9, True,
    )  # fmt: skip
    assert v.classify(v.coded_frame(v.HEVC, b"data", True, cts=-2)).cts == -2
    x = v.classify(v.coded_frame(v.HEVC, b"data", True))
    assert (x.packet_type, x.offset, x.is_keyframe) == (v.CODED_FRAMES_X, 5, True)
    av1 = v.classify(v.coded_frame(v.AV1, b"obus", False))
    assert (av1.packet_type, av1.offset, av1.is_keyframe) == (v.CODED_FRAMES, 5, False)
    # E-RTMP AVC ("avc1") is the legacy bit layout's equal.
    avc = v.classify(v.coded_frame(v.AVC, b"nal", True, cts=40, enhanced=True))
    assert (avc.codec, avc.cts, avc.offset, avc.enhanced) == (v.AVC, 40, 8, True)
    assert v.sequence_header(v.HEVC, b"r", enhanced=False)[:2] == b"\x1c\x00"
    with pytest.raises(ValueError, match="legacy"):
        v.sequence_header(v.AV1, b"r", enhanced=False)
    # MPEG2TSSequenceStart is a sequence header too; SequenceEnd is not.
    assert v.classify(b"\x95av01desc").is_sequence_header
    assert not v.classify(b"\x92hvc1").is_sequence_header
    # An unknown FourCC is relayed as an unknown codec, not dropped.
    odd = v.classify(b"\x91xyz1data")
    assert (odd.codec, odd.is_keyframe) == (v.UNKNOWN, True)


def test_mod_ex_and_multitrack() -> None:
    # ModEx (TimestampOffsetNano, 3 bytes) wrapping a CodedFrames HEVC keyframe with cts 40.
    body = b"\x00\x00\x28nal"
    modex = bytes((0x90 | v.MOD_EX, 2)) + b"\x01\x02\x03" + bytes((0x00 | v.CODED_FRAMES,)) + b"hvc1" + body
    tag = v.classify(modex)
    assert (tag.codec, tag.packet_type, tag.is_keyframe, tag.cts, modex[tag.offset :]) == (v.HEVC, 1, True, 40, b"nal")
    # Multitrack, one track: FourCC, trackId, then the track's body.
    one = bytes((0x90 | v.MULTITRACK, (v.ONE_TRACK << 4) | v.CODED_FRAMES_X)) + b"av01" + b"\x00" + b"obu"
    tag = v.classify(one)
    assert (tag.codec, tag.packet_type, one[tag.offset : tag.end]) == (v.AV1, v.CODED_FRAMES_X, b"obu")
    # Many tracks, many codecs: the first track's FourCC, id and UI24 size bound its data.
    many = bytes((0x90 | v.MULTITRACK, (v.MANY_TRACKS_MANY_CODECS << 4) | v.SEQUENCE_START))
    many += b"hvc1" + b"\x00" + b"\x00\x00\x03" + b"rec" + b"av01" + b"\x01" + b"\x00\x00\x02" + b"r2"
    tag = v.classify(many)
    assert (tag.codec, tag.is_sequence_header, many[tag.offset : tag.end]) == (v.HEVC, True, b"rec")


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x17", b"\x17\x01\x00", b"\x91hv", b"\x97", b"\x97\xff", b"\x96", b"\x96\x10av01\x00\x00", b"\x97\x05abc"],
)
def test_truncated_payloads_are_invalid_not_errors(payload: bytes) -> None:
    tag = v.classify(payload)
    assert tag == v.INVALID and not tag.is_keyframe and not tag.is_sequence_header


def test_every_prefix_of_real_tags_classifies(clips: dict[str, Path]) -> None:
    # Fuzz-ish: no prefix of a real tag (nor a flipped byte) may raise.
    for codec in ("hevc", "av1", "vp9"):
        for payload in _tags(clips[codec], TAG_VIDEO)[:4]:
            for n in range(min(len(payload), 24)):
                v.classify(payload[:n])
                v.classify(payload[:n] + bytes((payload[n] ^ 0xFF,)) + payload[n + 1 : 32])


def test_classify_is_fast(clips: dict[str, Path]) -> None:
    payloads = _tags(clips["hevc"], TAG_VIDEO)[:20]
    n = 20_000
    start = time.perf_counter()
    for _ in range(n // len(payloads)):
        for p in payloads:
            v.classify(p)
    per_call = (time.perf_counter() - start) / n
    # About 1 µs on the 2-core CI box; 20 µs would mean something copies the payload.
    assert per_call < 20e-6, f"classify took {per_call * 1e6:.1f} µs per call"


def test_audio_ffmpeg9_opus_and_aac(clips: dict[str, Path]) -> None:
    opus = [classify_audio(p) for p in _tags(clips["av1"], TAG_AUDIO)]
    assert {t.codec for t in opus} == {OPUS} and all(t.enhanced for t in opus)
    assert opus[0].is_sequence_header and sum(t.is_sequence_header for t in opus) == 1
    assert any(t.packet_type == MULTICHANNEL_CONFIG for t in opus)  # ffmpeg 9 sends one after the OpusHead
    head = _tags(clips["av1"], TAG_AUDIO)[0]
    assert head[opus[0].offset : opus[0].offset + 8] == b"OpusHead"
    assert sum(t.packet_type == CODED_FRAMES for t in opus) >= 90  # 20 ms frames for 2 s
    aac = [classify_audio(p) for p in _tags(clips["hevc"], TAG_AUDIO)]
    assert {t.codec for t in aac} == {AAC} and not any(t.enhanced for t in aac)
    assert aac[0].is_sequence_header and aac[0].offset == 2 and aac[1].packet_type == CODED_FRAMES


def test_audio_forms_by_hand() -> None:
    tag = classify_audio(sequence_start("flac", b"fLaC...."))
    assert (tag.codec, tag.packet_type, tag.offset, tag.enhanced) == ("flac", SEQUENCE_START, 5, True)
    assert classify_audio(coded_frames("ac3", b"\x0b\x77")).codec == "ac3"
    assert classify_audio(b"\x2f\xff").codec == "mp3" and classify_audio(b"\xb6\x00").codec == "speex"
    # ModEx then Multitrack (many tracks, one codec): Opus frames of track 0.
    payload = bytes((0x90 | 7, 2)) + b"abc" + bytes((5,)) + bytes((0x11,)) + b"Opus" + b"\x00" + b"\x00\x00\x02" + b"f0"
    tag = classify_audio(payload)
    assert (tag.codec, tag.packet_type, payload[tag.offset : tag.end]) == (OPUS, CODED_FRAMES, b"f0")
    for bad in (b"", b"\xa0", b"\x90Op", b"\x97", b"\x95\x10Opus\x00\x00"):
        assert not classify_audio(bad).is_sequence_header


@given(st.binary(max_size=64))
@settings(max_examples=2000, deadline=None)
def test_classifiers_never_raise_and_stay_in_bounds(payload: bytes) -> None:
    for prefix in (b"", b"\x90", b"\x91hvc1", b"\x97\x02", b"\x96\x20", b"\x1c\x01", b"\x91Opus", b"\x95\x10"):
        data = prefix + payload
        tag = v.classify(data)
        assert tag == v.INVALID or 0 <= tag.offset <= tag.end <= len(data)
        assert not (tag.is_keyframe and tag.is_sequence_header)
        audio = classify_audio(data)
        assert audio.codec == "" or 0 <= audio.offset <= audio.end <= len(data) or audio.end - audio.offset <= 0


@given(st.binary(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_describe_never_raises(record: bytes) -> None:
    from tidecast.live.codecs import describe_audio, describe_video

    prefixes = (
        b"\x90hvc1\x01",
        b"\x90av01\x81",
        b"\x90av01\x81\x00\x0c\x00\x0a",  # configOBUs: a sequence header OBU with a size
        b"\x90vp09",
        b"\x17\x00\x00\x00\x00\x01",
        b"\x1c\x00\x00\x00\x00\x01",
    )
    for prefix in prefixes:
        described = describe_video(prefix + record, b"\x91" + prefix[1:5] + record)
        assert described["width"] >= 0 and described["codec"]
    # The parsers on their own raise ProtocolError and nothing else.
    for parse, head in ((hevc.parse_sps, b"\x42\x01"), (hevc.parse_config, b"\x01"), (av1.parse_sequence_header, b"")):
        try:
            parse(head + record)
        except ProtocolError:
            pass
    try:
        vp9.keyframe_size(b"\x82\x49\x83\x42" + record)
    except ProtocolError:
        pass
    for prefix in (b"\x90Opus", b"\x90fLaC", b"\x90mp4a", b"\xaf\x00"):
        assert describe_audio(prefix + record)["codec"]
