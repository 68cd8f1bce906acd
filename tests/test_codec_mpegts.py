"""MPEG-TS muxer: packet structure parsed back byte by byte, PSI CRCs, and a real clip read by ffprobe."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_codec_flv import make_bframes_clip
from tidecast.codec import aac, avc
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags
from tidecast.codec.mpegts import (
    AUDIO_PID,
    AUDIO_STREAM_ID,
    PMT_PID,
    VIDEO_PID,
    VIDEO_STREAM_ID,
    TsMuxer,
    crc32_mpeg2,
    encode_pcr,
    encode_timestamp,
)


@dataclass
class Pes:
    pid: int
    data: bytearray = field(default_factory=bytearray)
    pcr: int | None = None
    random_access: bool = False


def parse_ts(ts: bytes) -> tuple[list[Pes], dict[int, bytes]]:
    """Packets → PES (payload reassembled, first packet's PCR/RAI) and PSI payloads; checks the framing."""
    assert len(ts) % 188 == 0
    pes: list[Pes] = []
    current: dict[int, Pes] = {}
    psi: dict[int, bytes] = {}
    counters: dict[int, int] = {}
    for i in range(0, len(ts), 188):
        packet = ts[i : i + 188]
        assert packet[0] == 0x47
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        start = bool(packet[1] & 0x40)
        control, cc = packet[3] >> 4, packet[3] & 0x0F
        assert control in (1, 3)  # payload in every packet we make
        if pid in counters:
            assert cc == (counters[pid] + 1) & 0x0F, f"continuity on PID {pid:#x}"
        counters[pid] = cc
        pos = 4
        pcr, rai = None, False
        if control == 3:
            length = packet[4]
            if length:
                flags = packet[5]
                rai = bool(flags & 0x40)
                if flags & 0x10:
                    base = int.from_bytes(packet[6:12], "big") >> 15
                    pcr = base
                assert all(b == 0xFF for b in packet[6 + (6 if flags & 0x10 else 0) : 5 + length])  # stuffing
            pos = 5 + length
            assert pos < 188
        if pid in (0, PMT_PID):
            psi[pid] = packet[pos:]
            continue
        if start:
            current[pid] = Pes(pid, pcr=pcr, random_access=rai)
            pes.append(current[pid])
        else:
            assert pcr is None and not rai
        current[pid].data += packet[pos:]
    return pes, psi


def split_pes(data: bytes) -> tuple[int, int, int | None, bytes]:
    """(stream id, PTS, DTS or None, payload) of one PES packet."""
    assert data[:3] == b"\x00\x00\x01"
    stream_id = data[3]
    length = int.from_bytes(data[4:6], "big")
    flags, header_len = data[7], data[8]

    def ts(b: bytes) -> int:
        return (
            ((b[0] >> 1) & 0x07) << 30 | (int.from_bytes(b[1:3], "big") >> 1) << 15 | int.from_bytes(b[3:5], "big") >> 1
        )

    pts = ts(data[9:14])
    dts = ts(data[14:19]) if flags & 0x40 else None
    payload = data[9 + header_len :]
    if length:
        assert length == len(data) - 6
    return stream_id, pts, dts, payload


def test_tables_have_valid_crcs_and_announce_the_streams() -> None:
    muxer = TsMuxer()
    _, psi = parse_ts(muxer.tables(True, True))
    pat, pmt = psi[0], psi[PMT_PID]
    for payload, table_id in ((pat, 0x00), (pmt, 0x02)):
        assert payload[0] == 0 and payload[1] == table_id
        length = ((payload[2] & 0x0F) << 8) | payload[3]
        section = payload[1 : 4 + length]
        assert crc32_mpeg2(section) == 0  # the CRC over a section including its CRC is 0
        assert set(payload[4 + length :]) == {0xFF}
    assert int.from_bytes(pat[11:13], "big") & 0x1FFF == PMT_PID
    assert int.from_bytes(pmt[9:11], "big") & 0x1FFF == VIDEO_PID  # PCR PID
    assert pmt[13] == 0x1B and int.from_bytes(pmt[14:16], "big") & 0x1FFF == VIDEO_PID
    assert pmt[18] == 0x0F and int.from_bytes(pmt[19:21], "big") & 0x1FFF == AUDIO_PID
    _, audio_only = parse_ts(TsMuxer().tables(False, True))
    assert int.from_bytes(audio_only[PMT_PID][9:11], "big") & 0x1FFF == AUDIO_PID


def test_every_payload_size_packs_and_parses_back() -> None:
    """All tail sizes, including the 1- and 2-byte adaptation fields, across several packets."""
    muxer = TsMuxer()
    sent = []
    out = bytearray()
    for n in range(0, 600):
        data = bytes((n + i) & 0xFF for i in range(n))
        pcr = 90_000 + n if n % 3 == 0 else None
        pid, sid = (VIDEO_PID, VIDEO_STREAM_ID) if n % 2 else (AUDIO_PID, AUDIO_STREAM_ID)
        pts, dts = 0x1_2345_6789 + n, 0x1_2345_6789 - n
        out += muxer.pes(pid, sid, data, pts, dts if n % 5 else pts, pcr, n % 7 == 0)
        sent.append((pid, sid, data, pts, dts if n % 5 else pts, pcr, n % 7 == 0))
    parsed, _ = parse_ts(bytes(out))
    assert len(parsed) == len(sent)
    for pes, (pid, sid, data, pts, dts, pcr, rai) in zip(parsed, sent, strict=True):
        stream_id, got_pts, got_dts, payload = split_pes(bytes(pes.data))
        assert (pes.pid, stream_id, payload, got_pts) == (pid, sid, data, pts)
        assert got_dts == (dts if dts != pts else None)
        assert (pes.pcr, pes.random_access) == (pcr, rai)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6), st.integers(0, 15))
def test_fuzz_pes_round_trip(frames: list[bytes], warmup: int) -> None:
    muxer = TsMuxer()
    for _ in range(warmup):  # counters start anywhere
        muxer.tables(True, True)
        muxer.pes(VIDEO_PID, VIDEO_STREAM_ID, b"x", 0, 0)
    out = b"".join(
        muxer.pes(VIDEO_PID, VIDEO_STREAM_ID, f, 1000 + i, 1000 + i, None, i == 0) for i, f in enumerate(frames)
    )
    parsed, _ = parse_ts(out)
    assert [split_pes(bytes(p.data))[3] for p in parsed] == frames


@settings(max_examples=80, deadline=None)
@given(
    st.binary(min_size=0, max_size=400),
    st.binary(min_size=0, max_size=2000),
    st.integers(0, 40),
    st.booleans(),
    st.booleans(),
)
def test_a_prefix_and_a_start_give_the_packets_of_the_joined_access_unit(
    prefix: bytes, data: bytes, start: int, pcr: bool, rai: bool
) -> None:
    """pes(prefix=p, start=s) is pes(p + data[s:]), byte for byte and counter for counter, whatever the
    sizes: a prefix longer than the first packet takes, an access unit that fits one packet, one that is
    only the prefix."""
    start = min(start, len(data))
    joined, split = TsMuxer(), TsMuxer()
    for pid, sid in ((VIDEO_PID, VIDEO_STREAM_ID), (AUDIO_PID, AUDIO_STREAM_ID)):
        for pts, dts in ((900_000, 897_000), (900_000, 900_000)):
            clock = 880_000 if pcr else None
            want = joined.pes(pid, sid, prefix + data[start:], pts, dts, clock, rai)
            got = split.pes(pid, sid, data, pts, dts, clock, rai, prefix, start)
            assert bytes(got) == bytes(want)
    assert split.cc == joined.cc


def test_timestamp_and_pcr_encodings() -> None:
    assert encode_timestamp(2, 0) == b"\x21\x00\x01\x00\x01"
    assert encode_timestamp(3, (1 << 33) + 5) == encode_timestamp(3, 5)  # the clock wraps at 33 bits
    assert encode_timestamp(1, (1 << 33) - 1) == b"\x1f\xff\xff\xff\xff"
    pcr = encode_pcr(0x1_2345_6789)
    assert int.from_bytes(pcr, "big") >> 15 == 0x1_2345_6789 and (int.from_bytes(pcr, "big") >> 9) & 0x3F == 0x3F


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bframes_clip(tmp_path_factory)


def test_a_clip_muxed_directly_is_read_by_ffprobe(clip: Path, tmp_path: Path) -> None:
    tags = list(iter_flv_tags(clip.read_bytes()))
    muxer = TsMuxer()
    out = bytearray(muxer.tables(True, True))
    video_config = audio_config = None
    for type_id, ts, p in tags:
        if type_id == TAG_VIDEO and p[1] == 0:
            video_config = avc.parse_config(p[5:])
        elif type_id == TAG_AUDIO and p[1] == 0:
            audio_config = aac.parse_config(p[2:])
        elif type_id == TAG_VIDEO and p[1] == 1 and video_config:
            cts = int.from_bytes(p[2:5], "big")
            dts = 90_000 + ts * 90
            data = avc.to_annexb(p, video_config, p[0] >> 4 == 1, 5)
            out += muxer.pes(VIDEO_PID, VIDEO_STREAM_ID, data, dts + cts * 90, dts, dts, p[0] >> 4 == 1)
        elif type_id == TAG_AUDIO and p[1] == 1 and audio_config:
            frame = audio_config.adts(len(p) - 2) + p[2:]
            out += muxer.pes(AUDIO_PID, AUDIO_STREAM_ID, frame, 90_000 + ts * 90, 90_000 + ts * 90)
    path = tmp_path / "direct.ts"
    path.write_bytes(out)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(probe.stdout)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and (streams["video"]["width"], streams["video"]["height"]) == (
        320, 240
    )  # fmt: skip
    assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["sample_rate"] == "44100"
    assert abs(float(info["format"]["duration"]) - 6.0) < 0.2
    decode = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    )
    assert decode.stderr == ""
