"""The players' output formats: the bytes RTMP and HTTP-FLV players get, on their own timelines."""

from __future__ import annotations

import pytest

from tidecast.codec.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, flv_tag, iter_flv_tags
from tidecast.live.packet import Packet
from tidecast.net.formats import FLV, FLV_UNFRAMED, RTMP
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import ChunkDecoder, encode_message
from tidecast.rtmp.session import STREAM_ID

CSID = {TAG_AUDIO: C.CSID_AUDIO, TAG_VIDEO: C.CSID_VIDEO, TAG_SCRIPT: C.CSID_DATA}


def packets(start: int) -> list[Packet]:
    """Small and chunked messages of every type, from stream time `start`."""
    return [
        Packet(TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData" + b"m" * 50, 128),
        Packet(TAG_VIDEO, start, b"\x17\x01" + bytes(range(256)) * 40, 128, keyframe=True),
        Packet(TAG_AUDIO, start + 10, b"\xaf\x01" + b"a" * 100, 128),
        Packet(TAG_VIDEO, start + 40, b"\x27\x01" + b"p" * 300, 128),
    ]


def decode(data: bytes) -> list[tuple[int, int, bytes]]:
    decoder = ChunkDecoder()
    decoder.chunk_size = 128
    return [(m.type_id, m.timestamp, bytes(m.payload)) for m in decoder.feed(data)]


@pytest.mark.parametrize("start", [0, 5_000, 0xFFFFFF - 20, 0x1_2345_678])
def test_rtmp_from_stream_time_is_the_classic_encoding(start: int) -> None:
    pkts = packets(start)
    expected = b"".join(
        encode_message(CSID[p.type_id], p.type_id, p.timestamp, STREAM_ID, p.payload, p.chunk_size) for p in pkts
    )
    assert RTMP.batch(pkts) == expected
    assert decode(RTMP.batch(pkts)) == [(p.type_id, p.timestamp & 0xFFFFFFFF, p.payload) for p in pkts]


@pytest.mark.parametrize("start", [30_000, 0x1_2345_678])
def test_rtmp_on_a_late_timeline_starts_at_zero_and_shares_the_payload_chunks(start: int) -> None:
    pkts = packets(start)
    late = RTMP.at(start)
    got = decode(late.batch(pkts))
    assert [(t, ts) for t, ts, _ in got] == [(TAG_SCRIPT, 0), (TAG_VIDEO, 0), (TAG_AUDIO, 10), (TAG_VIDEO, 40)]
    assert [p for _, _, p in got] == [p.payload for p in pkts]
    assert RTMP.at(start + 1).batch(pkts) != late.batch(pkts)
    # What does not depend on the timeline is built once per packet for every timeline.
    cached = pkts[1].serializations()
    assert sorted(len(b) for b in cached) == [12, 12, len(got[1][2]) + len(got[1][2]) // 128], (
        "a 12-byte header per timeline and one chunked body for both"
    )


def test_rtmp_timeline_reaching_extended_timestamps_encodes_whole_messages() -> None:
    pkts = packets(0xFFFFFF + 500)
    got = decode(RTMP.at(400).batch(pkts))
    assert [ts for _, ts, _ in got] == [0, 0xFFFFFF + 100, 0xFFFFFF + 110, 0xFFFFFF + 140]
    assert [p for _, _, p in got] == [p.payload for p in pkts]


def flv_body(chunk: bytes) -> bytes:
    size, _, rest = chunk.partition(b"\r\n")
    assert rest.endswith(b"\r\n") and int(size, 16) == len(rest) - 2
    return rest[:-2]


@pytest.mark.parametrize("start", [0, 0x1_2345_678])
def test_flv_from_stream_time_is_one_http_chunk_of_classic_tags(start: int) -> None:
    pkts = packets(start)
    assert flv_body(FLV.batch(pkts)) == b"".join(flv_tag(p.type_id, p.timestamp, p.payload) for p in pkts)
    assert FLV.batch([]) == b""


@pytest.mark.parametrize("base", [0, 90_000])
def test_flv_for_http10_players_is_the_same_tags_with_no_chunk_framing(base: int) -> None:
    pkts = packets(90_000)
    unframed = FLV_UNFRAMED.at(base)
    assert type(unframed) is type(FLV_UNFRAMED) and unframed.base == base
    assert unframed.batch(pkts) == flv_body(FLV.at(base).batch(pkts))
    assert FLV_UNFRAMED.batch([]) == b""


def test_flv_on_a_late_timeline_starts_at_zero() -> None:
    pkts = packets(90_000)
    tags = list(iter_flv_tags(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + flv_body(FLV.at(90_000).batch(pkts))))
    assert tags == [(TAG_SCRIPT, 0, pkts[0].payload), (TAG_VIDEO, 0, pkts[1].payload),
                    (TAG_AUDIO, 10, pkts[2].payload), (TAG_VIDEO, 40, pkts[3].payload)]  # fmt: skip
