"""Per-operation figures from the audience's events, and the markdown summary."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from benchlib import percentile  # noqa: E402


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _in(t: float, t0: float, t1: float) -> bool:
    return t0 <= t < t1


def analyse(
    ops: list[dict[str, Any]],
    events: list[dict[str, Any]],
    outages: list[dict[str, Any]],
    restarts: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    by_sid: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if "sid" in e:
            by_sid.setdefault(e["sid"], []).append(e)
    out = []
    for op in ops:
        t0, t_end = op["t0"], op["t_end"]
        plays = [
            e for e in events
            if e["ev"] in ("play_ok", "play_fail") and _in(e["at"], t0, t_end) and not e.get("reconnect")
        ]  # fmt: skip
        failed = [e for e in plays if e["ev"] == "play_fail"]
        reconnect_fails = [
            e for e in events if e["ev"] == "play_fail" and e.get("reconnect") and _in(e["at"], t0, t_end)
        ]
        cuts = [e for e in events if e["ev"] == "cut" and _in(e["t"], t0, t_end)]
        gaps: list[float] = []
        unrecovered = 0
        cut_protocols: Counter[str] = Counter()
        for cut in cuts:
            cut_protocols[cut["proto"]] += 1
            after = [
                e for e in by_sid[cut["sid"]]
                if e["ev"] == "play_ok" and e.get("reconnect") and e["t"] >= cut["t"]
            ]  # fmt: skip
            if after:
                gaps.append(after[0]["first"] - cut["last"])
            else:
                unrecovered += 1
        media_gaps = [e for e in events if e["ev"] == "gap" and _in(e["start"], t0, t_end)]
        media = [e["end"] - e["start"] for e in media_gaps]
        players_with_gap = len({e["sid"] for e in media_gaps if e["end"] - e["start"] >= 1.0})
        hls_errors = [e for e in events if e["ev"] == "hls_error" and _in(e["t"], t0, t_end)]
        stalls = [e for e in events if e["ev"] == "hls_stall" and _in(e["end"], t0, t_end)]
        switches = [e for e in events if e["ev"] == "hls_switch" and _in(e["t"], t0, t_end)]
        pub = [o for o in outages if o["start"] < t_end and o["end"] > t0]
        lags = [e["s"] for e in events if e["ev"] == "load_lag" and _in(e["t"], t0, t_end)]
        result = op["result"]
        wall = result.get("wall_s") if isinstance(result, dict) else None
        out.append(
            {
                "operation": op["name"],
                "wall_s": wall if wall is not None else _r(op["t1"] - t0, 2),
                "window_s": _r(t_end - t0, 1),
                "new_plays": len(plays),
                "new_plays_failed": len(failed),
                "new_play_failures": dict(Counter(f"{e['proto']}: {e['error']}"[:120] for e in failed).most_common(8)),
                "reconnect_attempts_failed": len(reconnect_fails),
                "reconnect_failures": dict(
                    Counter(f"{e['proto']}: {e['error']}"[:120] for e in reconnect_fails).most_common(5)
                ),
                "players_cut": len(cuts),
                "players_cut_by_protocol": dict(cut_protocols),
                "cut_reasons": dict(Counter(str(e.get("error"))[:100] for e in cuts).most_common(5)),
                "reconnect_gap_p50_s": _r(percentile(gaps, 50)),
                "reconnect_gap_p99_s": _r(percentile(gaps, 99)),
                "reconnect_gap_max_s": _r(max(gaps) if gaps else None),
                "cut_not_playing_again": unrecovered,
                "media_gaps_over_0_8s": len(media),
                "players_with_media_gap_over_1s": players_with_gap,
                "media_gap_p99_s": _r(percentile(media, 99)),
                "media_gap_max_s": _r(max(media) if media else None),
                "hls_fetch_errors": len(hls_errors),
                "hls_fetch_error_kinds": dict(
                    Counter(f"{e['what']}: {e['error']}"[:100] for e in hls_errors).most_common(5)
                ),
                "hls_stalls": len(stalls),
                "hls_stall_max_s": _r(max((e["end"] - e["start"] for e in stalls), default=None)),
                "hls_pod_switches": len(switches),
                "publisher_outages": len(pub),
                "publisher_outage_max_s": _r(max((o["s"] for o in pub), default=None)),
                "publisher_restarts": sum(1 for r in restarts if _in(r["t"], t0, t_end)),
                "load_lag_max_s": _r(max(lags) if lags else 0.0),
                "machine_busy_pct": op.get("machine_busy_pct"),
                "result": result,
            }
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown(doc: dict[str, Any]) -> str:
    p = doc["players"]
    s = doc["settings"]
    lines = [
        f"# clusterbed run: {p['rtmp'] + p['flv'] + p['hls']} players "
        f"({p['rtmp']} RTMP, {p['flv']} HTTP-FLV, {p['hls']} HLS) on {p['streams']} streams, "
        f"{s['edges']} edges, {s['origins']} origins",
        "",
        f"`{doc['command']}`",
        "",
        f"Network: **{doc['network_mode']}**"
        + (f" ({doc['network_note']})" if doc.get("network_note") else "")
        + f"; endpoint lag {s['endpoint_lag_s']} s; maxSurge {s['max_surge']}, maxUnavailable "
        f"{s['max_unavailable']}, minReadySeconds {s['min_ready_s']}; grace_start_wait {s['grace_start_wait_ms']} ms, "
        f"grace_drain_timeout {s['grace_drain_timeout_ms']} ms; paced drain "
        + (f"{s['drain_pace_per_s']:.0f} players/s" if s.get("drain_pace_per_s") else "off")
        + f"; HLS readiness gate {'on' if s.get('hls_readiness_gate') else 'off'}; "
        + (
            "edge HLS fetched from the origins' shared directory (hls_fetch), HTTP per request; "
            if s.get("edge_hls", "local") == "fetch"
            else "edge HLS cut by each edge, HLS players kept on one edge by a cookie; "
        )
        + f"{p['churn_per_s']} new plays/s throughout.",
        "",
        "| operation | wall s | new plays failed | players cut | reconnect gap p50 / p99 / max s | not back |"
        " media gaps > 1 s (players) / max s | HLS fetch errors | HLS stalls | publisher outage max s |"
        " machine busy % | load lag max s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op in doc["operations"]:
        lines.append(
            f"| {op['operation']} | {_fmt(op['wall_s'])} | {op['new_plays_failed']} / {op['new_plays']} | "
            f"{op['players_cut']} | {_fmt(op['reconnect_gap_p50_s'])} / {_fmt(op['reconnect_gap_p99_s'])} / "
            f"{_fmt(op['reconnect_gap_max_s'])} | {op['cut_not_playing_again']} | "
            f"{op['players_with_media_gap_over_1s']} / {_fmt(op['media_gap_max_s'])} | {op['hls_fetch_errors']} | "
            f"{op['hls_stalls']} | {_fmt(op['publisher_outage_max_s'])} | {_fmt(op['machine_busy_pct'])} | "
            f"{_fmt(op['load_lag_max_s'])} |"
        )
    lines.append("")
    for op in doc["operations"]:
        notes = []
        if op["new_play_failures"]:
            notes.append("new play failures: " + "; ".join(f"{k} ×{v}" for k, v in op["new_play_failures"].items()))
        if op["reconnect_failures"]:
            notes.append(
                "failed reconnect attempts: " + "; ".join(f"{k} ×{v}" for k, v in op["reconnect_failures"].items())
            )
        if op["hls_fetch_error_kinds"]:
            notes.append("HLS errors: " + "; ".join(f"{k} ×{v}" for k, v in op["hls_fetch_error_kinds"].items()))
        res = op["result"]
        if op["operation"] == "canary":
            notes.append(
                f"canary {res.get('canary_version')}: `tidecast status --compare` said **{res.get('decision')}**"
                + (f" ({'; '.join(res['compare']['reasons'])})" if res.get("compare", {}).get("reasons") else "")
            )
        if op["operation"] == "rollback":
            notes.append(
                f"bad rollout: {res['bad_rollout'].get('reason', 'ok?')} after {res['bad_rollout']['wall_s']} s; "
                f"undo {res['undo']['wall_s']} s; versions after: {', '.join(res['versions_after'])}"
            )
        if notes:
            lines.append(f"- **{op['operation']}**: " + " — ".join(notes))
    probes = doc.get("terminating_pod_probes") or {}
    if probes:
        lines += ["", "New clients sent straight to a terminating edge pod (from its deletion on):", ""]
        for pod, rows in probes.items():
            seen = []
            for row in rows:
                item = f"{row['after_s']:.1f}s rtmp={row['rtmp']} flv={row['flv']} hls={row['hls']}"
                seen.append(item)
            lines.append(f"- {pod}: " + "; ".join(seen[:12]) + (" …" if len(seen) > 12 else ""))
    return "\n".join(lines) + "\n"
