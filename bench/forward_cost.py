"""CPU and memory one forward costs the origin: N 1 Mbps streams pushed to a real tidecast.

This process plays the origin's part: it replays the clip in real time as N
live streams and hands every message to a `ForwardSink` per stream, which
publishes it to a tidecast destination (on its own core). Two windows of
equal length are measured on this process: the replay into a sink that does
nothing (the baseline), then the replay into N real forwards. The difference,
divided by N, is what one forwarded stream costs: the sink, the RTMP chunking
and the socket writes. RSS is read the same way.

    python bench/forward_cost.py --streams 20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B

from tidecast.config import parse_text
from tidecast.relay.forward import ForwardManager, ForwardSink
from tidecast.relay.vars import StreamInfo


class NullSink:
    def on_metadata(self, payload: bytes) -> None:
        pass

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        pass


async def replay(clip: B.Clip, sinks: list[Any], seconds: float) -> int:
    """Feed every sink the clip in real time for `seconds`; returns the messages fed per sink."""
    began = time.monotonic()
    fed = 0
    loop = 0
    while True:
        for i in clip.body:
            type_id, ts, payload = clip.tags[i]
            at = loop * clip.period_ms + ts
            due = began + at / 1000
            if due - began > seconds:
                return fed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for sink in sinks:
                sink.on_message(type_id, at, payload)
            fed += 1
        loop += 1


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    clip = B.Clip(B.make_clip(Path(args.clip) if args.clip else B.CACHE / "clip-1mbps.flv", kbps=args.kbps))
    rtmp, api, http = B.free_port(), B.free_port(), B.free_port()
    workdir = B.CACHE / f"forward-{os.getpid()}"
    dest = B.start_tidecast(B.tidecast_config(rtmp, api, http), workdir, rtmp, core=1)
    try:
        meter = B.CpuMeter(os.getpid(), tree=False)
        # Baseline: the same replay into sinks that do nothing.
        nulls = [NullSink() for _ in range(args.streams)]
        rss0 = rss_kb()
        meter.reset()
        await replay(clip, nulls, args.seconds)
        base_cpu = meter.percent()

        config = parse_text(
            f"listen 1935;\nvhost __defaultVhost__ {{ forward {{ enabled on; destination 127.0.0.1:{rtmp}; }} }}"
        )
        manager = ForwardManager(config)
        sinks: list[ForwardSink] = []
        for n in range(args.streams):
            info = StreamInfo("__defaultVhost__", "live", f"s{n}", 1935)

            def attach(sink: ForwardSink) -> None:
                sinks.append(sink)
                for i in clip.head:
                    t, _, p = clip.tags[i]
                    if t == 18:
                        sink.on_metadata(p)
                    else:
                        sink.on_message(t, 0, p)

            manager.on_publish(info, attach, sinks.remove)
        deadline = time.monotonic() + 15
        while any(s.state != "forwarding" for s in sinks) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        forwarding = sum(s.state == "forwarding" for s in sinks)
        dest_meter = B.CpuMeter(dest.pid or 0, tree=False)
        meter.reset()
        await replay(clip, sinks, args.seconds)
        fwd_cpu = meter.percent()
        dest_cpu = dest_meter.percent()
        rss1 = rss_kb()
        sent = sum(s.sent_bytes for s in sinks)
        dropped = sum(s.dropped for s in sinks)
        live = B.http_json(f"http://127.0.0.1:{api}/api/v1/streams?count=1000")["streams"]
        await manager.close()
    finally:
        dest.stop()
    per = (fwd_cpu - base_cpu) / max(1, args.streams)
    return {
        "tool": "forward_cost",
        "machine": B.machine_facts(),
        "streams": args.streams,
        "seconds": args.seconds,
        "clip_kbps": round(clip.kbps),
        "forwarding": forwarding,
        "live_on_destination": sum(1 for s in live if s["publish"]["active"]),
        "baseline_cpu_percent": round(base_cpu, 2),
        "forward_cpu_percent": round(fwd_cpu, 2),
        "cpu_percent_per_forward": round(per, 3),
        "destination_cpu_percent": round(dest_cpu, 2),
        "rss_kb_per_forward": round((rss1 - rss0) / max(1, args.streams), 1),
        "sent_mbps": round(sent * 8 / args.seconds / 1e6, 2),
        "dropped_messages": dropped,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20, help="forwarded streams (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured window (default 10)")
    parser.add_argument("--kbps", type=int, default=900, help="video bitrate of the clip made when none is given")
    parser.add_argument("--clip", help="an FLV clip (default: a 1 Mbps clip made once with ffmpeg)")
    parser.add_argument("--out", default=str(B.BENCH_DIR / "results" / f"forward_cost-{B.stamp()}.json"))
    args = parser.parse_args()
    loop_name = B.use_uvloop()
    result = asyncio.run(main(args))
    result["loop"] = loop_name
    B.write_json(Path(args.out), result)
    for key in ("forwarding", "live_on_destination", "baseline_cpu_percent", "forward_cpu_percent",
                "cpu_percent_per_forward", "destination_cpu_percent", "rss_kb_per_forward", "sent_mbps",
                "dropped_messages"):  # fmt: skip
        print(f"{key:28} {result[key]}")
    print(f"wrote {args.out}")
