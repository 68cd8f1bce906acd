"""HEVC (hvcC, SPS, Annex B), AV1 (av1C, sequence header), VP9 (vpcC, keyframe size) and the API's codec objects.

Clips come from ffmpeg 9 (libx265, SVT-AV1, libvpx); what the parsers say is
checked against what ffmpeg itself reports, and the Annex B HEVC stream is
decoded by ffmpeg.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from testkit.ff9 import make_clip, needs_ffmpeg9, streams

from tidecast.codec import av1, hevc, vp9
from tidecast.codec import video as v
from tidecast.codec.audio import sequence_start
from tidecast.codec.bits import MAX_HEADER, BitReader
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags
from tidecast.errors import ProtocolError
from tidecast.live.codecs import describe_audio, describe_video

pytestmark = needs_ffmpeg9


def _video(path: Path) -> list[bytes]:
    return [p for t, _, p in iter_flv_tags(path.read_bytes()) if t == TAG_VIDEO]


def _header_and_keyframe(path: Path) -> tuple[bytes, bytes]:
    tags = _video(path)
    return (
        next(p for p in tags if v.classify(p).is_sequence_header),
        next(p for p in tags if v.classify(p).is_keyframe),
    )


@pytest.fixture(scope="module")
def clipdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hevc")


# Sizes that are not multiples of the coding block: the SPS conformance window / AV1 sizes must crop them.
@pytest.mark.parametrize(
    ("size", "pix_fmt", "profile"),
    [("320x240", "yuv420p", "Main"), ("426x238", "yuv420p", "Main"), ("200x120", "yuv420p10le", "Main10")],
)
def test_hevc_config_and_sps_match_ffmpeg(clipdir: Path, size: str, pix_fmt: str, profile: str) -> None:
    clip = make_clip(clipdir / f"hevc-{size}-{pix_fmt}.flv", "hevc", None, size=size, seconds=1, pix_fmt=pix_fmt)
    header, _ = _header_and_keyframe(clip)
    tag = v.classify(header)
    config = hevc.parse_config(header[tag.offset :])
    assert len(config.vps) == len(config.sps) == len(config.pps) == 1
    assert hevc.nal_type(config.vps[0]) == hevc.NAL_VPS and hevc.nal_type(config.pps[0]) == hevc.NAL_PPS
    assert config.nal_length_size == 4
    sps = hevc.parse_sps(config.sps[0])
    width, height = (int(x) for x in size.split("x"))
    assert (sps.width, sps.height) == (width, height)
    assert sps.profile_idc == config.profile_idc and sps.level_idc == config.level_idc
    assert sps.bit_depth_luma == config.bit_depth_luma == (10 if "10" in pix_fmt else 8)
    assert sps.chroma_format_idc == config.chroma_format_idc == 1
    described = describe_video(header)
    assert described == {
        "codec": "HEVC",
        "profile": profile,
        "level": hevc.level_name(config.level_idc),
        "width": width,
        "height": height,
    }
    ff = streams(str(clip))[0]
    assert (ff["codec"], ff["width"], ff["height"]) == ("hevc", width, height)


def test_hevc_levels_and_profiles() -> None:
    assert [hevc.level_name(x) for x in (30, 60, 63, 90, 93, 120, 123, 150, 153, 156, 180)] == [
        "1", "2", "2.1", "3", "3.1", "4", "4.1", "5", "5.1", "5.2", "6",
    ]  # fmt: skip
    assert hevc.profile_name(2) == "Main10" and hevc.profile_name(4) == "Rext" and hevc.profile_name(9) == "Other"


def test_hevc_annexb_decodes(clipdir: Path, tmp_path: Path) -> None:
    clip = make_clip(clipdir / "hevc-annexb.flv", "hevc", None, seconds=2)
    tags = _video(clip)
    config = hevc.parse_config(tags[0][v.classify(tags[0]).offset :])
    out = bytearray()
    frames = 0
    for payload in tags:
        tag = v.classify(payload)
        if v.is_coded_frame(tag):
            au = hevc.to_annexb(payload, config, tag.is_keyframe, tag.offset, tag.end)
            assert au.startswith(hevc.AUD)
            if tag.is_keyframe:
                assert au[len(hevc.AUD) :].startswith(config.annexb_headers())
            out += au
            frames += 1
    # Starting at the second keyframe still decodes: the parameter sets are repeated there.
    raw = tmp_path / "all.hevc"
    raw.write_bytes(bytes(out))
    second = out.find(hevc.AUD + config.annexb_headers(), 1)
    assert second > 0
    (tmp_path / "tail.hevc").write_bytes(bytes(out[second:]))
    for path, expected in ((raw, frames), (tmp_path / "tail.hevc", 25)):
        run = subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "hevc", "-i", str(path), "-f", "framemd5", "-"],
            capture_output=True,
            timeout=60,
        )
        assert run.returncode == 0 and not run.stderr, run.stderr.decode()
        decoded = [line for line in run.stdout.decode().splitlines() if line and not line.startswith("#")]
        assert len(decoded) == expected


def test_hevc_annexb_keeps_an_own_aud_first() -> None:
    config = hevc.HevcConfig(vps=[b"\x40\x01v"], sps=[b"\x42\x01s"], pps=[b"\x44\x01p"])
    sc = hevc.START_CODE
    own_aud, idr, trail = b"\x46\x01\x10", b"\x26\x01idr", b"\x02\x01p"

    def lp(*nals: bytes) -> bytes:
        return b"".join(len(n).to_bytes(4, "big") + n for n in nals)

    assert hevc.to_annexb(lp(own_aud, idr), config, True) == sc + own_aud + config.annexb_headers() + sc + idr
    assert hevc.to_annexb(lp(idr), config, True) == hevc.AUD + config.annexb_headers() + sc + idr
    assert hevc.to_annexb(lp(trail), config, False) == hevc.AUD + sc + trail
    own_sps = lp(b"\x40\x01V", b"\x42\x01S", b"\x44\x01P", idr)
    assert config.annexb_headers() not in hevc.to_annexb(own_sps, config, True)
    assert hevc.to_annexb(lp(trail) + b"\x00\x00\x00\x09ab", config, False) == hevc.AUD + sc + trail  # truncated tail


@pytest.mark.parametrize(
    "record",
    [b"", b"\x02" + bytes(30), b"\x01" + bytes(21) + b"\x01\x21\x00\x01\x00\x10ab", b"\x01" + bytes(21) + b"\x00"],
)
def test_bad_hvcc(record: bytes) -> None:
    with pytest.raises(ProtocolError):
        hevc.parse_config(record)


def test_av1_config_and_sequence_header(clipdir: Path) -> None:
    clip = make_clip(clipdir / "av1-330x186.flv", "av1", None, size="330x186", seconds=1)
    header, keyframe = _header_and_keyframe(clip)
    config = av1.parse_config(header[5:])
    assert (config.profile, config.bit_depth, config.chroma_subsampling_x, config.chroma_subsampling_y) == (0, 8, 1, 1)
    seq = av1.find_sequence_header(config.config_obus)
    assert seq is not None and (seq.width, seq.height) == (330, 186) and seq.profile == 0
    assert seq.level_idx == config.level_idx
    frame = v.classify(keyframe)
    in_frame = av1.find_sequence_header(keyframe, frame.offset, frame.end)
    assert in_frame == seq  # a keyframe's temporal unit repeats it
    assert describe_video(header) == {"codec": "AV1", "profile": "Main", "level": "2.0", "width": 330, "height": 186}
    # A record without configOBUs: the size comes from the keyframe.
    bare = header[:9]
    assert describe_video(bare)["width"] == 0
    assert describe_video(bare, keyframe)["width"] == 330
    assert streams(str(clip))[0]["width"] == 330
    assert av1.level_name(13) == "5.1" and av1.level_name(31) == "max"


def test_vp9_config_and_keyframe_size(clipdir: Path) -> None:
    clip = make_clip(clipdir / "vp9.flv", "vp9", None, size="250x142", seconds=1)
    header, keyframe = _header_and_keyframe(clip)
    config = vp9.parse_config(header[5:])
    assert (config.profile, config.bit_depth, config.chroma_subsampling) in ((0, 8, 0), (0, 8, 1))
    assert vp9.parse_config(header[9:]) == config  # the record without the FullBox version/flags
    assert vp9.keyframe_size(keyframe[5:]) == (250, 142)
    inter = next(p for p in _video(clip) if v.is_coded_frame(v.classify(p)) and not v.classify(p).is_keyframe)
    assert vp9.keyframe_size(inter[5:]) is None
    described = describe_video(header, keyframe)
    assert described["codec"] == "VP9" and described["profile"] == "Profile 0"
    assert (described["width"], described["height"]) == (250, 142)
    assert describe_video(header)["width"] == 0  # no keyframe yet: no size


def test_describe_legacy_and_odd_headers(clipdir: Path) -> None:
    h264 = make_clip(clipdir / "h264.flv", "h264", "aac", seconds=1)
    tags = list(iter_flv_tags(h264.read_bytes()))
    vsh = next(p for t, _, p in tags if t == TAG_VIDEO)
    ash = next(p for t, _, p in tags if t == TAG_AUDIO)
    level = vsh[5 + 3]  # AVCLevelIndication, 10 × the level
    described = describe_video(vsh)
    assert described == {"codec": "H264", "profile": "High", "level": described["level"], "width": 320, "height": 240}
    assert described["level"] in (f"{level // 10}.{level % 10}", str(level // 10))
    assert describe_audio(ash) == {"codec": "AAC", "sample_rate": 44100, "channel": 1, "profile": "LC"}
    # SRS's legacy HEVC id 12 with the same hvcC as the E-RTMP form.
    hevc_clip = make_clip(clipdir / "hevc-legacy.flv", "hevc", None, seconds=1)
    header, _ = _header_and_keyframe(hevc_clip)
    legacy = v.sequence_header(v.HEVC, header[5:], enhanced=False)
    assert describe_video(legacy) == describe_video(header) and describe_video(legacy)["width"] == 320
    # Garbage after a valid prefix: the codec is named, the facts are empty; never an exception.
    assert describe_video(b"\x90hvc1\x01\x02") == {"codec": "HEVC", "profile": "", "level": "", "width": 0, "height": 0}
    assert describe_video(b"\x90vp09\x00")["codec"] == "VP9"
    assert describe_video(b"\x12\x00")["codec"] == "h263"
    assert describe_audio(b"\x2f\x00")["codec"] == "MP3"
    assert describe_audio(b"\xd0\x00")["codec"] == "Opus"  # SRS's pre-E-RTMP Opus id 13


def test_describe_enhanced_audio(clipdir: Path) -> None:
    clip = make_clip(clipdir / "opus.flv", "av1", "opus", seconds=1)
    head = next(p for t, _, p in iter_flv_tags(clip.read_bytes()) if t == TAG_AUDIO)
    assert describe_audio(head) == {"codec": "Opus", "sample_rate": 48000, "channel": 1, "profile": ""}
    # FLAC STREAMINFO: 44100 Hz, 2 channels, 16 bits.
    info = bytes(10) + bytes(((44100 >> 12) & 0xFF, (44100 >> 4) & 0xFF, ((44100 & 0xF) << 4) | (1 << 1))) + bytes(23)
    flac = sequence_start("flac", b"fLaC" + b"\x80\x00\x00\x22" + info)
    assert describe_audio(flac) == {"codec": "FLAC", "sample_rate": 44100, "channel": 2, "profile": ""}
    # AAC in E-RTMP ("mp4a"): the AudioSpecificConfig as in the legacy form.
    assert describe_audio(sequence_start("aac", b"\x12\x10"))["sample_rate"] == 44100


def test_bit_reader_is_linear_and_capped() -> None:
    # Reading every bit of a big header costs O(n): 64 KiB bit by bit in well under a second.
    data = bytes(range(256)) * (MAX_HEADER // 256)
    r = BitReader(data, "test")
    start = time.perf_counter()
    total = 0
    while r.pos < r.end:
        total += r.bits(7 if r.end - r.pos >= 7 else r.end - r.pos)
    assert time.perf_counter() - start < 2.0 and total > 0
    with pytest.raises(ProtocolError, match="more than"):
        BitReader(data + b"x", "test")
    with pytest.raises(ProtocolError, match="exp-Golomb"):
        BitReader(bytes(8), "SPS").ue()
    r = BitReader(b"\xb0", "x")
    assert (r.bit(), r.bits(2), r.ue()) == (1, 1, 0) and r.pos == 4
    with pytest.raises(ProtocolError, match="truncated"):
        r.bits(5)
