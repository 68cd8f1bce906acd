"""H.264: the decoder configuration record, AVCC → Annex B (decoded by ffmpeg), SPS dimensions vs ffprobe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_codec_flv import make_bframes_clip
from tidecast.codec import avc
from tidecast.codec.flv import TAG_VIDEO, iter_flv_tags
from tidecast.errors import ProtocolError


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The clip's video tag bodies, sequence header first."""
    clip = make_bframes_clip(tmp_path_factory)
    return [p for t, _, p in iter_flv_tags(clip.read_bytes()) if t == TAG_VIDEO]


def _avcc(*nals: bytes, size: int = 4) -> bytes:
    return b"".join(len(nal).to_bytes(size, "big") + nal for nal in nals)


def test_config_record_of_the_clip(video: list[bytes]) -> None:
    config = avc.parse_config(video[0][5:])
    assert config.nal_length_size == 4 and len(config.sps) == 1 and len(config.pps) == 1
    assert config.sps[0][0] & 0x1F == avc.NAL_SPS and config.pps[0][0] & 0x1F == avc.NAL_PPS
    assert config.profile == config.sps[0][1]
    assert avc.parse_sps(config.sps[0]) == (320, 240)
    assert config.annexb_headers() == b"\x00\x00\x00\x01" + config.sps[0] + b"\x00\x00\x00\x01" + config.pps[0]


def test_a_single_nal_prefix_is_what_to_annexb_puts_before_the_unit(video: list[bytes]) -> None:
    """The muxer copies a one-NAL frame straight from the FLV payload behind this prefix: the result must be
    to_annexb's, for every frame of a real clip and for the odd units (an AUD, an SPS, a keyframe)."""
    config = avc.parse_config(video[0][5:])
    single = 0
    for body in video[1:]:
        keyframe = body[0] >> 4 == 1
        prefix = avc.single_nal_prefix(body, config, keyframe, 5)
        if prefix is not None:
            single += 1
            assert prefix + body[9:] == avc.to_annexb(body, config, keyframe, 5)
    assert single > len(video) // 2, "the clip's inter frames are one NAL unit each"
    odd = avc.AvcConfig(4, [b"\x67sps"], [b"\x68pps"])
    for nal in (b"\x09\xf0", b"\x67own", b"\x65idr", b"\x41p"):
        for keyframe in (True, False):
            body = b"\x17\x01\x00\x00\x00" + _avcc(nal)
            prefix = avc.single_nal_prefix(body, odd, keyframe, 5)
            assert prefix is not None and prefix + body[9:] == avc.to_annexb(body, odd, keyframe, 5)
    two = b"\x27\x01\x00\x00\x00" + _avcc(b"\x41p", b"\x41q")
    assert avc.single_nal_prefix(two, odd, False, 5) is None
    assert avc.single_nal_prefix(_avcc(b"\x41p", size=2), avc.AvcConfig(2, [], []), False, 0) is None


@pytest.mark.parametrize("record", [b"", b"\x02" + bytes(10), b"\x01\x64\x00\x1f\xff\xe1\x00\x20\x67"])
def test_bad_config_records(record: bytes) -> None:
    with pytest.raises(ProtocolError):
        avc.parse_config(record)


def test_annexb_inserts_aud_and_parameter_sets_only_when_missing() -> None:
    config = avc.AvcConfig(4, [b"\x67sps"], [b"\x68pps"])
    idr, slice_ = b"\x65idr", b"\x41p"
    sc = avc.START_CODE
    assert avc.to_annexb(_avcc(idr), config, True) == avc.AUD + sc + b"\x67sps" + sc + b"\x68pps" + sc + idr
    assert avc.to_annexb(_avcc(slice_), config, False) == avc.AUD + sc + slice_
    own = _avcc(b"\x09\xf0", b"\x67own", b"\x68own", idr)
    assert avc.to_annexb(own, config, True) == sc + b"\x09\xf0" + sc + b"\x67own" + sc + b"\x68own" + sc + idr
    assert avc.has_parameter_sets(own, 4) == (True, True, True)
    assert avc.has_parameter_sets(_avcc(idr), 4) == (False, False, False)
    # Other NAL length sizes, an offset into a tag body, and a truncated last NAL dropped.
    short = avc.AvcConfig(2, [b"\x67sps"], [b"\x68pps"])
    body = b"\x17\x01\x00\x00\x00" + _avcc(slice_, idr, size=2)
    assert avc.to_annexb(body, short, False, 5) == avc.AUD + sc + slice_ + sc + idr
    assert avc.to_annexb(_avcc(slice_) + b"\x00\x00\x00\x09abc", config, False) == avc.AUD + sc + slice_
    # One NAL filling the frame (the path without a loop) follows the same rules, from an offset too.
    assert avc.to_annexb(b"\x27\x01\x00\x00\x00" + _avcc(slice_), config, False, 5) == avc.AUD + sc + slice_
    assert avc.to_annexb(_avcc(b"\x09\xf0"), config, False) == sc + b"\x09\xf0"
    assert avc.to_annexb(_avcc(b"\x67own"), config, True) == avc.AUD + sc + b"\x67own"
    assert avc.to_annexb(_avcc(b"\x41"), config, False) == avc.AUD + sc + b"\x41"


def test_annexb_stream_of_the_clip_decodes(video: list[bytes], tmp_path: Path) -> None:
    config = avc.parse_config(video[0][5:])
    out = tmp_path / "clip.h264"
    frames = [p for p in video if p[1] == 1]  # not the sequence header, nor ffmpeg's end-of-sequence tag
    out.write_bytes(b"".join(avc.to_annexb(p, config, p[0] >> 4 == 1, 5) for p in frames))
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames,width,height",
         "-of", "json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stderr == ""
    stream = json.loads(result.stdout)["streams"][0]
    assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (320, 240, len(frames))


@pytest.mark.parametrize(
    "size, pix_fmt, extra",
    [
        ("1920x1080", "yuv420p", ["-profile:v", "high"]),  # coded 1088, cropped
        ("642x362", "yuv420p", ["-x264-params", "cqm=jvt"]),  # scaling lists in the SPS
        ("321x241", "yuv444p", ["-profile:v", "high444"]),  # 4:4:4, odd sizes, crop units of 1
        ("322x182", "yuv422p", ["-profile:v", "high422"]),
        ("318x180", "gray", []),  # 4:0:0
        ("720x576", "yuv420p", ["-flags", "+ildct+ilme", "-x264-params", "interlaced=1"]),  # field coding
        ("176x144", "yuv420p", ["-profile:v", "baseline"]),
    ],
)
def test_sps_dimensions_match_ffprobe(size: str, pix_fmt: str, extra: list[str], tmp_path: Path) -> None:
    out = tmp_path / "one.h264"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-frames:v", "1",
         "-pix_fmt", pix_fmt, "-c:v", "libx264", "-preset", "veryfast", *extra, "-f", "h264", str(out)],
        check=True,
    )  # fmt: skip
    nals = [nal for nal in (n.rstrip(b"\x00") for n in out.read_bytes().split(b"\x00\x00\x01")) if nal]
    sps = next(nal for nal in nals if nal[0] & 0x1F == avc.NAL_SPS)
    width, height = (int(v) for v in size.split("x"))
    assert avc.parse_sps(sps) == (width, height)


def test_truncated_sps_is_a_protocol_error(video: list[bytes]) -> None:
    sps = avc.parse_config(video[0][5:]).sps[0]
    for cut in range(len(sps)):
        try:
            avc.parse_sps(sps[:cut])  # only ever a ProtocolError (or, near the end, an answer)
        except ProtocolError:
            pass
    with pytest.raises(ProtocolError):
        avc.parse_sps(sps[:6])
    with pytest.raises(ProtocolError):
        avc.parse_sps(b"\x68\x00\x00\x00")  # a PPS
