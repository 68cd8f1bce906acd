"""The sans-I/O RTMP layers with bytes alone: AMF, chunks, handshake, session."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit.sessions import publishing_pair, pump

from tidecast.codec import amf0, amf3
from tidecast.errors import ProtocolError
from tidecast.rtmp import constants as C
from tidecast.rtmp import handshake as hs
from tidecast.rtmp.chunk import ChunkDecoder, ChunkEncoder, ChunkError, Message, encode_message
from tidecast.rtmp.session import (
    CommandResult,
    ConnectRequest,
    HandshakeDone,
    Metadata,
    PlayRequest,
    PublishRequest,
    RtmpSession,
    StreamClosed,
)

# ---------------------------------------------------------------- AMF


def test_amf0_round_trip_of_every_type() -> None:
    values = [
        1.5,
        True,
        False,
        "héllo",
        None,
        {"a": 1.0, "b": {"c": "d"}},
        amf0.EcmaArray({"duration": 0.0, "width": 320.0}),
        [1.0, "x", None],
        "x" * 70000,
    ]
    decoded = amf0.decode_all(amf0.encode(*values))
    assert decoded == values
    assert isinstance(decoded[6], amf0.EcmaArray)
    assert len(amf0.encode("x" * 70000)) == 1 + 4 + 70000  # long string marker


def test_amf0_known_bytes() -> None:
    assert amf0.encode("connect", 1) == b"\x02\x00\x07connect\x00" + struct.pack(">d", 1.0)
    assert amf0.encode({}) == b"\x03\x00\x00\x09"
    assert amf0.decode(b"\x06") is None  # undefined


def test_amf0_reference_and_date() -> None:
    data = b"\x0a\x00\x00\x00\x02" + amf0.encode({"k": "v"}) + b"\x07\x00\x01"
    obj = amf0.decode(data)
    assert obj[1] == {"k": "v"}
    date = amf0.decode(b"\x0b" + struct.pack(">dh", 1234.0, 0))
    assert isinstance(date, amf0.Date) and date == 1234.0


def test_amf3_values_inside_amf0() -> None:
    # AVM+ marker, then AMF3: an integer, a string, a dynamic anonymous object.
    assert amf0.decode(b"\x11\x04\x7f") == 127.0
    assert amf0.decode(b"\x11\x06\x07abc") == "abc"
    obj = b"\x11\x0a\x0b\x01" + b"\x03a" + b"\x04\x05" + b"\x01"
    assert amf0.decode(obj) == {"a": 5.0}
    assert amf3.Decoder(b"\x04\xff\xff\xff\xff").value() == -1.0


@pytest.mark.parametrize(
    "data",
    [b"\x02\x00\x05ab", b"\x00\x01", b"\x42", b"\x07\x00\x09", b"\x0a\xff\xff\xff\xff", b"\x02\x00\x02\xff\xfe"],
)
def test_amf0_malformed_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        amf0.decode_all(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_amf0_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- chunks


def test_chunk_round_trip_with_small_chunks_and_extended_timestamps() -> None:
    enc = ChunkEncoder()
    dec = ChunkDecoder()
    payload = os.urandom(1000)
    wire = enc.encode(C.CSID_VIDEO, C.VIDEO, 0x1234567, 1, payload)  # extended timestamp
    wire += enc.encode(400, C.AUDIO, 5, 1, b"abc")  # three-byte basic header
    wire += enc.encode(70, C.AUDIO, 6, 1, b"")  # two-byte basic header, empty message
    msgs = []
    for i in range(0, len(wire), 7):  # arbitrary TCP segmentation
        msgs += dec.feed(wire[i : i + 7])
    assert [(m.type_id, m.timestamp, m.stream_id, m.payload, m.csid) for m in msgs] == [
        (C.VIDEO, 0x1234567, 1, payload, C.CSID_VIDEO),
        (C.AUDIO, 5, 1, b"abc", 400),
        (C.AUDIO, 6, 1, b"", 70),
    ]
    assert dec.bytes_received == len(wire)


def test_header_types_1_2_3_accumulate_deltas() -> None:
    # type 0 at t=100, type 1 (+40, new length), type 2 (+40), type 3 (+40 again).
    t0 = b"\x04" + (100).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08" + struct.pack("<I", 1) + b"aa"
    t1 = b"\x44" + (40).to_bytes(3, "big") + (3).to_bytes(3, "big") + b"\x08" + b"bbb"
    t2 = b"\x84" + (40).to_bytes(3, "big") + b"ccc"
    t3 = b"\xc4" + b"ddd"
    msgs = ChunkDecoder().feed(t0 + t1 + t2 + t3)
    assert [(m.timestamp, m.payload) for m in msgs] == [(100, b"aa"), (140, b"bbb"), (180, b"ccc"), (220, b"ddd")]


def test_set_chunk_size_and_abort_apply_to_following_bytes() -> None:
    enc = ChunkEncoder()
    dec = ChunkDecoder()
    wire = enc.set_chunk_size(4096)
    wire += enc.encode(C.CSID_VIDEO, C.VIDEO, 0, 1, b"v" * 5000)
    msgs = dec.feed(wire)
    assert dec.chunk_size == 4096
    assert msgs[-1].payload == b"v" * 5000
    # A partial message, aborted, then a new one on the same chunk stream.
    partial = encode_message(C.CSID_AUDIO, C.AUDIO, 0, 1, b"x" * 5000, 4096)[: 12 + 4096]
    abort = ChunkEncoder().abort(C.CSID_AUDIO)
    fresh = encode_message(C.CSID_AUDIO, C.AUDIO, 9, 1, b"ok", 4096)
    msgs = dec.feed(partial + abort + fresh)
    assert [m.payload for m in msgs if m.type_id == C.AUDIO] == [b"ok"]


def test_encode_message_uses_type0_then_type3() -> None:
    wire = encode_message(C.CSID_VIDEO, C.VIDEO, 10, 1, b"z" * 300, 128)
    assert wire[0] == C.CSID_VIDEO  # fmt 0
    assert wire[12 + 128] == 0xC0 | C.CSID_VIDEO  # fmt 3 continuation
    assert len(wire) == 12 + 300 + 2


def test_chunk_errors() -> None:
    with pytest.raises(ProtocolError, match="starts with a type-1 header"):
        ChunkDecoder().feed(b"\x44" + b"\x00" * 7)
    with pytest.raises(ProtocolError, match="exceeds"):
        ChunkDecoder(max_message_size=100).feed(b"\x04\x00\x00\x00\x00\x10\x00\x08\x01\x00\x00\x00")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_chunk_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        ChunkDecoder(max_message_size=1 << 16).feed(data)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- handshake


def _digest_c1(schema: int) -> bytes:
    c1 = bytearray(struct.pack(">I", 0) + bytes((9, 0, 124, 2)) + os.urandom(1528))
    offset = hs._digest_offset(bytes(c1), schema)
    joined = bytes(c1[:offset]) + bytes(c1[offset + 32 :])
    c1[offset : offset + 32] = hmac.new(hs.PLAYER_KEY_SHORT, joined, hashlib.sha256).digest()
    return bytes(c1)


def test_simple_handshake_echoes_c1() -> None:
    server = hs.ServerHandshake()
    c1 = b"\x00" * 8 + os.urandom(1528)
    reply = server.feed(b"\x03" + c1)
    assert len(reply) == 1 + 2 * 1536 and reply[1 + 1536 :] == c1
    assert not server.done
    server.feed(reply[1:1537] + b"tail")
    assert server.done and server.leftover == b"tail" and not server.complex


@pytest.mark.parametrize("schema", [0, 1])
def test_complex_handshake_signs_s1_and_s2(schema: int) -> None:
    c1 = _digest_c1(schema)
    server = hs.ServerHandshake()
    reply = server.feed(b"\x03" + c1)
    assert server.complex
    s1, s2 = reply[1:1537], reply[1537:]
    offset = hs._digest_offset(s1, schema)
    expect = hmac.new(hs.SERVER_KEY_SHORT, s1[:offset] + s1[offset + 32 :], hashlib.sha256).digest()
    assert s1[offset : offset + 32] == expect
    c1_digest = c1[hs._digest_offset(c1, schema) :][:32]
    key = hmac.new(hs.SERVER_KEY, c1_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_handshake_rejects_non_rtmp() -> None:
    with pytest.raises(ProtocolError, match="is not 3"):
        hs.ServerHandshake().feed(b"GET / HTTP/1.1\r\n")


# ---------------------------------------------------------------- session


def test_publish_and_play_sessions_end_to_end() -> None:
    server, client = RtmpSession(), RtmpSession(client=True)
    c_ev, s_ev = pump(client, server)
    assert isinstance(c_ev[0], HandshakeDone) and isinstance(s_ev[0], HandshakeDone)
    client.connect("live", "rtmp://127.0.0.1:1935/live?vhost=v1")
    _, s_ev = pump(client, server)
    req = s_ev[0]
    assert isinstance(req, ConnectRequest) and req.app == "live" and "vhost=v1" in req.tc_url
    server.accept_connect(60000, {"srs_server": "tidecast"})
    client.create_stream()
    c_ev, _ = pump(client, server)
    results = [e for e in c_ev if isinstance(e, CommandResult)]
    assert results[0].command == "connect" and results[0].ok
    assert results[1].command == "createStream" and results[1].values[1] == 1.0

    client.publish("cam?token=1")
    _, s_ev = pump(client, server)
    pub = next(e for e in s_ev if isinstance(e, PublishRequest))
    assert pub.name == "cam?token=1" and pub.publish_type == "live"
    server.accept_publish(pub.name)
    client._out.append(client.send_metadata(amf0.EcmaArray({"width": 320.0})))
    client._out.append(client.send_media(C.VIDEO, 40, b"\x17\x00\x00\x00\x00" + b"v" * 9000))
    _, s_ev = pump(client, server)
    meta = next(e for e in s_ev if isinstance(e, Metadata))
    assert meta.values == {"width": 320.0}
    video = [e for e in s_ev if getattr(e, "type_id", None) == C.VIDEO]
    assert len(video) == 1 and len(video[0].payload) == 9005 and video[0].timestamp == 40

    player_server, player = RtmpSession(), RtmpSession(client=True)
    pump(player, player_server)
    player.connect("live", "rtmp://127.0.0.1/live")
    pump(player, player_server)
    player_server.accept_connect(4096, {})
    player.create_stream()
    pump(player, player_server)
    player.play("cam")
    _, s_ev = pump(player, player_server)
    play = next(e for e in s_ev if isinstance(e, PlayRequest))
    assert play.name == "cam"
    player_server.accept_play(play.name)
    c_ev, _ = pump(player, player_server)
    codes = [e.info.get("code") for e in c_ev if hasattr(e, "info")]
    assert "NetStream.Play.Start" in codes


def test_delete_stream_is_reported() -> None:
    server, client = RtmpSession(), RtmpSession(client=True)
    pump(client, server)
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    server.accept_connect(4096, {})
    pump(client, server)
    client._call("deleteStream", None, 1.0)
    _, s_ev = pump(client, server)
    assert any(isinstance(e, StreamClosed) for e in s_ev)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_session_fuzz_after_handshake(data: bytes) -> None:
    server, client = RtmpSession(), RtmpSession(client=True)
    pump(client, server)
    try:
        server.receive_data(data)
    except ProtocolError:
        pass


_messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 63, 64, 319, 320, 1000]),  # one-, two- and three-byte basic headers
        st.sampled_from([C.AUDIO, C.VIDEO, C.DATA_AMF0]),
        st.one_of(st.integers(0, 0xFFFFFE), st.integers(0xFFFFFF, 0xFFFFFFFF)),  # extended timestamps too
        st.integers(0, 3000),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_messages, st.sampled_from([128, 129, 1000, 4096]), st.lists(st.integers(1, 5000), max_size=20))
def test_chunk_reassembly_does_not_depend_on_read_boundaries(
    messages: list[tuple[int, int, int, int]], chunk_size: int, cuts: list[int]
) -> None:
    enc = ChunkEncoder()
    wire = enc.set_chunk_size(chunk_size)
    expect = []
    for i, (csid, type_id, ts, size) in enumerate(messages):
        payload = bytes([i % 256]) * size
        wire += enc.encode(csid, type_id, ts, 1, payload)
        expect.append((csid, type_id, ts, payload))
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    dec = ChunkDecoder()
    got = []
    for a, b in itertools.pairwise(points):
        got += [(m.csid, m.type_id, m.timestamp, m.payload) for m in dec.feed(wire[a:b]) if m.type_id != 1]
    assert got == expect
    assert dec.unfinished_bytes == 0


def _basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes((fmt << 6 | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes((fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


def _compressing_encode(
    messages: list[tuple[int, int, int, int, bytes]], chunk_sizes: list[int]
) -> tuple[bytes, list[tuple[int, int, int, int, bytes]]]:
    """Chunk `messages` the way encoders compress headers (type 1 for a new length, 2 for a new delta,
    3 for a repeated delta), changing the chunk size before each message from `chunk_sizes`; returns the
    wire and the messages as a decoder must report them (absolute timestamps)."""
    wire = bytearray()
    expect = []
    prev: dict[int, tuple[int, int, int, int, int]] = {}  # csid -> stream_id, type, length, timestamp, delta
    chunk = 128
    for i, (csid, type_id, stream_id, delta, payload) in enumerate(messages):
        size = chunk_sizes[i % len(chunk_sizes)]
        if size != chunk:
            wire += encode_message(2, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size), chunk)
            chunk = size
        last = prev.get(csid)
        if last is None or last[0] != stream_id:
            fmt, field, ts = 0, delta, delta
        elif last[1] == type_id and last[2] == len(payload):
            fmt, field, ts = (3 if last[4] == delta else 2), delta, last[3] + delta
        else:
            fmt, field, ts = 1, delta, last[3] + delta
        prev[csid] = (stream_id, type_id, len(payload), ts, delta)
        extended = field >= 0xFFFFFF
        head = _basic(fmt, csid)
        short = 0xFFFFFF if extended else field
        if fmt == 0:
            head += short.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes((type_id,))
            head += struct.pack("<I", stream_id)
        elif fmt == 1:
            head += short.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes((type_id,))
        elif fmt == 2:
            head += short.to_bytes(3, "big")
        ext = struct.pack(">I", field) if extended else b""
        wire += head + ext + payload[:chunk]
        for pos in range(chunk, len(payload), chunk):
            wire += _basic(3, csid) + ext + payload[pos : pos + chunk]
        expect.append((csid, type_id, stream_id, ts & 0xFFFFFFFF, payload))
    return bytes(wire), expect


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([3, 4, 6, 63, 64, 400]),
            st.sampled_from([C.AUDIO, C.VIDEO, C.AUDIO, C.VIDEO, C.DATA_AMF0]),
            st.sampled_from([1, 1, 1, 2]),
            st.one_of(st.sampled_from([0, 23, 40]), st.integers(0, 0xFFFFFE), st.integers(0xFFFFFF, 0x7FFFFFFF)),
            st.sampled_from([0, 1, 5, 200, 4000]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.sampled_from([128, 129, 4096, 60000]), min_size=1, max_size=4),
    st.lists(st.integers(1, 20000), max_size=12),
)
def test_every_header_type_decodes_the_same_in_any_reads(
    spec: list[tuple[int, int, int, int, int]], chunk_sizes: list[int], cuts: list[int]
) -> None:
    """Header compression (types 1-3), extended timestamps and chunk size changes, cut anywhere: the
    decoder's one-chunk fast path and its general path must agree with what was sent."""
    # Payloads that differ byte by byte: a continuation header left in, or a payload byte dropped, shows.
    messages = [(c, t, s, d, bytes((i + j) % 251 for j in range(n))) for i, (c, t, s, d, n) in enumerate(spec)]
    wire, expect = _compressing_encode(messages, chunk_sizes)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    dec = ChunkDecoder()
    got = []
    for a, b in itertools.pairwise(points):
        got += [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in dec.feed(wire[a:b]) if m.type_id > 6]
    assert got == expect
    assert dec.unfinished_bytes == 0
    # All at once (the fast path's case) gives the same.
    whole = [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in ChunkDecoder().feed(wire)]
    assert [m for m in whole if m[1] > 6] == expect
    # With a media sink (a publisher's stream): media reach it until anything else comes out of a read,
    # then come out as messages; read by read, sunk then returned is still the order sent.
    dec = ChunkDecoder()
    got = []
    sunk: list[tuple[int, int, bytes]] = []
    dec.media_sink = lambda type_id, ts, payload: sunk.append((type_id, ts, payload))
    returned_media = 0
    for a, b in itertools.pairwise(points):
        out = dec.feed(wire[a:b])
        got += sunk + [(m.type_id, m.timestamp, m.payload) for m in out if m.type_id > 6]
        returned_media += sum(1 for m in out if m.type_id in (C.AUDIO, C.VIDEO))
        sunk.clear()
    assert got == [(t, ts, payload) for _, t, _, ts, payload in expect]
    assert dec.sunk + returned_media == sum(1 for m in expect if m[1] in (C.AUDIO, C.VIDEO))
    assert dec.unfinished_bytes == 0


def test_interleaved_and_damaged_continuations_take_the_general_path() -> None:
    """A multi-chunk message decoded in one pass (its type-3 headers at a fixed stride) must still give
    way to the chunk-by-chunk path when another chunk stream cuts in, or a continuation header is wrong."""
    video = bytes(range(256)) + bytes(range(144))  # 400 bytes: chunks of 128, 128, 128, 16
    audio = bytes(range(50, 100))
    head = bytes((0x06,)) + (40).to_bytes(3, "big") + len(video).to_bytes(3, "big") + bytes((C.VIDEO,))
    head += struct.pack("<I", 1)
    chunks = [video[i : i + 128] for i in range(0, len(video), 128)]
    audio_msg = encode_message(4, C.AUDIO, 40, 1, audio, 128)
    # A first message on each chunk stream makes them known: what follows is the fast path's case.
    known = encode_message(6, C.VIDEO, 0, 1, b"\x17\x00", 128) + encode_message(4, C.AUDIO, 0, 1, b"\xaf\x00", 128)
    straight = head + chunks[0] + b"".join(bytes((0xC6,)) + c for c in chunks[1:])
    cut_in = head + chunks[0] + audio_msg + b"".join(bytes((0xC6,)) + c for c in chunks[1:])
    for wire, order in ((straight, [C.VIDEO]), (cut_in, [C.AUDIO, C.VIDEO])):
        for data in (known + wire, bytearray(known + wire)):
            got = ChunkDecoder().feed(data)[2:]
            assert [m.type_id for m in got] == order
            assert got[-1].payload == video and got[-1].timestamp == 40 and type(got[-1].payload) is bytes
    # A continuation on chunk stream 5 instead of 6: a type-3 chunk with no previous header there.
    damaged = head + chunks[0] + bytes((0xC5,)) + chunks[1] + b"".join(bytes((0xC6,)) + c for c in chunks[2:])
    with pytest.raises(ChunkError, match="chunk stream 5"):
        ChunkDecoder().feed(known + damaged)


def test_media_sink_counts_towards_max_messages() -> None:
    """A read of many tiny media messages is still handed on a slice at a time with a sink set."""
    wire = b"".join(encode_message(6, C.AUDIO, i, 1, b"\xaf\x01x", 128) for i in range(50))
    dec = ChunkDecoder()
    sunk: list[int] = []
    dec.media_sink = lambda type_id, ts, payload: sunk.append(ts)
    assert dec.feed(wire, 10) == [] and sunk == list(range(10)) and dec.held_back
    while dec.held_back:
        assert dec.feed(b"", 10) == []
    assert sunk == list(range(50)) and dec.sunk == 50


def test_session_media_sink_keeps_media_and_commands_in_order() -> None:
    """Media before a command in one read go to the sink; the command and all after it come out as
    events, so the adapter sees unpublish after the media sent before it and before the media after it."""
    server, client = publishing_pair()
    sunk: list[int] = []
    server.media_sink = lambda type_id, ts, payload: sunk.append(ts)
    client._out.append(client.send_media(C.VIDEO, 40, b"\x17\x01\x00\x00\x00frame"))
    client._out.append(client.send_media(C.AUDIO, 41, b"\xaf\x01aac"))
    client._call("FCUnpublish", None, "cam")
    client._out.append(client.send_media(C.VIDEO, 80, b"\x27\x01\x00\x00\x00late"))
    events = server.receive_data(b"".join(client.data_to_send()))
    assert sunk == [40, 41] and server.media_sunk == 2
    assert [type(e) for e in events] == [StreamClosed, Message]
    assert events[0].command == "FCUnpublish" and events[1].timestamp == 80


@pytest.mark.parametrize("chunk_size", [128, 4096, 60000])
@pytest.mark.parametrize("max_messages", [None, 7])
def test_large_reads_after_a_leftover_decode_the_same(chunk_size: int, max_messages: int | None) -> None:
    """Reads of 16 KiB and more (merged reads) that complete a leftover chunk are parsed where they lie:
    the messages, with or without a media sink and a per-call budget, are those sent."""
    rng = random.Random(chunk_size)
    spec = [
        (rng.choice([4, 6, 6, 70]), rng.choice([C.AUDIO, C.VIDEO, C.VIDEO, C.DATA_AMF0]), 1, rng.choice([0, 23, 40]),
         rng.choice([1, 200, 3000, 6000, 20000]))
        for _ in range(300)
    ]  # fmt: skip
    messages = [(c, t, s, d, bytes((i + j) % 251 for j in range(n))) for i, (c, t, s, d, n) in enumerate(spec)]
    wire, expect = _compressing_encode(messages, [chunk_size])
    sunk: list[tuple[int, int, bytes]] = []
    for sink in (False, True):
        dec = ChunkDecoder()
        if sink:
            dec.media_sink = lambda type_id, ts, payload: sunk.append((type_id, ts, payload))
        got: list[tuple[int, int, bytes]] = []
        pos = 0
        while pos < len(wire) or dec.held_back:
            n = rng.randint(16 * 1024, 70 * 1024) if pos < len(wire) else 0
            out = dec.feed(wire[pos : pos + n], max_messages)
            pos += n
            assert max_messages is None or len(out) + len(sunk) <= max_messages
            got += sunk + [(m.type_id, m.timestamp, m.payload) for m in out if m.type_id > 6]
            sunk.clear()
        assert got == [(t, ts, payload) for _, t, _, ts, payload in expect]
        assert dec.unfinished_bytes == 0
