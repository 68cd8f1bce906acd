"""RTMP receive path alone: messages per second through `RtmpSession.receive_data`, no sockets.

    python bench/rtmp_parse.py                    # the default: 60 s of a 1 Mbps stream, 3 repeats
    PYTHONPATH=/some/other/checkout/src python bench/rtmp_parse.py   # the same against other code

Builds the chunked bytes a publisher would send for --seconds of a synthetic
stream (25 fps H.264-tagged video at --kbps with a keyframe every 2 s, 43 AAC
frames a second, chunk size --chunk), gets a server-role session to the
publishing state, then times feeding those bytes in reads of each --reads size
(1448: a TCP segment at a time, as a 1 Mbps publisher's bytes mostly arrive;
65536: a read holding many messages). Reports the best of --repeat runs:
messages/s, MB/s, and µs per message, i.e. the share of one core that one
publisher's receive path costs. Single-threaded, bounded (a few seconds).

Wall time on a shared machine is noisy; --opcodes also counts the Python
bytecodes executed per message (sys.settrace over the first 4 s of the
stream), a figure that does not depend on load and compares two versions of
the code exactly (copies done in C are not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as B

from tidecast.config import parse_text
from tidecast.live.stream import LiveStream
from tidecast.rtmp import constants as C
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import ChunkEncoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="stream length to build (60)")
    p.add_argument("--kbps", type=int, default=1000, help="video bitrate (1000)")
    p.add_argument("--chunk", type=int, default=4096, help="publisher's chunk size, as ffmpeg and OBS set (4096)")
    p.add_argument("--reads", default="1448,65536", help="read sizes to feed, comma list (1448,65536)")
    p.add_argument("--repeat", type=int, default=3, help="runs per read size; the best is kept (3)")
    p.add_argument(
        "--stream", action="store_true", help="also hand the media to a live stream with no players, as the server does"
    )
    p.add_argument("--opcodes", action="store_true", help="also count Python opcodes per message (slow, exact)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def build_stream(seconds: float, kbps: int, chunk: int) -> tuple[bytes, int]:
    """The publisher's bytes after connect/publish, and how many media messages they hold."""
    rng = random.Random(1)
    enc = ChunkEncoder()
    parts = [enc.set_chunk_size(chunk)]
    frame = kbps * 1000 // 8 // 25
    blob = os.urandom(max(frame * 8, 65536))
    messages = 0
    audio_ts = 0.0
    for i in range(int(seconds * 25)):
        ts = i * 40
        while audio_ts <= ts:
            parts.append(enc.encode(C.CSID_AUDIO, C.AUDIO, int(audio_ts), 1, b"\xaf\x01" + blob[:200]))
            audio_ts += 1024 / 44.1
            messages += 1
        key = i % 50 == 0
        size = frame * 6 if key else int(frame * rng.uniform(0.6, 1.2))
        header = b"\x17\x01\x00\x00\x00" if key else b"\x27\x01\x00\x00\x00"
        parts.append(enc.encode(C.CSID_VIDEO, C.VIDEO, ts, 1, header + blob[:size]))
        messages += 1
    return b"".join(parts), messages


def publishing_session() -> S.RtmpSession:
    server, client = S.RtmpSession(), S.RtmpSession(client=True)

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
    client.create_stream()
    client.publish("bench")
    pump()
    server.accept_publish("bench")
    server.data_to_send()
    return server


class _Timer:
    def cancel(self) -> None:
        pass


class _Clock:
    """The stream's scheduler; timers never fire (the messages' own timestamps flush the merge window)."""

    def time(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Any) -> _Timer:
        return _Timer()


def live_stream() -> LiveStream:
    config = parse_text("listen 1935;\nvhost __defaultVhost__ { }\n")
    stream = LiveStream("__defaultVhost__", "live", "bench", config.vhost("__defaultVhost__"), 60000, _Clock())
    return stream


def run(wire: bytes, read: int, to_stream: bool = False) -> tuple[float, int]:
    session = publishing_session()
    reads = [wire[i : i + read] for i in range(0, len(wire), read)]
    received = 0
    if not to_stream:
        t0 = time.perf_counter()
        for data in reads:
            received += len(session.receive_data(data))
        return time.perf_counter() - t0, received
    # As the server hands a publisher's media on: straight from the chunk decoder to the stream.
    on_media = session.media_sink = live_stream().on_media
    t0 = time.perf_counter()
    for data in reads:
        for msg in session.receive_data(data):
            on_media(msg.type_id, msg.timestamp, msg.payload)  # type: ignore[attr-defined]
            received += 1
    return time.perf_counter() - t0, received + session.media_sunk


def count_opcodes(wire: bytes, read: int, messages: int, to_stream: bool = False) -> float:
    """Python opcodes executed per message while feeding `wire` in reads of `read` bytes."""
    session = publishing_session()
    on_media = live_stream().on_media
    if to_stream:
        session.media_sink = on_media
    reads = [wire[i : i + read] for i in range(0, len(wire), read)]

    def feed() -> None:
        for data in reads:
            for msg in session.receive_data(data):
                if to_stream:
                    on_media(msg.type_id, msg.timestamp, msg.payload)  # type: ignore[attr-defined]

    count = B.opcodes(feed)
    return count / messages


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wire, messages = build_stream(args.seconds, args.kbps, args.chunk)
    import tidecast.rtmp.chunk as chunk_module

    print(f"code: {Path(chunk_module.__file__).resolve().parent.parent}")
    print(f"stream: {args.seconds:.0f} s, {len(wire) / 1e6:.1f} MB, {messages} media messages, chunk {args.chunk}")
    results: list[dict[str, Any]] = []
    for read in (int(r) for r in args.reads.split(",")):
        best = min(run(wire, read, args.stream)[0] for _ in range(args.repeat))
        _, got = run(wire, read, args.stream)
        assert got == messages, f"{got} events for {messages} messages"
        row = {
            "read": read,
            "seconds": best,
            "messages_per_s": messages / best,
            "mb_per_s": len(wire) / best / 1e6,
            "us_per_message": best / messages * 1e6,
            "core_share_per_publisher": best / args.seconds,
        }
        line = (
            f"reads of {read:>6} B: {row['messages_per_s']:>10,.0f} msg/s  {row['mb_per_s']:7.1f} MB/s  "
            f"{row['us_per_message']:6.2f} µs/msg  {row['core_share_per_publisher'] * 100:.3f} % of a core per stream"
        )
        if args.opcodes:
            short, short_messages = build_stream(min(args.seconds, 4.0), args.kbps, args.chunk)
            row["opcodes_per_message"] = count_opcodes(short, read, short_messages, args.stream)
            line += f"  {row['opcodes_per_message']:.0f} opcodes/msg"
        results.append(row)
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
