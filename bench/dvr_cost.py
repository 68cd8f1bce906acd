"""Micro-benchmark of DVR recording: a clip's FLV tags through a Recorder, N times, as fast as it goes.

    python bench/dvr_cost.py [--rounds 10] [--kbps 900] [--seconds 20] [--format flv|mp4|both]
                             [--plan session|segment] [--clip x.flv] [--dir /dev/shm/x]

Makes an H.264 (B-frames, GOP 1 s) + AAC clip with ffmpeg unless --clip is
given, records it `rounds` times into real files (each round one publish: open,
write, moov or metadata patch, rename) and prints the CPU time per message and
what one recorded live stream of the clip's bitrate costs as a share of one
core, and the peak memory the recorder's tables took (MP4 keeps its sample
tables until the file is reaped).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from tidecast import config
from tidecast.codec.flv import TAG_SCRIPT, FlvReader
from tidecast.dvr import dvr_recorder_for


def make_clip(path: Path, seconds: int, kbps: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
         "-bufsize", f"{kbps}k", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2",
         "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def run(
    fmt: str, plan: str, tags: list[tuple[int, int, bytes]], rounds: int, root: Path, trace: bool
) -> tuple[float, float, int]:
    """(cpu seconds, wall seconds, peak traced bytes) to record the tags `rounds` times; memory is traced
    only with `trace`, as tracing slows allocations down and would inflate the CPU figures."""
    settings = dataclasses.replace(
        config.Dvr(enabled=True, dvr_plan=plan, dvr_duration=10), dvr_path=str(root / f"[stream]-[timestamp].{fmt}")
    )
    duration_ms = tags[-1][1] - tags[0][1] + 40
    cpu = wall = 0.0
    peak = 0
    stamp = iter(range(1_000_000_000))
    for i in range(rounds):
        recorder = dvr_recorder_for(settings, "v", "live", "bench", clock=lambda: 1.7e9 + next(stamp))
        assert recorder is not None
        offset = i * duration_ms
        if trace:
            tracemalloc.start()
        started, started_wall = time.process_time(), time.perf_counter()
        recorder.on_publish()
        for type_id, ts, payload in tags:
            if type_id == TAG_SCRIPT:
                recorder.on_metadata(payload)
            else:
                recorder.on_message(type_id, ts + offset, payload)
            recorder.tick(time.time())
        recorder.on_unpublish()
        cpu += time.process_time() - started
        wall += time.perf_counter() - started_wall
        if trace:
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    return cpu, wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="times the clip is recorded")
    parser.add_argument("--kbps", type=int, default=900, help="video bitrate of the generated clip (+64k audio)")
    parser.add_argument("--seconds", type=int, default=20, help="length of the generated clip")
    parser.add_argument("--format", choices=("flv", "mp4", "both"), default="both")
    parser.add_argument("--plan", choices=("session", "segment"), default="session", help="segment: 10 s files")
    parser.add_argument("--clip", type=Path, help="an FLV file to use instead of a generated clip")
    parser.add_argument("--dir", type=Path, help="where recordings go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        clip = args.clip
        if clip is None:
            clip = Path(tmp) / "clip.flv"
            make_clip(clip, args.seconds, args.kbps)
        tags = FlvReader().feed(clip.read_bytes())
        media_bytes = sum(len(payload) for _, _, payload in tags)
        duration = (tags[-1][1] - tags[0][1]) / 1000.0 + 0.04
        mbps = media_bytes * 8 / duration / 1e6
        print(f"clip: {clip.name}, {duration:.1f} s, {mbps:.2f} Mbit/s, {len(tags)} messages, plan {args.plan}")
        for fmt in ("flv", "mp4") if args.format == "both" else (args.format,):
            cpu, wall, _ = run(fmt, args.plan, tags, args.rounds, Path(tmp) / fmt, trace=False)
            peak = run(fmt, args.plan, tags, 1, Path(tmp) / f"{fmt}-traced", trace=True)[2]
            messages = len(tags) * args.rounds
            share = cpu / (duration * args.rounds) * 100
            print(
                f"{fmt}: cpu {cpu:.3f} s (wall {wall:.3f} s) for {args.rounds} rounds, "
                f"{cpu / messages * 1e6:.2f} us per message; one recorded stream: {share:.3f}% of one core "
                f"({share / mbps:.3f}% per Mbit/s), => {100 / share:.0f} recorded streams per core; "
                f"peak traced memory {peak / 1024:.0f} KiB for {duration:.0f} s"
            )


if __name__ == "__main__":
    main()
