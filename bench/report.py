"""Markdown tables from the JSON the bench tools write (what docs/performance.md quotes).

python bench/report.py bench/results/fanout-rtmp-*.json bench/results/ingest-*.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _v(x: Any, suffix: str = "") -> str:
    return "–" if x is None else f"{x}{suffix}"


def fanout(doc: dict[str, Any]) -> list[str]:
    proto = doc["protocol"].upper() if doc["protocol"] == "rtmp" else "HTTP-FLV"
    lowat = doc["settings"].get("rcvlowat", 32768)
    out = [
        f"Fan-out, {proto} players, `SO_RCVLOWAT` {lowat} on counting players ({doc['when']}):",
        "",
        "| server | players | server CPU | keep-up | set-up failures | latency p50 / p95 | RSS per player "
        "| load CPU (+publisher) | CPU during ramp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in doc["results"]:
        for r in res["rows"]:
            sat = " **load saturated**" if r.get("load_saturated") else ""
            out.append(
                f"| {res['server']} | {r['players']:,} | {r['server_cpu_pct']}% | {r['keepup_pct']}% | "
                f"{r['setup_failures']} (+{r['closed_after_setup']} closed) | "
                f"{_v(r['latency_p50_ms'])} / {_v(r['latency_p95_ms'])} ms | {_v(r.get('rss_per_player_kb'))} KB | "
                f"{r['load_cpu_pct']}% (+{r['publisher_cpu_pct']}%){sat} | "
                f"{_v(r.get('ramp_server_cpu_pct'), '%')} over {_v(r.get('ramp_s'))} s |"
            )
    ratios = doc.get("cpu_ratio_tidecast_over_nginx") or []
    if ratios:
        out.append("")
        out.append(
            "tidecast CPU / nginx-rtmp CPU: " + ", ".join(f"{r['cpu_ratio']} at {r['players']:,}" for r in ratios)
        )
    return out


def ingest(doc: dict[str, Any]) -> list[str]:
    out = [
        f"Ingest, {doc['clip_kbps']} kbps publishers ({doc['when']}):",
        "",
        "| HLS | publishers | server CPU | CPU per stream | streams in real time | server took (min) "
        "| RSS | server state R/S/D | load CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in doc["results"]:
        for r in res["rows"]:
            st = r.get("server_state_pct") or {}
            state = "/".join(f"{st.get(k, 0)}" for k in ("R", "S", "D"))
            out.append(
                f"| {'on' if res['hls'] else 'off'} | {r['publishers']} | {r['server_cpu_pct']}% | "
                f"{r['cpu_per_stream_pct']}% | {r['realtime_pct']}% | {r['server_took_min_pct']}% | "
                f"{r['server_rss_mb']} MB | {state} % | {r['load_cpu_pct']}% |"
            )
    return out


def latency(doc: dict[str, Any]) -> list[str]:
    proto = doc["settings"]["protocol"].upper()
    out = [
        f"Latency, {proto} players, publisher write → player read of the same frame ({doc['when']}):",
        "",
        "| mode | path | players | frames | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in doc["results"]:
        mode = "`min_latency on`" if res["min_latency"] else "default (`mw_latency 350`)"
        for path, s in res["paths"].items():
            route = "origin → edge → player" if path == "edge" else "origin → player"
            out.append(
                f"| {mode} | {route} | {s['players']} | {s['samples']} | {s['p50_ms']} ms | {s['p95_ms']} ms | "
                f"{s['p99_ms']} ms | {s['max_ms']} ms |"
            )
    return out


def profiles(doc: dict[str, Any], top: int) -> list[str]:
    out: list[str] = []
    for res in doc["results"]:
        for prof in res.get("profiles", []):
            n = prof.get("players") or prof.get("publishers")
            what = "players" if "players" in prof else "publishers"
            out += [
                "",
                f"py-spy, {res['server']} at {n} {what}: {prof['samples']} samples, busy {prof['busy_pct']}%",
                "",
                "| self | frame |",
                "|---|---|",
            ]
            out += [f"| {f['pct']}% | `{f['frame']}` |" for f in prof["self"][:top]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="JSON files written by fanout.py, ingest.py, latency.py")
    p.add_argument("--top", type=int, default=8, help="profile frames per table (8)")
    args = p.parse_args()
    for path in args.files:
        doc = json.loads(path.read_text())
        tool = doc.get("tool", "")
        lines = {"bench/fanout.py": fanout, "bench/ingest.py": ingest, "bench/latency.py": latency}[tool](doc)
        lines += profiles(doc, args.top)
        print(f"<!-- {path.name} -->")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
