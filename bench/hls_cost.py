"""CPU cost of HLS muxing per stream: a clip's FLV tags through HlsMuxer as fast as possible.

    python bench/hls_cost.py [--seconds 30] [--kbps 1000]

Makes an H.264+AAC clip with ffmpeg at the given bitrate, muxes it repeatedly
into a temporary directory (real files, renames and cleanup included) and
reports microseconds per message and the share of one core a live stream of
that bitrate costs.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from tidecast.codec.flv import iter_flv_tags
from tidecast.config import Hls
from tidecast.hls.segmenter import HlsMuxer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30, help="clip length in seconds")
    parser.add_argument("--kbps", type=int, default=1000, help="video bitrate of the clip")
    parser.add_argument("--rounds", type=int, default=5, help="times the clip is muxed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.flv"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
             "-f", "lavfi", "-i", "sine", "-t", str(args.seconds), "-c:v", "libx264", "-preset", "veryfast",
             "-b:v", f"{args.kbps}k", "-minrate", f"{args.kbps}k", "-maxrate", f"{args.kbps}k", "-bufsize",
             f"{args.kbps}k", "-g", "25", "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(clip)],
            check=True,
        )  # fmt: skip
        tags = list(iter_flv_tags(clip.read_bytes()))
        media_bytes = sum(len(p) for _, _, p in tags)
        duration = tags[-1][1] / 1000.0
        settings = Hls(enabled=True, hls_fragment=2.0, hls_window=10.0, hls_path=str(Path(tmp) / "hls"))
        muxer = HlsMuxer(settings, "__defaultVhost__", "live", "bench")
        cpu = 0.0
        offset = 0
        for _ in range(args.rounds):
            muxer.on_publish()
            started = time.process_time()
            for type_id, ts, payload in tags:
                muxer.on_message(type_id, ts + offset, payload)
            cpu += time.process_time() - started
            muxer.on_unpublish()
            offset += tags[-1][1] + 40
        messages = len(tags) * args.rounds
        kbps = media_bytes * 8 / duration / 1000
        share = cpu / (duration * args.rounds) * 100
        print(f"clip: {duration:.0f} s, {kbps:.0f} kbps, {len(tags)} messages")
        print(f"hls mux: {cpu / messages * 1e6:.1f} us per message, {share:.2f}% of one core per live stream")
        print(f"=> about {100 / share:.0f} such streams per core for HLS muxing alone")


if __name__ == "__main__":
    main()
