"""AAC: AudioSpecificConfig parsing and ADTS headers, checked by ffprobe/ffmpeg decoding an ADTS file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_codec_flv import make_bframes_clip
from tidecast.codec import aac
from tidecast.codec.flv import TAG_AUDIO, iter_flv_tags
from tidecast.errors import ProtocolError


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The clip's audio tag bodies, sequence header first."""
    clip = make_bframes_clip(tmp_path_factory)
    return [p for t, _, p in iter_flv_tags(clip.read_bytes()) if t == TAG_AUDIO]


def test_config_of_the_clip(audio: list[bytes]) -> None:
    config = aac.parse_config(audio[0][2:])
    assert (config.object_type, config.sample_rate, config.channels) == (2, 44100, 1)
    assert abs(config.frame_ms - 1024 / 44.1) < 1e-9


def test_adts_stream_is_read_and_decoded_by_ffmpeg(audio: list[bytes], tmp_path: Path) -> None:
    config = aac.parse_config(audio[0][2:])
    frames = [p[2:] for p in audio[1:]]
    out = tmp_path / "clip.aac"
    out.write_bytes(b"".join(aac.adts_header(config, len(f)) + f for f in frames))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stderr == ""
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["profile"], stream["sample_rate"], stream["channels"]) == (
        "aac", "LC", "44100", 1
    )  # fmt: skip
    assert int(stream["nb_read_frames"]) == len(frames)
    decode = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True, text=True
    )
    assert decode.returncode == 0 and decode.stderr == ""


def test_adts_header_fields() -> None:
    config = aac.parse_config(bytes((0x11, 0x90)))  # LC, 48 kHz (index 3), stereo
    assert (config.object_type, config.sample_rate, config.channels) == (2, 48000, 2)
    header = config.adts(300)
    bits = int.from_bytes(header, "big")
    assert bits >> 44 == 0xFFF  # syncword
    assert (bits >> 40) & 0xF == 0x1  # MPEG-4, layer 0, no CRC
    assert (bits >> 38) & 0x3 == 1  # profile: object type - 1
    assert (bits >> 34) & 0xF == 3  # sampling frequency index
    assert (bits >> 30) & 0x7 == 2  # channel configuration
    assert (bits >> 13) & 0x1FFF == 307  # frame length, header included
    assert (bits >> 2) & 0x7FF == 0x7FF and bits & 0x3 == 0  # VBR, one raw data block
    # HE-AAC (SBR, object type 5) goes out as its LC core, as encoders signal it implicitly.
    assert (int.from_bytes(aac.AacConfig(5, 6, 2).adts(10), "big") >> 38) & 0x3 == 1


def test_bad_configs_and_frames() -> None:
    with pytest.raises(ProtocolError):
        aac.parse_config(b"\x12")
    with pytest.raises(ProtocolError):
        aac.parse_config(bytes((0x17, 0x80)))  # rate index 15: explicit rate, no ADTS form
    with pytest.raises(ProtocolError):
        aac.AacConfig(2, 4, 2).adts(0x2000)
