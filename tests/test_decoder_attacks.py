"""Decoders a peer cannot turn against the server (issue 20): each attack from the report, in bytes.

Every test here failed before its fix: reference bombs in AMF0/AMF3 (connect
fields, onMetaData), non-string connect fields, NaN transaction ids, AMF3
ByteArray metadata, a quadratic SPS, chunk streams without bounds, tiny chunks,
nested aggregates, repeated connect, and the session's order rules.
"""

from __future__ import annotations

import ast
import contextlib
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit.attacks import (
    amf0_bomb,
    amf3_bomb,
    amf_key,
    amf_obj,
    amf_ref,
    bits_to_bytes,
    command,
    connect_payload,
    crafted_sps,
    data_message,
    flv_tag,
    set_chunk_size,
)
from testkit.helpers import TidecastProcess, http_json
from testkit.sessions import handshaken, publishing_pair, pump

from tidecast.codec import amf0, amf3, avc
from tidecast.errors import LocalProtocolError, ProtocolError
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import ChunkDecoder, ChunkEncoder, encode_message
from tidecast.rtmp.session import (
    ConnectRequest,
    Metadata,
    PlayRequest,
    RtmpSession,
    State,
    StreamClosed,
    split_aggregate,
)

SRC = Path(__file__).resolve().parent.parent / "src" / "tidecast"

# ---------------------------------------------------------------- building hostile bytes


def publishing() -> RtmpSession:
    """A server session whose peer connected and is publishing."""
    return publishing_pair()[0]


def quick(fn: Callable[[], Any], limit: float = 1.0) -> Any:
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - t0
        assert elapsed < limit, f"took {elapsed:.2f} s"


# ---------------------------------------------------------------- AMF reference expansion


def test_connect_whose_tcurl_is_a_reference_bomb_is_refused_at_once() -> None:
    payload = connect_payload(amf0_bomb(22, first_ref=1))
    assert len(payload) < 500
    server, _ = handshaken()
    with pytest.raises(ProtocolError, match="too large"):
        quick(lambda: server.receive_data(command(payload)), 0.5)
    assert server.state is State.CLOSED


def test_small_reference_bomb_in_tcurl_is_refused_for_not_being_a_string() -> None:
    # Under the budget, the field rule still applies: tcUrl is never stringified.
    server, _ = handshaken()
    with pytest.raises(ProtocolError, match="tcUrl is an array, not a string"):
        server.receive_data(command(connect_payload(amf0_bomb(6, first_ref=1))))


def test_reference_bomb_in_any_connect_argument_is_refused() -> None:
    # connect's optional extra arguments reach hooks too; the budget covers every value of a message.
    payload = connect_payload(amf0.encode("rtmp://h/live"), extra=amf0_bomb(22, first_ref=1))
    server, _ = handshaken()
    with pytest.raises(ProtocolError, match="too large"):
        quick(lambda: server.receive_data(command(payload)), 0.5)


def test_amf3_reference_bomb_is_refused_at_once() -> None:
    server, _ = handshaken()
    payload = b"\x00" + connect_payload(amf3_bomb(22))  # a type-17 command starts with a 0 byte
    with pytest.raises(ProtocolError, match="too large"):
        quick(lambda: server.receive_data(command(payload, type_id=C.COMMAND_AMF3)), 0.5)


@pytest.mark.parametrize("amf3_", [False, True])
def test_metadata_reference_bomb_is_refused_at_once(amf3_: bool) -> None:
    server = publishing()
    bomb = amf3_bomb(22) if amf3_ else amf0_bomb(22, first_ref=1)
    meta = amf0.encode("@setDataFrame", "onMetaData") + b"\x08\x00\x00\x00\x01" + amf_key("k") + bomb + b"\x00\x00\x09"
    with pytest.raises(ProtocolError, match="too large"):
        quick(lambda: server.receive_data(data_message(meta)), 0.5)


def test_shared_references_within_budget_stay_shared_and_re_encode() -> None:
    values = amf0.decode_all(amf0_bomb(10, first_ref=0))
    levels = values[0]
    assert levels[10]["a"] is levels[9] and levels[10]["b"] is levels[9]  # shared, not copied
    assert len(amf0.encode(levels)) > 2**10  # a walk sees the expansion, which the budget priced
    decoded = amf3.Decoder(amf3_bomb(10)[1:]).value()
    assert decoded[10]["a"] is decoded[9]


def test_budget_counts_a_reference_as_what_it_refers_to() -> None:
    bomb = amf0_bomb(16, first_ref=0)  # 2**17 values expanded, 300 bytes on the wire
    with pytest.raises(ProtocolError, match="too large"):
        amf0.decode(bomb)
    assert amf0.decode(bomb, amf0.Budget(len(bomb), max_values=1 << 20))[1]["b"]["s"] == "x"


def test_reference_strings_repeat_against_the_text_budget() -> None:
    # Few values, but each reference repeats a 60 kB string: 2**10 x 60 kB once printed.
    big = "y" * 60_000
    levels = [amf_obj(("s", amf0.encode(big)))] + [amf_obj(("a", amf_ref(k)), ("b", amf_ref(k))) for k in range(1, 11)]
    with pytest.raises(ProtocolError, match="string data"):
        amf0.decode(b"\x0a" + struct.pack(">I", len(levels)) + b"".join(levels))


def test_cyclic_references_are_refused() -> None:
    with pytest.raises(ProtocolError, match="cycle"):
        amf0.decode(amf_obj(("self", amf_ref(0))))
    with pytest.raises(ProtocolError, match="cycle"):
        amf3.Decoder(b"\x0a\x0b\x01\x03a\x0a\x00\x01").value()  # {a: object 0}, itself


@pytest.mark.parametrize("field", ["app", "tcUrl", "pageUrl", "swfUrl", "flashVer"])
@pytest.mark.parametrize("value", [{"a": "b"}, 1.0, ["x"], True])
def test_connect_fields_that_must_be_strings(field: str, value: Any) -> None:
    server, _ = handshaken()
    cmd = {"app": "live", "tcUrl": "rtmp://h/live", field: value}
    with pytest.raises(ProtocolError, match=f"connect: {field} is .*, not a string"):
        server.receive_data(command(amf0.encode("connect", 1.0, cmd)))


@pytest.mark.parametrize("name", ["publish", "play"])
def test_stream_names_must_be_strings(name: str) -> None:
    server, client = handshaken()
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    server.accept_connect(4096, {})
    with pytest.raises(ProtocolError, match=f"{name}: the stream name .* is an object, not a string"):
        server.receive_data(command(amf0.encode(name, 0.0, None, {"n": "x"}), stream_id=1))


def test_a_null_stream_name_is_still_the_empty_name() -> None:
    server, client = handshaken()
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    server.accept_connect(4096, {})
    events = server.receive_data(command(amf0.encode("play", 0.0, None, None), stream_id=1))
    assert [e.name for e in events if isinstance(e, PlayRequest)] == [""]


def test_nan_transaction_ids_are_protocol_errors() -> None:
    server, _ = handshaken()
    with pytest.raises(ProtocolError, match="transaction id nan"):
        server.receive_data(command(amf0.encode("connect", float("nan"), {"app": "live"})))
    # Client role: an upstream answering with a NaN id once raised ValueError from int().
    server, client = handshaken()
    with pytest.raises(ProtocolError, match="not a finite number"):
        client.receive_data(command(amf0.encode("_result", float("nan"), None, None)))
    server, client = handshaken()
    with pytest.raises(ProtocolError, match="not a finite number"):
        client.receive_data(command(amf0.encode("_error", float("inf"), None, None)))


def test_amf3_byte_array_in_metadata_is_left_out_and_metadata_re_encodes() -> None:
    server = publishing()
    # onMetaData, then an AMF3 object {width: 320, blob: ByteArray(3 bytes)} behind AVM+.
    obj3 = b"\x11\x0a\x0b\x01" + b"\x0bwidth" + b"\x04\x82\x40" + b"\x09blob" + b"\x0c\x07abc" + b"\x01"
    events = server.receive_data(data_message(b"\x00" + amf0.encode("onMetaData") + obj3, C.DATA_AMF3))
    meta = next(e for e in events if isinstance(e, Metadata))
    assert meta.values == {"width": 320.0}
    assert amf0.decode_all(amf0.encode("onMetaData", meta.values)) == ["onMetaData", {"width": 320.0}]


def test_amf0_and_amf3_import_no_cycle() -> None:
    def imported(module: str) -> set[str]:
        tree = ast.parse((SRC / "codec" / f"{module}.py").read_text())
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    assert "tidecast.codec.amf3" in imported("amf0")
    assert not {n for n in imported("amf3") if n.startswith("tidecast.codec.amf0")}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_amf3_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        amf3.Decoder(data).value()
    except ProtocolError:
        pass


# ---------------------------------------------------------------- SPS


def test_crafted_65kb_sps_is_refused_in_milliseconds() -> None:
    # Baseline profile, poc type 1 with a cycle of 2**32 - 2 entries, then all ones:
    # every entry reads one bit, and each read used to shift a 65 kB integer.
    sps = crafted_sps(65_000)
    with pytest.raises(ProtocolError):
        quick(lambda: avc.parse_sps(sps), 0.05)


def test_long_sps_tail_is_not_read() -> None:
    # A valid SPS padded with a huge VUI-like tail still parses, in bounded time.
    head = "01000010" + "0" * 16 + "1" * 5 + "0" + "000010100" + "0001111" + "1" + "1" + "0"
    sps = b"\x67" + bits_to_bytes(head) + b"\xaa" * 65_000
    assert quick(lambda: avc.parse_sps(sps), 0.05) == (320, 240)


def test_oversized_parameter_sets_in_a_sequence_header_are_refused() -> None:
    # 31 SPS of 60 kB each would go before every keyframe of every HLS segment.
    sps = b"\x67\x42\x00\x1f" + bytes(60_000)
    record = b"\x01\x42\x00\x1f\xff" + bytes((0xE0 | 31,)) + (struct.pack(">H", len(sps)) + sps) * 31 + b"\x00"
    with pytest.raises(ProtocolError, match="exceed the 16384-byte limit"):
        avc.parse_config(record)
    small = b"\x01\x42\x00\x1f\xff\xe1" + struct.pack(">H", 4) + b"\x67\x42\x00\x1f" + b"\x01\x00\x02\x68\xce"
    assert avc.parse_config(small).pps == [b"\x68\xce"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_sps_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        avc.parse_sps(b"\x67" + data)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- chunks


@pytest.mark.parametrize("size", [1, 2, 127])
def test_chunk_sizes_below_128_are_refused_as_srs_does(size: int) -> None:
    with pytest.raises(ProtocolError, match="below the minimum of 128"):
        ChunkDecoder().feed(set_chunk_size(size))


@pytest.mark.parametrize("size", [128, 65536, 1 << 20])
def test_chunk_sizes_from_128_up_are_accepted(size: int) -> None:
    dec = ChunkDecoder()
    dec.feed(set_chunk_size(size))
    assert dec.chunk_size == size


def _first_chunk(csid: int, length: int, chunk: int) -> bytes:
    """The first chunk of a `length`-byte video message on `csid`, at chunk size `chunk`."""
    return encode_message(csid, C.VIDEO, 0, 1, bytes(length), chunk)[: 1 + (csid >= 64) + 11 + chunk]


def test_unfinished_messages_across_chunk_streams_have_one_budget() -> None:
    dec = ChunkDecoder()
    dec.feed(set_chunk_size(65536))
    with pytest.raises(ProtocolError, match="unfinished messages exceed"):
        for csid in range(3, 3 + 150):  # 150 x 64 kB of 1 MB messages, none finished
            dec.feed(_first_chunk(csid, 1 << 20, 65536))
    assert dec.unfinished_bytes > C.MAX_UNFINISHED_BYTES


def test_a_huge_single_chunk_counts_against_the_budget_while_it_arrives() -> None:
    dec = ChunkDecoder(max_message_size=1 << 20, max_unfinished_bytes=1 << 20)
    dec.feed(set_chunk_size(1 << 24))
    wire = encode_message(3, C.VIDEO, 0, 1, bytes(1 << 20), 1 << 24)
    dec.feed(wire[:-1])
    assert dec.unfinished_bytes == len(wire) - 1
    assert [len(m.payload) for m in dec.feed(wire[-1:])] == [1 << 20]
    assert dec.unfinished_bytes == 0


def test_chunk_streams_per_connection_are_capped() -> None:
    dec = ChunkDecoder()
    with pytest.raises(ProtocolError, match=f"at most {C.MAX_CHUNK_STREAMS}"):
        for csid in range(3, 3 + C.MAX_CHUNK_STREAMS + 1):
            dec.feed(encode_message(csid, C.AUDIO, 0, 1, b"a", 128))


def test_max_message_size_is_stated_once() -> None:
    assert ChunkDecoder().max_message_size == C.MAX_MESSAGE_SIZE
    assert RtmpSession(client=True)._decoder.max_message_size == C.MAX_MESSAGE_SIZE
    assert RtmpSession()._decoder.max_message_size == C.PRE_CONNECT_MAX_MESSAGE_SIZE, "until connect"
    assert publishing()._decoder.max_message_size == C.MAX_MESSAGE_SIZE
    over = encode_message(3, C.VIDEO, 0, 1, b"", 128)[:4] + (C.MAX_MESSAGE_SIZE + 1).to_bytes(3, "big")
    with pytest.raises(ProtocolError, match="exceeds"):
        ChunkDecoder().feed(over + b"\x09" + bytes(4))
    for path in (SRC / "rtmp").glob("*.py"):
        if path.name != "constants.py":
            assert "1024 * 1024" not in path.read_text(), f"{path.name} states a size of its own"


def test_unfinished_message_costs_its_size_not_an_object_per_chunk() -> None:
    # 4 MiB of an unfinished message in 128-byte chunks (the smallest accepted).
    size = 4 << 20
    wire = encode_message(3, C.VIDEO, 0, 1, bytes(size + 1), 128)[: -(1 + 1)]  # all but the last chunk
    dec = ChunkDecoder()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(wire), 65536):
            dec.feed(wire[i : i + 65536])
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert dec.unfinished_bytes >= size
    assert held < size * 1.2, f"{held / size:.2f} bytes held per byte received"


def test_whole_messages_in_one_read_and_split_across_reads_decode_the_same() -> None:
    enc = ChunkEncoder()
    wire = enc.set_chunk_size(1000)
    payloads = [bytes([i]) * n for i, n in enumerate((1, 999, 1000, 1001, 5000, 0, 3))]
    for i, p in enumerate(payloads):
        wire += enc.encode(3 + i % 2, C.VIDEO, 0x1000000 + i if i == 4 else i, 1, p)
    whole = [m.payload for m in ChunkDecoder().feed(wire)[1:]]
    dec = ChunkDecoder()
    split: list[bytes] = []
    for i in range(0, len(wire), 333):
        split += [m.payload for m in dec.feed(wire[i : i + 333]) if m.type_id == C.VIDEO]
    assert whole == split == payloads


def test_interleaved_chunk_streams_still_reassemble() -> None:
    a = encode_message(4, C.VIDEO, 0, 1, b"A" * 300, 128)
    b = encode_message(5, C.AUDIO, 0, 1, b"B" * 300, 128)
    # Chunks alternate: a's first, b's first, a's rest, b's rest.
    a1, a2 = a[:140], a[140:]
    b1, b2 = b[:140], b[140:]
    msgs = ChunkDecoder().feed(a1 + b1 + a2 + b2)
    assert [(m.csid, m.payload) for m in msgs] == [(4, b"A" * 300), (5, b"B" * 300)]


# ---------------------------------------------------------------- aggregates


def test_aggregate_splits_into_media_with_rebased_timestamps() -> None:
    server = publishing()
    agg = flv_tag(C.VIDEO, 1000, b"\x17v") + flv_tag(C.AUDIO, 1020, b"\xafa") + flv_tag(C.COMMAND_AMF0, 1030, b"x")
    events = server.receive_data(encode_message(C.CSID_VIDEO, C.AGGREGATE, 500, 1, agg, 128))
    media = [(e.type_id, e.timestamp, e.payload) for e in events if getattr(e, "type_id", None) in (8, 9)]
    assert media == [(C.VIDEO, 500, b"\x17v"), (C.AUDIO, 520, b"\xafa")]  # the command inside is dropped


def test_nested_aggregates_are_refused_at_any_depth() -> None:
    body = flv_tag(C.VIDEO, 0, b"\x17" + bytes(2000))
    for _ in range(2000):
        body = flv_tag(C.AGGREGATE, 0, body)  # depth 2,000 once raised RecursionError
    from tidecast.rtmp.chunk import Message

    with pytest.raises(ProtocolError, match="inside an aggregate"):
        quick(lambda: split_aggregate(Message(C.AGGREGATE, 0, 1, body)), 0.5)
    server = publishing()
    nested = flv_tag(C.AGGREGATE, 0, flv_tag(C.VIDEO, 0, b"\x17" + bytes(2 << 20)))
    server.receive_data(set_chunk_size(1 << 16))
    with pytest.raises(ProtocolError, match="inside an aggregate"):
        server.receive_data(encode_message(C.CSID_VIDEO, C.AGGREGATE, 0, 1, nested, 1 << 16))


# ---------------------------------------------------------------- a turn at a time


def _all_turns(server: RtmpSession, data: bytes, limit: int) -> list[list[Any]]:
    """Events of `data` and of every later turn the session asks for, per call."""
    turns = [server.receive_data(data)]
    while server.backlogged:
        turns.append(server.receive_data(b""))
        assert len(turns) < 10_000
    assert all(len(t) <= 2 * limit for t in turns)
    return turns


def test_a_read_of_two_byte_messages_is_handed_on_a_slice_at_a_time() -> None:
    # 2 MB of 2-byte audio messages (a type-3 header and one byte each) froze the server for 8 s.
    server = publishing()
    server.max_events = C.MESSAGES_PER_TURN
    flood = encode_message(4, C.AUDIO, 0, 1, b"\xaf", 128) + b"\xc4\xaf" * 100_000
    tail = encode_message(C.CSID_VIDEO, C.VIDEO, 40, 1, b"\x17\x01end", 128)
    turns = _all_turns(server, flood + tail, C.MESSAGES_PER_TURN)
    assert len(turns[0]) == C.MESSAGES_PER_TURN and len(turns) > 90
    events = [e for t in turns for e in t]
    assert len(events) == 100_002 and events[-1].payload == b"\x17\x01end"
    assert not server.backlogged


def test_an_aggregate_of_tiny_tags_is_split_over_turns_in_order() -> None:
    server = publishing()
    server.max_events = 1000
    agg = b"".join(flv_tag(C.AUDIO, i, b"\xaf\x01" + i.to_bytes(4, "big")) for i in range(5000))
    wire = encode_message(C.CSID_VIDEO, C.AGGREGATE, 1000, 1, agg, 128)
    wire += encode_message(C.CSID_VIDEO, C.VIDEO, 9000, 1, b"\x17\x01after", 128)
    wire += command(amf0.encode("FCUnpublish", 6.0, None, "cam"))
    turns = _all_turns(server, wire[:70_000], 1000)
    turns += _all_turns(server, wire[70_000:], 1000)  # more input while a split is under way waits its turn
    events = [e for t in turns for e in t]
    audio = [e for e in events if getattr(e, "type_id", None) == C.AUDIO]
    assert [int.from_bytes(e.payload[2:], "big") for e in audio] == list(range(5000))
    assert audio[0].timestamp == 1000 and audio[-1].timestamp == 1000 + 4999
    assert getattr(events[-2], "payload", b"") == b"\x17\x01after" and isinstance(events[-1], StreamClosed)


def test_without_a_turn_limit_everything_comes_out_of_one_call() -> None:
    server = publishing()  # max_events 0: the client role and sans-I/O callers
    flood = encode_message(4, C.AUDIO, 0, 1, b"\xaf", 128) + b"\xc4\xaf" * 5000
    assert len(server.receive_data(flood)) == 5001 and not server.backlogged


# ---------------------------------------------------------------- command order


def test_a_second_connect_is_refused() -> None:
    server, client = handshaken()
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    server.accept_connect(4096, {})
    pump(client, server)
    with pytest.raises(ProtocolError, match="a second connect"):
        server.receive_data(command(amf0.encode("connect", 1.0, {"app": "live"})))


@pytest.mark.parametrize("name", ["publish", "play", "createStream", "FCPublish"])
def test_commands_before_connect_are_refused(name: str) -> None:
    server, _ = handshaken()
    assert server.state is State.CONNECTING
    with pytest.raises(ProtocolError, match=f"'{name}' before connect"):
        server.receive_data(command(amf0.encode(name, 2.0, None, "cam")))


@pytest.mark.parametrize(("first", "second"), [("publish", "publish"), ("publish", "play"), ("play", "play")])
def test_a_second_publish_or_play_is_refused(first: str, second: str) -> None:
    server, client = handshaken()
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    server.accept_connect(4096, {})
    server.receive_data(command(amf0.encode(first, 0.0, None, "a"), stream_id=1))
    with pytest.raises(ProtocolError, match=f"{second} on stream id 1 after a {first}"):
        server.receive_data(command(amf0.encode(second, 0.0, None, "b"), stream_id=1))


def test_states_of_a_publish_and_a_play() -> None:
    server, client = RtmpSession(), RtmpSession(client=True)
    assert server.state is State.HANDSHAKE and client.state is State.HANDSHAKE
    assert not server.handshake_done
    pump(client, server)
    assert server.state is State.CONNECTING and client.state is State.CONNECTING and server.handshake_done
    client.connect("live", "rtmp://h/live")
    assert client.state is State.CONNECTED
    _, events = pump(client, server)
    assert isinstance(events[0], ConnectRequest) and server.state is State.CONNECTED
    server.accept_connect(4096, {})
    client.publish("cam")
    pump(client, server)
    assert server.state is State.PUBLISHING and client.state is State.PUBLISHING
    server.accept_publish("cam")
    server.reject_publish("NetStream.Publish.Rejected", "refused further on")  # a late refusal is allowed
    assert server.state is State.CLOSED
    server.reject_publish("NetStream.Publish.Rejected", "again")  # closed: says nothing more
    assert server.data_to_send()[-1:] and not server.data_to_send()
    assert server.receive_data(command(amf0.encode("publish", 0.0, None, "x"))) == []  # input ignored

    player, pclient = handshaken()
    pclient.connect("live", "rtmp://h/live")
    pump(pclient, player)
    player.reject_connect("no")
    assert player.state is State.CLOSED


def test_local_misuse_is_a_local_protocol_error_not_a_protocol_error() -> None:
    assert not issubclass(LocalProtocolError, ProtocolError)
    server, client = handshaken()
    with pytest.raises(LocalProtocolError, match="without a pending connect"):
        server.accept_connect(4096, {})
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    with pytest.raises(LocalProtocolError, match="without a pending publish"):
        server.accept_publish("cam")
    with pytest.raises(LocalProtocolError, match="never sent play"):
        server.reject_play("NetStream.Play.StreamNotFound", "x")
    with pytest.raises(LocalProtocolError, match="pause_notify is not allowed in state CONNECTED"):
        server.pause_notify(True)
    server.accept_connect(4096, {})
    with pytest.raises(LocalProtocolError, match="without a pending connect"):
        server.accept_connect(4096, {})  # answered already
    with pytest.raises(LocalProtocolError, match="client-role call"):
        server.play("x")
    fresh = RtmpSession(client=True)
    with pytest.raises(LocalProtocolError, match="before the handshake finished"):
        fresh.connect("live", "rtmp://h/live")
    with pytest.raises(LocalProtocolError, match="connect is not allowed in state CONNECTED"):
        client.connect("live", "rtmp://h/live")
    _, other = handshaken()
    with pytest.raises(LocalProtocolError, match="play is not allowed in state CONNECTING"):
        other.play("x")


def test_media_from_a_peer_that_is_not_publishing_is_dropped() -> None:
    server, client = handshaken()
    client.connect("live", "rtmp://h/live")
    pump(client, server)
    events = server.receive_data(encode_message(C.CSID_VIDEO, C.VIDEO, 0, 1, b"\x17\x01", 128))
    assert events == []


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_publishing_session_fuzz_only_protocol_errors(data: bytes) -> None:
    server = publishing()
    try:
        server.receive_data(data)
    except ProtocolError:
        assert server.state is State.CLOSED


# ---------------------------------------------------------------- a real server


def test_real_server_refuses_a_reference_bomb_connect_and_stays_responsive(
    tidecast: Callable[..., TidecastProcess],
) -> None:
    server = tidecast()
    rtmp = RtmpSession(client=True)
    with socket.create_connection(("127.0.0.1", server.rtmp_port), timeout=5) as sock:
        for data in rtmp.data_to_send():
            sock.sendall(data)
        while not rtmp.handshake_done:
            rtmp.receive_data(sock.recv(65536))
        for data in rtmp.data_to_send():
            sock.sendall(data)
        t0 = time.monotonic()
        sock.sendall(command(connect_payload(amf0_bomb(24, first_ref=1))))
        http_json(f"{server.api}/api/v1/versions", timeout=2.0)  # the loop is not frozen
        while sock.recv(65536):  # the server closes the connection
            pass
        assert time.monotonic() - t0 < 2.0
    assert "too large" in server.log()


def test_real_server_closes_a_client_that_repeats_connect(tidecast: Callable[..., TidecastProcess]) -> None:
    # The client never reads: each connect answered would pile ~19x its size into our write buffer.
    server = tidecast()
    rtmp = RtmpSession(client=True)
    with socket.create_connection(("127.0.0.1", server.rtmp_port), timeout=5) as sock:
        for data in rtmp.data_to_send():
            sock.sendall(data)
        while not rtmp.handshake_done:
            rtmp.receive_data(sock.recv(65536))
        for data in rtmp.data_to_send():
            sock.sendall(data)
        one = command(amf0.encode("connect", 1.0, {"app": "live", "tcUrl": f"{server.rtmp}/live"}))
        with contextlib.suppress(OSError):  # the server may reset us mid-send
            sock.sendall(one * 200)
        sock.settimeout(3)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += len(chunk)
    assert received < 20 * len(one), f"{received} bytes answered to 200 connects of {len(one)} bytes"
    assert "a second connect on one connection" in server.log()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([C.COMMAND_AMF0, C.COMMAND_AMF3, C.DATA_AMF0, C.DATA_AMF3, C.AGGREGATE, C.USER_CONTROL]),
    st.binary(max_size=400),
    st.booleans(),
)
def test_well_framed_messages_of_random_bytes_raise_only_protocol_errors(
    type_id: int, body: bytes, amf_start: bool
) -> None:
    # Past the chunk layer, into AMF, commands and aggregates: a valid frame around hostile bytes.
    if amf_start:
        body = amf0.encode("publish" if type_id in (C.COMMAND_AMF0, C.COMMAND_AMF3) else "onMetaData", 0.0) + body
    server = publishing()
    try:
        server.receive_data(encode_message(C.CSID_COMMAND, type_id, 0, 1, body, C.DEFAULT_CHUNK_SIZE))
    except ProtocolError:
        assert server.state is State.CLOSED


def test_metadata_with_a_large_keyframe_index_is_accepted() -> None:
    # 24 h of a keyframe a second, as flvmeta writes it: 172,800 numbers, over the command budget.
    times = [float(i) for i in range(86_400)]
    meta = amf0.EcmaArray({"duration": 86_400.0, "keyframes": {"times": times, "filepositions": times}})
    payload = amf0.encode("@setDataFrame", "onMetaData", meta)
    server = publishing()
    server.receive_data(set_chunk_size(1 << 20))
    events = server.receive_data(encode_message(C.CSID_DATA, C.DATA_AMF0, 0, 1, payload, 1 << 20))
    values = next(e for e in events if isinstance(e, Metadata)).values
    assert len(values["keyframes"]["times"]) == 86_400
    with pytest.raises(ProtocolError, match="too large"):
        amf0.decode_all(payload)  # the default (command) budget refuses as much


def test_commands_have_a_smaller_value_budget_than_metadata() -> None:
    # Before connect, a peer is nobody: a command decodes to at most MAX_COMMAND_VALUES values.
    from tidecast.rtmp.session import MAX_COMMAND_VALUES

    payload = amf0.encode("connect", 1.0, {"app": "live"}, [None] * (MAX_COMMAND_VALUES + 1))
    server, _ = handshaken()
    server.receive_data(set_chunk_size(1 << 16))
    with pytest.raises(ProtocolError, match=f"more than {MAX_COMMAND_VALUES} values"):
        server.receive_data(encode_message(C.CSID_COMMAND, C.COMMAND_AMF0, 0, 0, payload, 1 << 16))
    ok = amf0.encode("connect", 1.0, {"app": "live"}, [None] * 1000)
    server, _ = handshaken()
    server.receive_data(set_chunk_size(1 << 16))
    events = server.receive_data(encode_message(C.CSID_COMMAND, C.COMMAND_AMF0, 0, 0, ok, 1 << 16))
    assert [len(e.args[0]) for e in events if isinstance(e, ConnectRequest)] == [1000]


def test_before_connect_a_connection_may_not_hold_a_big_unfinished_message() -> None:
    server, _ = handshaken()
    # The start of a 1 MB message on an anonymous connection: refused on its header, nothing buffered.
    wire = ChunkEncoder().encode(4, C.VIDEO, 0, 1, b"x" * (1024 * 1024))[:4096]
    with pytest.raises(ProtocolError, match="65536-byte limit"):
        server.receive_data(wire)


def test_after_connect_the_full_message_budget_applies() -> None:
    server = publishing()
    big = b"\x17\x01" + b"x" * (2 * 1024 * 1024)
    events = server.receive_data(ChunkEncoder().encode(6, C.VIDEO, 40, 1, big))
    assert any(getattr(e, "payload", None) == big for e in events)
