"""The long attack campaign (issue 20): every class of tests/test_attack_campaign.py, harder and longer.

    python bench/attacks.py                          # all 15 classes, --scale 10, --seconds 15 (about 5 min)
    python bench/attacks.py --classes fuzz --scale 65    # 2,600 fuzzed publish sessions
    python bench/attacks.py --heavy                  # an 8 Mbit/s healthy stream watching too

Each class runs against a fresh tidecast (HLS and HTTP-FLV on, max_connections 1000) on loopback, while
a healthy 1 Mbit/s publisher (ffmpeg -re) and RTMP player watch; counts are the test's times --scale
(bounded: at most 400 MB of frames, 100 non-reading players, 1,000 idle sockets, 40 x 9 MiB held
messages), sustained attacks last --seconds, and the server's own timeouts are waited
out and checked (a non-reading player is closed after 30 s, a header-less HTTP socket after 10 s, a
reload stuck on a FIFO refused after 5 s). Per class: the healthy player's worst stall and longest gap,
the server's peak RSS and its growth against the class's stated bound, and whether it survived. A table
on stdout, JSON in bench/results/attacks-*.json. Exit status 1 when any class had a problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import BENCH_DIR, machine_facts
from testkit.attacks import CLASSES, ORDER, STALL_SLACK_MS, Bed, Result, Scale, measure

from tidecast.config.model import Play


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", default=",".join(ORDER), help="comma list (all 15)")
    p.add_argument("--scale", type=int, default=10, help="counts are the test's times this (10; at most 100)")
    p.add_argument("--seconds", type=float, default=15.0, help="how long sustained attacks last (15; at most 120)")
    p.add_argument("--no-timeouts", action="store_true", help="do not wait out the server's 30/10/5 s timeouts")
    p.add_argument("--heavy", action="store_true", help="an 8 Mbit/s healthy stream too (its clip takes ~30 s)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds watched after each attack (1)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where the JSON goes")
    args = p.parse_args(argv)
    unknown = sorted(set(args.classes.split(",")) - set(CLASSES))
    if unknown:
        p.error(f"unknown classes {unknown}; known: {', '.join(ORDER)}")
    if not 1 <= args.scale <= 100 or not 0.5 <= args.seconds <= 120:
        p.error("--scale 1..100, --seconds 0.5..120")
    return args


def table(results: list[Result], limit: float) -> str:
    rows = [
        ("class", "worst stall ms", "max gap ms", "RSS before", "peak MiB", "growth", "allowed", "survived", "ok", "s")
    ]
    for r in results:
        rows.append(
            (
                r.name,
                f"{r.worst_stall_ms:.0f}",
                f"{r.max_gap_ms:.0f}",
                f"{r.rss_before / 2**20:.0f}",
                f"{r.rss_peak / 2**20:.0f}",
                f"+{r.growth / 2**20:.0f}",
                f"+{r.allowance / 2**20:.0f}",
                "yes" if r.survived else "NO",
                "yes" if not r.problems(limit) else "NO",
                f"{r.seconds:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = Scale(n=args.scale, seconds=args.seconds, timeouts=not args.no_timeouts)
    limit = Play.mw_latency + STALL_SLACK_MS
    names = [n for n in ORDER if n in args.classes.split(",")]
    results: list[Result] = []
    started = time.strftime("%Y%m%d-%H%M%S")
    for name in names:
        print(f"== {name}: {CLASSES[name].finding}", flush=True)
        bed = Bed(name, max_connections=1000, heavy=args.heavy)
        try:
            result = measure(bed, name, scale, settle=args.settle)
        finally:
            bed.close()
        results.append(result)
        print(f"   {result.line()}", flush=True)
        for problem in result.problems(limit):
            print(f"   PROBLEM: {problem}", flush=True)
    print()
    print(table(results, limit))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"attacks-{started}.json"
    doc = {
        "tool": "bench/attacks.py",
        "machine": machine_facts(),
        "scale": vars(scale),
        "stall_limit_ms": limit,
        "classes": [r.as_json(limit) for r in results],
    }
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return 1 if any(r.problems(limit) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
