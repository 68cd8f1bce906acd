"""Micro-benchmark of HLS muxing: a clip's FLV tags through HlsMuxer, N times, as fast as it goes.

    python bench/hls_mux.py [--rounds 10] [--kbps 1000] [--seconds 20] [--clip x.flv] [--dir /dev/shm/x]
    python bench/hls_mux.py --streams 300 [--steps 15]     # 300 muxers in turn, as a busy origin runs them

Makes an H.264 (B-frames, GOP 1 s) + AAC clip with ffmpeg unless --clip is
given, muxes it `rounds` times into real files (renames, playlist rewrites and
cleanup included; --dir picks the filesystem, e.g. a tmpfs) and prints the
CPU time per message, the muxing throughput, and what one live stream of the
clip's bitrate costs as a share of one core.

With --streams N, N muxers (each publish starting at its own place in the
clip) are fed in turn, a burst of --burst messages each (what one merged read
of a publisher holds at mr_latency 350), --steps times: the state of N streams
and their write buffers no longer fit the CPU caches, as in a server.

Wall and CPU time on a shared machine swing by a third from one second to the
next; --opcodes also counts the Python bytecodes executed per message (one
traced round), a figure that compares two versions of the code exactly (the
copies done in C and the system calls are not in it).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as B

from tidecast import config
from tidecast.codec.flv import FlvReader
from tidecast.hls.segmenter import HlsMuxer


def Settings(**overrides: Any) -> config.Hls:
    return dataclasses.replace(config.Hls(enabled=True, hls_dispose=0.0), **overrides)


def make_clip(path: Path, seconds: int, kbps: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
         "-bufsize", f"{kbps}k", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2",
         "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def clip_tags(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[tuple[int, int, bytes]]]:
    """--clip, or a clip made in `tmp` from --seconds and --kbps, and its tags."""
    clip = args.clip
    if clip is None:
        clip = tmp / "clip.flv"
        make_clip(clip, args.seconds, args.kbps)
    return clip, FlvReader().feed(clip.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="times the clip is muxed")
    parser.add_argument("--kbps", type=int, default=900, help="video bitrate of the generated clip (+64k audio)")
    parser.add_argument("--seconds", type=int, default=20, help="length of the generated clip")
    parser.add_argument("--fragment", type=float, default=10.0, help="hls_fragment (SRS default 10)")
    parser.add_argument("--clip", type=Path, help="an FLV file to use instead of a generated clip")
    parser.add_argument("--dir", type=Path, help="where segments go (default: a temporary directory)")
    parser.add_argument("--opcodes", action="store_true", help="also count Python opcodes per message (one round)")
    parser.add_argument("--streams", type=int, default=0, help="N muxers fed in turn (0: one muxer, --rounds)")
    parser.add_argument("--burst", type=int, default=24, help="messages per muxer per turn with --streams (24)")
    parser.add_argument("--steps", type=int, default=15, help="turns of every muxer with --streams (15)")
    args = parser.parse_args()
    if args.streams:
        many(args)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        clip, tags = clip_tags(args, Path(tmp))
        media_bytes = sum(len(payload) for _, _, payload in tags)
        duration = (tags[-1][1] - tags[0][1]) / 1000.0 + 0.04
        muxer = HlsMuxer(Settings(hls_path=str(Path(tmp) / "hls"), hls_fragment=args.fragment), "v", "live", "bench")
        offset = 0
        cpu = 0.0
        wall = 0.0
        for _ in range(args.rounds):
            muxer.on_publish()
            started, started_wall = time.process_time(), time.perf_counter()
            for type_id, ts, payload in tags:
                muxer.on_message(type_id, ts + offset, payload)
            muxer.on_unpublish()
            cpu += time.process_time() - started
            wall += time.perf_counter() - started_wall
            offset += int(duration * 1000)
        messages = len(tags) * args.rounds
        mbps = media_bytes * 8 / duration / 1e6
        share = cpu / (duration * args.rounds) * 100
        print(f"clip: {clip.name}, {duration:.1f} s, {mbps:.2f} Mbit/s, {len(tags)} messages")
        print(f"hls_fragment {args.fragment:g} s, output under {tmp}")
        print(f"cpu {cpu:.3f} s (wall {wall:.3f} s) for {args.rounds} rounds")
        print(
            f"{cpu / messages * 1e6:.2f} us per message, {media_bytes * 8 * args.rounds / cpu / 1e6:.0f} Mbit/s muxed"
        )
        print(f"one live stream of this clip: {share:.3f}% of one core ({share / mbps:.3f}% per Mbit/s)")
        print(f"=> {100 / share:.0f} such streams per core for HLS muxing alone")
        if args.opcodes:
            per_message = count_opcodes(muxer, tags, offset) / len(tags)
            print(f"{per_message:.1f} Python opcodes per message")


def many(args: argparse.Namespace) -> None:
    """--streams: N muxers in turn, a burst each, CPU time per message."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        _, tags = clip_tags(args, Path(tmp))
        duration_ms = tags[-1][1] - tags[0][1] + 40
        headers = [tag for tag in tags[:10] if tag[2][1:2] == b"\x00"]  # the sequence headers
        hls = Settings(hls_path=str(Path(tmp) / "hls"), hls_fragment=args.fragment)
        muxers = [HlsMuxer(hls, "v", "live", f"s{i}") for i in range(args.streams)]
        at = [(i * 97) % len(tags) for i in range(args.streams)]  # each stream somewhere else in its GOP
        offset = [0] * args.streams
        for muxer in muxers:
            muxer.on_publish()
            for type_id, _, payload in headers:
                muxer.on_message(type_id, 0, payload)

        def turn() -> int:
            fed = 0
            for i, muxer in enumerate(muxers):
                k = at[i]
                for _ in range(args.burst):
                    type_id, ts, payload = tags[k]
                    muxer.on_message(type_id, ts + offset[i], payload)
                    k += 1
                    if k == len(tags):
                        k = 0
                        offset[i] += duration_ms
                at[i] = k
                fed += args.burst
            return fed

        for _ in range(3):  # every muxer has a segment open
            turn()
        started = time.process_time()
        messages = sum(turn() for _ in range(args.steps))
        cpu = time.process_time() - started
        for muxer in muxers:
            muxer.on_unpublish()
        per_stream_rate = len(tags) / (duration_ms / 1000.0)
        print(f"{args.streams} muxers in turn, {args.burst} messages each, {messages} messages")
        print(f"{cpu / messages * 1e6:.2f} us per message")
        print(f"one live stream of this clip: {cpu / messages * per_stream_rate * 100:.3f}% of one core")


def count_opcodes(muxer: HlsMuxer, tags: list[tuple[int, int, bytes]], offset: int) -> int:
    """Bytecodes executed to mux the clip once more (one publish)."""

    def mux() -> None:
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts + offset, payload)

    muxer.on_publish()
    count = B.opcodes(mux)
    muxer.on_unpublish()
    return count


if __name__ == "__main__":
    main()
