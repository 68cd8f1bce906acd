"""The long fuzz campaign of the peer-facing decoders (issue 20): mutated valid inputs, no sockets.

    python bench/fuzz_decoders.py                       # 1,000,000 inputs per decoder
    python bench/fuzz_decoders.py --inputs 20000 --only amf0,chunk

The pytest suite runs hypothesis on these decoders for a few hundred inputs
each; this runs many more, faster, with a plain mutational fuzzer: each input
is a seed (a valid encoding: commands, metadata, AMF3 objects, reference
chains, SPS and sequence headers, chunk streams, aggregates) with random byte
flips, inserted or deleted runs, duplicated slices and truncation, or pure
random bytes. A decoder may answer or raise ProtocolError; anything else, or an
input taking longer than --slow seconds, is printed with its bytes (hex) and
counted as a failure. Deterministic for a given --seed. Exit status 1 on any failure.

Targets: amf0 (decode_all), amf3 (Decoder.value), avc (parse_config and
parse_sps), chunk (ChunkDecoder.feed, in two reads), session (a publishing
server-role RtmpSession.receive_data), aggregate (split_aggregate).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidecast.codec import amf0, amf3, avc
from tidecast.errors import ProtocolError
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import ChunkDecoder, ChunkEncoder, Message, encode_message
from tidecast.rtmp.session import RtmpSession, split_aggregate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testkit: the mutator and seeds tests use
from testkit.attacks import amf0_bomb, mutate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder (1,000,000)")
    p.add_argument("--only", default="", help="comma list of targets (all)")
    p.add_argument("--seed", type=int, default=20, help="random seed (20)")
    p.add_argument("--slow", type=float, default=0.25, help="seconds one input may take (0.25)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- seeds


AMF3_OBJECT = b"\x11\x0a\x0b\x01\x0bwidth\x04\x82\x40\x09blob\x0c\x07abc\x01"
AMF3_ARRAY = b"\x11\x09\x07\x03k\x06\x03v\x01\x04\x01\x04\x02\x06\x00"

AMF_SEEDS = [
    amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live", "objectEncoding": 0.0}),
    amf0.encode("publish", 0.0, None, "cam?token=1", "live"),
    amf0.encode("play", 0.0, None, "cam", -2.0, -1.0, True),
    amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray({"width": 320.0, "height": 240.0, "duration": 0.0})),
    amf0.encode("onStatus", 0.0, None, {"level": "status", "code": "NetStream.Play.Start", "x": [1.0, "a", None]}),
    amf0.encode("x" * 300, amf0.Date(1.0), [True, False, {"k": {"k": {"k": "v"}}}]),
    amf0.encode("connect", 1.0) + amf0_bomb(6, first_ref=0),
    amf0.encode("connect", 1.0) + AMF3_OBJECT + AMF3_ARRAY,
]
AMF3_SEEDS = [AMF3_OBJECT[1:], AMF3_ARRAY[1:], b"\x09\x0d\x01" + b"\x0a\x0b\x01\x03a\x04\x01\x01" + b"\x0a\x02" * 5]


def _avc_seeds() -> list[bytes]:
    sps = bytes.fromhex("6742c01e d9005a09 bde9c044 00000300 04000003 00c83c58 b920")
    high = bytes.fromhex("6764001f acd9405005bb0110 0000030010 00000303c0 f1831960")
    pps = bytes.fromhex("68cb83cb20")
    record = b"\x01\x42\xc0\x1e\xff\xe1" + struct.pack(">H", len(sps)) + sps + b"\x01" + struct.pack(">H", 5) + pps
    return [sps, high, record]


def _chunk_seeds() -> list[bytes]:
    enc = ChunkEncoder()
    wire = enc.set_chunk_size(200) + enc.encode(C.CSID_VIDEO, C.VIDEO, 0x1234567, 1, bytes(700))
    wire += enc.encode(400, C.AUDIO, 5, 1, b"abc") + enc.abort(C.CSID_AUDIO) + enc.window_ack_size(5000)
    t0 = b"\x04" + (100).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08" + struct.pack("<I", 1) + b"aa"
    t1 = b"\x44" + (40).to_bytes(3, "big") + (3).to_bytes(3, "big") + b"\x08" + b"bbb"
    return [wire, t0 + t1 + b"\x84" + (40).to_bytes(3, "big") + b"ccc" + b"\xc4ddd"]


def _tag(type_id: int, ts: int, body: bytes) -> bytes:
    head = bytes((type_id,)) + len(body).to_bytes(3, "big") + ts.to_bytes(3, "big") + b"\x00\x00\x00\x00"
    return head + body + struct.pack(">I", 11 + len(body))


AGG_SEEDS = [_tag(9, 0, b"\x17\x01" + bytes(30)) + _tag(8, 20, b"\xaf\x01xx") + _tag(18, 30, AMF_SEEDS[3])]


def _session_seeds() -> list[bytes]:
    seeds = [encode_message(C.CSID_COMMAND, C.COMMAND_AMF0, 0, 1, s, 128) for s in AMF_SEEDS]
    seeds += [encode_message(C.CSID_DATA, C.DATA_AMF0, 0, 1, AMF_SEEDS[3], 128)]
    amf3_meta = amf0.encode("@setDataFrame", "onMetaData") + AMF3_OBJECT
    seeds += [encode_message(C.CSID_DATA, C.DATA_AMF0, 0, 1, amf3_meta, 128)]
    seeds += [encode_message(C.CSID_VIDEO, C.AGGREGATE, 0, 1, AGG_SEEDS[0], 128)]
    seeds += _chunk_seeds()
    return seeds


# ---------------------------------------------------------------- targets


def t_amf0(data: bytes) -> None:
    amf0.decode_all(data)


def t_amf3(data: bytes) -> None:
    amf3.Decoder(data).value()


def t_avc(data: bytes) -> None:
    if data[:1] == b"\x01":
        config = avc.parse_config(data)
        avc.parse_sps(config.sps[0])
    else:
        avc.parse_sps(data)


def t_chunk(data: bytes) -> None:
    dec = ChunkDecoder(max_message_size=1 << 16)
    half = len(data) // 2
    dec.feed(data[:half])
    dec.feed(data[half:])


def _publishing() -> RtmpSession:
    server, client = RtmpSession(), RtmpSession(client=True)

    def pump() -> None:
        for _ in range(10):
            moved = False
            for src, dst in ((client, server), (server, client)):
                for data in src.data_to_send():
                    moved = True
                    dst.receive_data(data)
            if not moved:
                return

    pump()
    client.connect("live", "rtmp://127.0.0.1/live")
    pump()
    server.accept_connect(4096, {})
    client.publish("fuzz")
    pump()
    server.accept_publish("fuzz")
    server.data_to_send()
    return server


def t_session(data: bytes) -> None:
    session = _publishing()
    session.max_events = 3  # as the server hands them on, a slice a turn: the backlog paths too
    events = session.receive_data(data)
    while session.backlogged:
        events += session.receive_data(b"")
    # Whatever comes out must be usable downstream: metadata re-encodes in AMF0.
    for event in events:
        values = getattr(event, "values", None)
        if values is not None:
            amf0.encode("onMetaData", values)


def t_aggregate(data: bytes) -> None:
    split_aggregate(Message(C.AGGREGATE, 0, 1, data))


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], list[bytes]]]] = {
    "amf0": (t_amf0, lambda: AMF_SEEDS),
    "amf3": (t_amf3, lambda: AMF3_SEEDS),
    "avc": (t_avc, _avc_seeds),
    "chunk": (t_chunk, _chunk_seeds),
    "session": (t_session, _session_seeds),
    "aggregate": (t_aggregate, lambda: AGG_SEEDS),
}


def campaign(name: str, count: int, seed: int, slow: float) -> dict[str, Any]:
    target, seeds_of = TARGETS[name]
    seeds = seeds_of()
    rng = random.Random(f"{seed}-{name}")
    failures = refused = 0
    worst = 0.0
    t0 = time.perf_counter()
    for _ in range(count):
        data = mutate(rng, rng.choice(seeds))
        start = time.perf_counter()
        try:
            target(data)
        except ProtocolError:
            refused += 1
        except Exception as exc:  # anything else is a finding: print it and go on
            failures += 1
            if failures <= 5:
                print(f"  {name}: {type(exc).__name__}: {exc} on input {data.hex()}")
        took = time.perf_counter() - start
        if took > worst:
            worst = took
            if took > slow:
                failures += 1
                print(f"  {name}: {took:.3f} s on input {data.hex()}")
    elapsed = time.perf_counter() - t0
    return {
        "target": name,
        "inputs": count,
        "refused": refused,
        "failures": failures,
        "worst_ms": worst * 1000,
        "inputs_per_s": count / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    total = 0
    for name in names:
        r = campaign(name, args.inputs, args.seed, args.slow)
        total += r["failures"]
        print(
            f"{name:>9}: {r['inputs']:,} inputs, {r['refused']:,} refused (ProtocolError), "
            f"{r['failures']} failures, slowest {r['worst_ms']:.1f} ms, {r['inputs_per_s']:,.0f} inputs/s",
            flush=True,
        )
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
