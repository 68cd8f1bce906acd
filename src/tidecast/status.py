"""`tidecast status`: the health of a whole cluster, track by track (seed 003's global health tool).

Each endpoint is a tidecast HTTP API (port 1985). It is asked for /readyz,
/api/v1/versions, /api/v1/summaries, /api/v1/streams and /metrics, twice,
`--interval` seconds apart, so counters become "in the last interval" figures.
Endpoints come in tracks (`NAME=URL,URL,...`); a URL or a bare host whose name
resolves to several addresses (a headless Service) stands for all of them.

`--compare CANARY BASELINE` judges one track against another on the rates a
bad version shows first (refused connections per new connection, edge
upstream reconnects and dropped frames per player-minute) and is what a
canary pipeline uses to promote or abort.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_API_PORT = 1985

EXIT_OK = 0
EXIT_UNHEALTHY = 1  # an endpoint is down or not ready
EXIT_USAGE = 2
EXIT_CANARY_WORSE = 3  # --compare: the canary is worse than the baseline


# ---------------------------------------------------------------- endpoints


@dataclass
class Endpoint:
    track: str
    url: str  # http://host:port, no trailing slash
    given: str  # what the user typed, for messages


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def expand(spec: str, track: str) -> list[Endpoint]:
    """One endpoint per address: a DNS name resolving to N pods gives N endpoints."""
    text = spec.strip()
    if not text:
        return []
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{spec!r}: not an API URL (want http://HOST[:PORT], HOST[:PORT] or a DNS name)")
    host = parts.hostname
    port = parts.port or DEFAULT_API_PORT
    if _is_ip(host):
        addrs = [host]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"{spec!r}: cannot resolve {host}: {exc}") from exc
        addrs = sorted({str(info[4][0]) for info in infos}, key=_addr_key)
    out = []
    for addr in addrs:
        shown = f"[{addr}]" if ":" in addr else addr
        out.append(Endpoint(track, f"{parts.scheme}://{shown}:{port}", spec))
    return out


def _addr_key(addr: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(addr)
    return (ip.version, int(ip))


def parse_targets(specs: Sequence[str]) -> list[Endpoint]:
    """`NAME=URL,URL` is a track; anything else goes to the track named `default`."""
    endpoints: list[Endpoint] = []
    for spec in specs:
        track = "default"
        body = spec
        head, sep, rest = spec.partition("=")
        if sep and "/" not in head and ":" not in head:
            track, body = head, rest
        for item in body.split(","):
            endpoints.extend(expand(item, track))
    return endpoints


# ---------------------------------------------------------------- probing


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format, enough of it for tidecast's own /metrics."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, _, rest = line.partition("{")
            body, _, value = rest.rpartition("}")
            for item in _split_labels(body):
                key, _, val = item.partition("=")
                labels[key.strip()] = val.strip().strip('"').replace('\\"', '"').replace("\\\\", "\\")
        else:
            name, _, value = line.partition(" ")
        try:
            number = float(value.split()[0])
        except (ValueError, IndexError):
            continue
        out.setdefault(name.strip(), []).append((labels, number))
    return out


def _split_labels(body: str) -> list[str]:
    items, cur, quoted, escape = [], "", False, False
    for ch in body:
        if escape:
            cur += ch
            escape = False
        elif ch == "\\":
            cur += ch
            escape = True
        elif ch == '"':
            cur += ch
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur)
    return items


def _total(metrics: dict[str, list[tuple[dict[str, str], float]]], *names: str) -> float:
    """Sum over every series of the first name present (prometheus_client adds `_total` to counters)."""
    for name in names:
        if name in metrics:
            return sum(v for _, v in metrics[name])
    return 0.0


@dataclass
class Sample:
    at: float
    connections_total: float = 0.0
    errors: float = 0.0
    reconnects: float = 0.0
    dropped: float = 0.0


@dataclass
class EndpointStatus:
    track: str
    url: str
    state: str = "down"  # down | starting | draining | ready
    error: str = ""
    version: str = ""
    tag: str = ""
    pid: int | None = None
    uptime_s: int | None = None
    streams: int = 0
    players: int = 0
    publishers: int = 0
    clients: int = 0
    # Deltas over the interval (None when only one sample was taken).
    interval_s: float | None = None
    new_connections: float | None = None
    errors: float | None = None
    reconnects: float | None = None
    dropped_frames: float | None = None
    first: Sample | None = field(default=None, repr=False)

    @property
    def up(self) -> bool:
        return self.state != "down"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def full_version(self) -> str:
        return f"{self.version}+{self.tag}" if self.tag else self.version

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("first", None)
        doc.update(up=self.up, ready=self.ready, full_version=self.full_version)
        return doc


def probe(ep: Endpoint, timeout: float) -> EndpointStatus:
    st = EndpointStatus(ep.track, ep.url)
    try:
        ready_code, _ = _get(f"{ep.url}/readyz", timeout)
        code, body = _get(f"{ep.url}/metrics", timeout)
        if code != 200:
            raise OSError(f"/metrics answered HTTP {code}")
        metrics = parse_metrics(body.decode("utf-8", "replace"))
        _, vbody = _get(f"{ep.url}/api/v1/versions", timeout)
        _, sbody = _get(f"{ep.url}/api/v1/summaries", timeout)
        _, streams_body = _get(f"{ep.url}/api/v1/streams?count=1000", timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        st.error = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        return st
    try:
        st.version = str(json.loads(vbody)["data"]["version"])
        summary = json.loads(sbody)["data"]["self"]
        st.pid = int(summary["pid"])
        st.uptime_s = int(summary["srs_uptime"])
        streams = json.loads(streams_body).get("streams", [])
    except (ValueError, KeyError, TypeError) as exc:
        st.error = f"unexpected API answer: {exc}"
        return st
    for labels, _ in metrics.get("srs_build_info", []):
        st.tag = labels.get("tag", "")
    draining = _total(metrics, "tidecast_draining") > 0
    st.state = "ready" if ready_code == 200 else "draining" if draining else "starting"
    st.streams = len(streams)
    st.publishers = sum(1 for s in streams if (s.get("publish") or {}).get("active"))
    for labels, value in metrics.get("tidecast_connections", []):
        kind = labels.get("type", "")
        if kind.endswith("play"):
            st.players += int(value)
    st.clients = int(_total(metrics, "srs_clients"))
    st.first = Sample(
        at=time.monotonic(),
        connections_total=_total(metrics, "srs_clients_total"),
        errors=_total(metrics, "srs_clients_errs_total"),
        reconnects=_total(metrics, "tidecast_edge_upstream_reconnects_total", "tidecast_edge_upstream_reconnects"),
        dropped=_total(metrics, "tidecast_stream_dropped_frames_total", "tidecast_stream_dropped_frames"),
    )
    return st


def _delta(before: EndpointStatus, after: EndpointStatus) -> EndpointStatus:
    """The second sample with counters turned into what happened between the two."""
    a, b = before.first, after.first
    if a is None or b is None or before.pid != after.pid:
        # A restart between samples resets the counters: the interval is unknown.
        return after
    after.interval_s = round(b.at - a.at, 3)
    after.new_connections = max(0.0, b.connections_total - a.connections_total)
    after.errors = max(0.0, b.errors - a.errors)
    after.reconnects = max(0.0, b.reconnects - a.reconnects)
    after.dropped_frames = max(0.0, b.dropped - a.dropped)
    return after


def collect(endpoints: Sequence[Endpoint], interval: float, timeout: float) -> list[EndpointStatus]:
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(endpoints)))) as pool:
        first = list(pool.map(lambda ep: probe(ep, timeout), endpoints))
        if interval <= 0:
            return first
        time.sleep(interval)
        second = list(pool.map(lambda ep: probe(ep, timeout), endpoints))
    return [_delta(a, b) for a, b in zip(first, second, strict=True)]


# ---------------------------------------------------------------- tracks and the canary verdict


def track_summary(statuses: Sequence[EndpointStatus]) -> dict[str, Any]:
    def total(attr: str) -> float | None:
        values = [getattr(s, attr) for s in statuses if getattr(s, attr) is not None]
        return sum(values) if values else None

    up = [s for s in statuses if s.up]
    players = sum(s.players for s in up)
    interval = max((s.interval_s or 0.0 for s in up), default=0.0)
    new = total("new_connections")
    errors = total("errors")
    reconnects = total("reconnects")
    dropped = total("dropped_frames")
    minutes = interval / 60.0
    player_minutes = max(players, 1) * minutes if minutes else 0.0
    return {
        "endpoints": len(statuses),
        "up": len(up),
        "ready": sum(1 for s in statuses if s.ready),
        "draining": sum(1 for s in statuses if s.state == "draining"),
        "versions": sorted({s.full_version for s in up}),
        "streams": sum(s.streams for s in up),
        "players": players,
        "interval_s": interval or None,
        "new_connections": new,
        "errors": errors,
        "reconnects": reconnects,
        "dropped_frames": dropped,
        # Rates that compare across tracks of different sizes.
        "error_rate": (errors / max(new or 0.0, 1.0)) if errors is not None else None,
        "reconnects_per_min": (reconnects / minutes) if reconnects is not None and minutes else None,
        "dropped_per_player_min": (dropped / player_minutes) if dropped is not None and player_minutes else None,
    }


@dataclass
class Thresholds:
    max_error_rate_delta: float = 0.01  # canary error rate may exceed the baseline's by this much
    max_reconnect_ratio: float = 2.0  # canary reconnects/min may be this many times the baseline's ...
    reconnect_slack_per_min: float = 1.0  # ... plus this many
    max_dropped_ratio: float = 2.0
    dropped_slack_per_player_min: float = 5.0
    min_ready_fraction: float = 1.0  # of the canary's endpoints


def compare(canary: dict[str, Any], baseline: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """Promote when the canary is up, ready and no worse than the baseline beyond the thresholds."""
    reasons: list[str] = []
    if canary["endpoints"] == 0:
        reasons.append("the canary track has no endpoints")
    elif canary["ready"] < th.min_ready_fraction * canary["endpoints"]:
        reasons.append(f"only {canary['ready']} of {canary['endpoints']} canary endpoints are ready")
    if canary["interval_s"] is None or baseline["interval_s"] is None:
        which = "canary" if canary["interval_s"] is None else "baseline"
        reasons.append(
            f"no interval figures for the {which} track: its endpoints were down or restarted "
            "between the two samples, or --interval is 0"
        )
    else:
        ce, be = canary["error_rate"] or 0.0, baseline["error_rate"] or 0.0
        if ce > be + th.max_error_rate_delta:
            reasons.append(
                f"error rate {ce:.4f} (refused/failed per new connection) > baseline {be:.4f} "
                f"+ {th.max_error_rate_delta} (--max-error-rate-delta)"
            )
        cr, br = canary["reconnects_per_min"] or 0.0, baseline["reconnects_per_min"] or 0.0
        if cr > br * th.max_reconnect_ratio + th.reconnect_slack_per_min:
            reasons.append(
                f"upstream reconnects {cr:.2f}/min > baseline {br:.2f}/min x {th.max_reconnect_ratio} "
                f"+ {th.reconnect_slack_per_min} (--max-reconnect-ratio, --reconnect-slack)"
            )
        cd, bd = canary["dropped_per_player_min"] or 0.0, baseline["dropped_per_player_min"] or 0.0
        if cd > bd * th.max_dropped_ratio + th.dropped_slack_per_player_min:
            reasons.append(
                f"dropped frames {cd:.2f}/player-min > baseline {bd:.2f} x {th.max_dropped_ratio} "
                f"+ {th.dropped_slack_per_player_min} (--max-dropped-ratio, --dropped-slack)"
            )
    return {"verdict": "abort" if reasons else "promote", "reasons": reasons}


# ---------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def render_table(statuses: Sequence[EndpointStatus], tracks: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    head = f"{'endpoint':<28} {'state':<9} {'version':<16} {'uptime':>7} {'streams':>7} {'players':>7} "
    head += f"{'new':>6} {'errors':>6} {'reconn':>6} {'dropped':>7}"
    for name, summary in tracks.items():
        versions = ", ".join(summary["versions"]) or "-"
        lines.append(
            f"track {name}: {summary['ready']}/{summary['endpoints']} ready, {summary['draining']} draining, "
            f"versions {versions}, {summary['streams']} streams, {summary['players']} players"
            + (f", last {summary['interval_s']:.1f} s" if summary["interval_s"] else "")
        )
        lines.append("  " + head)
        for s in statuses:
            if s.track != name:
                continue
            host = s.url.split("://", 1)[1]
            lines.append(
                f"  {host:<28} {s.state:<9} {s.full_version or '-':<16} {_fmt(s.uptime_s):>7} {s.streams:>7} "
                f"{s.players:>7} {_fmt(s.new_connections):>6} {_fmt(s.errors):>6} {_fmt(s.reconnects):>6} "
                f"{_fmt(s.dropped_frames):>7}" + (f"  {s.error}" if s.error else "")
            )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tidecast status",
        description="Readiness, versions, streams, players and error counters of tidecast endpoints, per track.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="ENDPOINT",
        help="an API URL (http://10.0.0.5:1985), HOST[:PORT], a DNS name resolving to the pods, "
        "or a track NAME=URL,URL,...",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two samples (0: one sample)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP request")
    p.add_argument("--compare", nargs=2, metavar=("CANARY", "BASELINE"), help="judge track CANARY against BASELINE")
    t = Thresholds()
    p.add_argument("--max-error-rate-delta", type=float, default=t.max_error_rate_delta)
    p.add_argument("--max-reconnect-ratio", type=float, default=t.max_reconnect_ratio)
    p.add_argument("--reconnect-slack", type=float, default=t.reconnect_slack_per_min, help="reconnects/min")
    p.add_argument("--max-dropped-ratio", type=float, default=t.max_dropped_ratio)
    p.add_argument("--dropped-slack", type=float, default=t.dropped_slack_per_player_min, help="frames/player-min")
    p.add_argument(
        "--min-ready",
        type=float,
        default=t.min_ready_fraction,
        help="fraction of canary endpoints that must be ready",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        endpoints = parse_targets(args.targets)
    except ValueError as exc:
        print(f"tidecast status: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not endpoints:
        print("tidecast status: no endpoints given", file=sys.stderr)
        return EXIT_USAGE
    names = list(dict.fromkeys(ep.track for ep in endpoints))
    if args.compare:
        missing = [t for t in args.compare if t not in names]
        if missing:
            print(
                f"tidecast status: --compare names track(s) {', '.join(missing)} not given "
                f"(tracks: {', '.join(names)}); give them as NAME=URL,URL",
                file=sys.stderr,
            )
            return EXIT_USAGE
    statuses = collect(endpoints, args.interval, args.timeout)
    tracks = {name: track_summary([s for s in statuses if s.track == name]) for name in names}
    problems = [
        f"{s.url} (track {s.track}) is {s.state}" + (f": {s.error}" if s.error else "") for s in statuses if not s.ready
    ]
    verdict: dict[str, Any] | None = None
    if args.compare:
        th = Thresholds(
            args.max_error_rate_delta,
            args.max_reconnect_ratio,
            args.reconnect_slack,
            args.max_dropped_ratio,
            args.dropped_slack,
            args.min_ready,
        )
        canary, baseline = args.compare
        verdict = {"canary": canary, "baseline": baseline, **compare(tracks[canary], tracks[baseline], th)}
    if args.json:
        doc: dict[str, Any] = {
            "endpoints": [s.as_json() for s in statuses],
            "tracks": tracks,
            "problems": problems,
        }
        if verdict is not None:
            doc["compare"] = verdict
        print(json.dumps(doc, indent=2))
    else:
        print(render_table(statuses, tracks))
        if verdict is not None:
            print(f"canary {verdict['canary']} vs baseline {verdict['baseline']}: {verdict['verdict']}")
            for reason in verdict["reasons"]:
                print(f"  - {reason}")
    for problem in problems:
        print(f"tidecast status: {problem}", file=sys.stderr)
    if verdict is not None and verdict["verdict"] != "promote":
        return EXIT_CANARY_WORSE
    return EXIT_UNHEALTHY if problems else EXIT_OK
