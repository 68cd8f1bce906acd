"""Edge and origin clusters with real tidecast processes on loopback addresses 127.0.0.x."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer
from testkit.helpers import Publisher, TidecastProcess, http_get, wait_for, wait_stream_live
from testkit.players import FlvPlayer, Player, RtmpPlayer, first_media_after, keeps_up
from testkit.rtmpclient import RtmpTestClient

NODES: list[TidecastProcess] = []


def _port_free_everywhere(hosts: list[str]) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        ok = True
        for host in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no common free port")


def node(
    tmp: Path, name: str, host: str, cluster: str, ports: tuple[int, int, int], extra: str = ""
) -> TidecastProcess:
    rtmp, api, http = ports
    text = (
        f"listen {host}:{rtmp};\nmax_connections 1000;\ndaemon off;\nsrs_log_tank console;\n"
        f"pid ./objs/srs.pid;\n{extra}\n"
        f"http_api {{ enabled on; listen {host}:{api}; }}\n"
        f"http_server {{ enabled on; listen {host}:{http}; dir ./html; }}\n"
        "vhost __defaultVhost__ {\n"
        "  http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }\n"
        f"  cluster {{ {cluster} }}\n"
        "}\n"
    )
    srv = TidecastProcess(tmp / name, host=host, config_text=text)
    srv.rtmp_port, srv.api_port, srv.http_port = rtmp, api, http
    NODES.append(srv)
    return srv


@pytest.fixture(autouse=True)
def _stop_nodes() -> Iterator[None]:
    yield
    while NODES:
        NODES.pop().stop()


HOSTS = [f"127.0.0.{i}" for i in range(2, 8)]


@pytest.fixture(scope="module")
def ports() -> tuple[int, int, int]:
    return tuple(_port_free_everywhere(HOSTS) for _ in range(3))  # type: ignore[return-value]


def _plays_on(srv: TidecastProcess, stream: str) -> list[dict[str, Any]]:
    clients = srv.api_json("/api/v1/clients?count=1000")["clients"]
    streams = {s["id"]: s["name"] for s in srv.api_json("/api/v1/streams?count=1000")["streams"]}
    return [c for c in clients if not c["publish"] and streams.get(c["stream"]) == stream]


def _upstream(srv: TidecastProcess, stream: str) -> dict[str, Any] | None:
    for s in srv.api_json("/api/v1/streams?count=100")["streams"]:
        if s["name"] == stream and s.get("upstream"):
            return dict(s["upstream"])
    return None


# ---------------------------------------------------------------- edge


def test_edges_share_one_upstream_per_stream_and_players_keep_up(
    tmp_path: Path, clip: Path, ports: tuple[int, int, int]
) -> None:
    origin = node(tmp_path, "origin", "127.0.0.2", "mode local;", ports).start()
    cluster = f"mode remote; origin 127.0.0.2:{ports[0]};"
    edges = [node(tmp_path, f"edge{i}", f"127.0.0.{3 + i}", cluster, ports).start() for i in range(2)]
    players: list[Player] = []
    with Publisher(clip, f"{origin.rtmp}/live/fan"):
        wait_stream_live(origin, "fan")
        cold = time.monotonic()
        first = RtmpPlayer.on(edges[0], "fan")
        players.append(first)
        cold_ttff = wait_for(lambda: first_media_after(first, cold), what="first frame on a cold edge") - cold
        for i in range(49):
            edge = edges[i % 2]
            if i % 2:
                players.append(FlvPlayer(f"{edge.http}/live/fan.flv"))
            else:
                players.append(RtmpPlayer.on(edge, "fan"))
        warm = time.monotonic()
        probe = RtmpPlayer.on(edges[0], "fan")
        warm_ttff = wait_for(lambda: first_media_after(probe, warm), what="first frame on a warm edge") - warm
        players.append(probe)
        time.sleep(2.0)
        start = time.monotonic()
        time.sleep(6.0)
        end = time.monotonic()
        plays = _plays_on(origin, "fan")
        assert len(plays) == 2, plays
        assert sorted(c["ip"] for c in plays) == ["127.0.0.3", "127.0.0.4"]
        lagging = [p for p in players if not keeps_up(p, start, end)]
        assert not lagging, f"{len(lagging)} of {len(players)} players fell behind"
        for p in players:
            assert p.error is None, p.error
            p.close()
        print(f"\nedge time to first frame: cold {cold_ttff * 1000:.0f} ms, warm {warm_ttff * 1000:.0f} ms")
        # Every player gone: the edges stop pulling within 5 s (SRS #3158).
        wait_for(lambda: not _plays_on(origin, "fan"), timeout=8, what="the edges' upstreams to leave the origin")


def test_edge_fails_over_between_origins_without_player_reconnect(
    tmp_path: Path, clip: Path, ports: tuple[int, int, int]
) -> None:
    origins = [node(tmp_path, f"o{i}", f"127.0.0.{2 + i}", "mode local;", ports).start() for i in range(2)]
    cluster = f"mode remote; origin 127.0.0.2:{ports[0]} 127.0.0.3:{ports[0]};"
    edge = node(tmp_path, "edge", "127.0.0.4", cluster, ports).start()
    pubs = [Publisher(clip, f"{o.rtmp}/live/ha") for o in origins]
    try:
        for o in origins:
            wait_stream_live(o, "ha")
        rtmp = RtmpPlayer.on(edge, "ha")
        flv = FlvPlayer(f"{edge.http}/live/ha.flv")
        up = wait_for(
            lambda: _upstream(edge, "ha") if (_upstream(edge, "ha") or {}).get("state") == "ingesting" else None
        )
        used = next(o for o in origins if up["origin"] == f"{o.host}:{ports[0]}")
        time.sleep(1.0)
        assert used.proc is not None
        killed = time.monotonic()
        os.kill(used.proc.pid, signal.SIGKILL)
        used.proc.wait()
        for player in (rtmp, flv):
            resumed = wait_for(
                lambda p=player: first_media_after(p, killed + 0.5), timeout=8, what="data after the origin died"
            )
            assert resumed - killed < 5.0, f"resumed after {resumed - killed:.1f}s"
        assert rtmp.error is None and flv.error is None, (rtmp.error, flv.error)
        assert "NetStream.Play.UnpublishNotify" not in rtmp.statuses
        after = _upstream(edge, "ha")
        assert after is not None and after["reconnects"] >= 1 and after["origin"] != up["origin"]
        metrics = http_get(f"{edge.api}/metrics")[1].decode()
        assert f'tidecast_edge_upstream{{app="live",mode="pull",origin="{after["origin"]}",state="ingesting"' in metrics
        assert 'tidecast_edge_upstream_reconnects_total{app="live",stream="ha",vhost="__defaultVhost__"} 1.0' in metrics
        rtmp.close()
        flv.close()
    finally:
        for p in pubs:
            p.stop()


def test_publish_to_edge_is_forwarded(tmp_path: Path, clip: Path, ports: tuple[int, int, int]) -> None:
    origin = node(tmp_path, "origin", "127.0.0.2", "mode local;", ports).start()
    cluster = f"mode remote; origin 127.0.0.2:{ports[0]};"
    edges = [node(tmp_path, f"edge{i}", f"127.0.0.{3 + i}", cluster, ports).start() for i in range(2)]
    with Publisher(clip, f"{edges[0].rtmp}/live/up"):
        wait_stream_live(origin, "up")
        players = [
            RtmpPlayer.on(origin, "up"),
            RtmpPlayer.on(edges[1], "up"),
            FlvPlayer(f"{edges[0].http}/live/up.flv"),
        ]
        start = time.monotonic()
        time.sleep(4.0)
        end = time.monotonic()
        for p in players:
            assert keeps_up(p, start + 1.0, end), "a player of the forwarded stream fell behind"
            p.close()
    # No origin takes it: the publisher is rejected with a clear reason.
    lonely = node(tmp_path, "lonely", "127.0.0.5", "mode remote; origin 127.0.0.6:1;", ports).start()
    pub = Publisher(clip, f"{lonely.rtmp}/live/none")
    try:
        assert pub.proc.wait(20) != 0
    finally:
        pub.stop()
    assert "no origin accepted the publish" in lonely.log()


def test_edge_with_empty_origin_list_keeps_serving(tmp_path: Path, ports: tuple[int, int, int]) -> None:
    edge = node(tmp_path, "edge", "127.0.0.2", "mode remote;", ports).start()
    player = RtmpPlayer.on(edge, "x")
    time.sleep(1.0)
    assert edge.proc is not None and edge.proc.poll() is None
    assert http_get(f"{edge.api}/readyz")[0] == 200
    assert "has no cluster.origin" in edge.log()
    player.close()


# ---------------------------------------------------------------- origin cluster


def _clusters(srv: TidecastProcess, stream: str) -> dict[str, Any]:
    doc = srv.api_json(f"/api/v1/clusters?vhost=__defaultVhost__&ip={srv.host}&app=live&stream={stream}&coworker=x")
    assert doc["code"] == 0
    return dict(doc["data"])


def test_origin_cluster_redirects_edges_and_players(tmp_path: Path, clip: Path, ports: tuple[int, int, int]) -> None:
    api = ports[1]
    coworkers = " ".join(f"127.0.0.{i}:{api}" for i in (2, 3, 4))
    origins = [
        node(tmp_path, f"o{i}", f"127.0.0.{i}", f"origin_cluster on; coworkers {coworkers};", ports).start()
        for i in (2, 3, 4)
    ]
    edge_cluster = "mode remote; origin " + " ".join(f"127.0.0.{i}:{ports[0]}" for i in (2, 3, 4)) + ";"
    edges = [node(tmp_path, f"e{i}", f"127.0.0.{i}", edge_cluster, ports).start() for i in (5, 6)]
    pub = Publisher(clip, f"{origins[1].rtmp}/live/oc")
    try:
        wait_stream_live(origins[1], "oc")
        here = _clusters(origins[1], "oc")
        assert here["query"] == {"ip": "127.0.0.3", "vhost": "__defaultVhost__", "app": "live", "stream": "oc"}
        assert here["origin"]["ip"] == "127.0.0.3" and here["origin"]["port"] == ports[0]
        assert here["origin"]["vhost"] == "__defaultVhost__"
        assert here["origin"]["api"] == f"127.0.0.3:{api}" and here["origin"]["routers"] == [f"127.0.0.3:{api}"]
        assert _clusters(origins[0], "oc")["origin"] is None

        players: list[Player] = [
            RtmpPlayer.on(edges[0], "oc"),
            RtmpPlayer.on(edges[1], "oc"),
            FlvPlayer(f"{edges[1].http}/live/oc.flv"),
            RtmpPlayer.on(origins[0], "oc"),  # plays through an RTMP 302
        ]
        status, _, headers = _no_redirect_get(f"{origins[0].http}/live/oc.flv")
        assert status == 302 and headers["Location"] == f"http://127.0.0.3:{ports[2]}/live/oc.flv"
        players.append(FlvPlayer(f"{origins[2].http}/live/oc.flv"))  # urllib follows the 302
        time.sleep(3.0)
        start = time.monotonic()
        time.sleep(6.0)
        end = time.monotonic()
        for p in players[:3] + players[4:]:
            assert keeps_up(p, start, end, ratio=0.85), "a player via the origin cluster fell behind"
        assert "NetConnection.Connect.Rejected" in players[3].statuses  # the 302 reached the direct player
        for e in edges:
            assert "RTMP redirect" in e.log() or (_upstream(e, "oc") or {}).get("origin", "").startswith("127.0.0.3")

        # A second publisher of the same stream on another origin is refused (SRS #2789).
        dup = Publisher(clip, f"{origins[2].rtmp}/live/oc")
        try:
            assert dup.proc.wait(20) != 0
        finally:
            dup.stop()
        assert "already published on origin 127.0.0.3" in origins[2].log()

        # Origin 2 dies; the publisher moves to origin 3; edge players resume without reconnecting.
        pub.stop()
        assert origins[1].proc is not None
        os.kill(origins[1].proc.pid, signal.SIGKILL)
        origins[1].proc.wait()
        moved = time.monotonic()
        pub = Publisher(clip, f"{origins[2].rtmp}/live/oc")
        for p in players[:3]:
            wait_for(lambda p=p: first_media_after(p, moved + 0.5), timeout=20, what="edge players to resume")
            assert p.error is None
        for p in players:
            p.close()
    finally:
        pub.stop()


def _no_redirect_get(url: str) -> tuple[int, bytes, dict[str, str]]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    conn.request("GET", parts.path)
    resp = conn.getresponse()
    result = resp.status, resp.read() if resp.status != 200 else b"", dict(resp.headers)
    conn.close()
    return result


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.addresses: list[str] = []

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = request.q.qname
        if str(qname).rstrip(".") == "origins.tidecast.test" and request.q.qtype == QTYPE.A:
            for address in self.addresses:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


def test_origin_cluster_discovers_coworkers_by_dns(tmp_path: Path, clip: Path, ports: tuple[int, int, int]) -> None:
    zone = _Zone()
    zone.addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    dns_port = _port_free_everywhere(["127.0.0.1"])
    server = DNSServer(zone, port=dns_port, address="127.0.0.1")
    server.start_thread()
    try:
        env = {"TIDECAST_NAMESERVER": f"127.0.0.1:{dns_port}"}
        cluster = f"origin_cluster on; coworkers_dns origins.tidecast.test:{ports[1]};"
        origins = []
        for i in (2, 3, 4, 5):
            o = node(tmp_path, f"o{i}", f"127.0.0.{i}", cluster, ports)
            o.env.update(env)
            origins.append(o.start())
        pub = Publisher(clip, f"{origins[3].rtmp}/live/dns")  # on the 4th origin, not yet in DNS
        try:
            wait_stream_live(origins[3], "dns")
            assert _clusters(origins[0], "dns")["origin"] is None
            probe = RtmpPlayer.on(origins[0], "dns")
            time.sleep(1.0)
            assert "NetConnection.Connect.Rejected" not in probe.statuses
            probe.close()
            zone.addresses.append("127.0.0.5")  # scale out: no restart, no config edit
            time.sleep(6.0)  # the DNS answer is cached for a few seconds
            player = RtmpPlayer.on(origins[0], "dns")
            wait_for(lambda: "NetConnection.Connect.Rejected" in player.statuses, what="a redirect to the 4th origin")
            player.close()
            # The cluster-wide view from any origin lists every node and where the stream lives.
            view = origins[0].api_json("/api/v1/cluster")
            assert sorted(n["api"] for n in view["nodes"]) == [f"127.0.0.{i}:{ports[1]}" for i in (2, 3, 4, 5)]
            assert all(n["ok"] for n in view["nodes"])
            assert [(s["name"], s["node"]) for s in view["streams"]] == [("dns", f"127.0.0.5:{ports[1]}")]
        finally:
            pub.stop()
    finally:
        server.stop()


def test_edge_serves_hls_pulled_on_demand(tmp_path: Path, clip: Path, ports: tuple[int, int, int]) -> None:
    origin = node(tmp_path, "origin", "127.0.0.2", "mode local;", ports).start()
    hls_dir = tmp_path / "edge-hls"
    edge = node(tmp_path, "edge", "127.0.0.3", f"mode remote; origin 127.0.0.2:{ports[0]};", ports)
    edge.conf.write_text(
        edge.conf.read_text().replace(
            "  cluster {", f"  hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {hls_dir}; }}\n  cluster {{"
        )
    )
    edge.start()
    with Publisher(clip, f"{origin.rtmp}/live/eh"):
        wait_stream_live(origin, "eh")
        # No player on the edge: the playlist request itself starts the pull.
        status, _, _ = http_get(f"{edge.http}/live/eh.m3u8")
        assert status == 404
        wait_for(lambda: http_get(f"{edge.http}/live/eh.m3u8")[0] == 200, timeout=10, what="the edge's HLS playlist")
        body = http_get(f"{edge.http}/live/eh.m3u8")[1].decode()
        segment = next(line for line in body.splitlines() if line.endswith(".ts"))
        seg_status, seg, _ = http_get(f"{edge.http}/live/{segment}")
        assert seg_status == 200 and seg[:1] == b"\x47"
        assert len(_plays_on(origin, "eh")) == 1


def test_edge_pulls_over_http_flv_and_follows_http_redirects(
    tmp_path: Path, clip: Path, ports: tuple[int, int, int]
) -> None:
    api, http = ports[1], ports[2]
    coworkers = f"coworkers 127.0.0.2:{api} 127.0.0.3:{api};"
    origins = [
        node(tmp_path, f"o{i}", f"127.0.0.{i}", f"origin_cluster on; {coworkers}", ports).start() for i in (2, 3)
    ]
    # protocol flv: the origins' HTTP ports; the first origin answers with a 302 to the second.
    edge = node(tmp_path, "edge", "127.0.0.4", f"mode remote; protocol flv; origin 127.0.0.2:{http};", ports).start()
    with Publisher(clip, f"{origins[1].rtmp}/live/hf"):
        wait_stream_live(origins[1], "hf")
        player = RtmpPlayer.on(edge, "hf")
        started = time.monotonic()
        wait_for(lambda: first_media_after(player, started), timeout=10, what="media pulled over HTTP-FLV")
        time.sleep(1.0)
        start = time.monotonic()
        time.sleep(4.0)
        assert keeps_up(player, start, time.monotonic())
        up = _upstream(edge, "hf")
        assert up is not None and up["redirects"] >= 1 and up["state"] == "ingesting"
        assert "HTTP redirect" in edge.log()
        player.close()


def test_token_traverse_lets_the_origin_judge_each_connect(tmp_path: Path, ports: tuple[int, int, int]) -> None:
    origin = node(tmp_path, "origin", "127.0.0.2", "mode local;", ports)
    origin.conf.write_text(origin.conf.read_text() + "vhost closed.example { enabled off; }\n")
    origin.start()
    edge = node(tmp_path, "edge", "127.0.0.3", f"mode remote; token_traverse on; origin 127.0.0.2:{ports[0]};", ports)
    edge.start()
    allowed = RtmpTestClient(edge.host, edge.rtmp_port)
    assert allowed.connect_result.ok
    allowed.close()
    with pytest.raises((TimeoutError, ConnectionError, AssertionError)):
        refused = RtmpTestClient(edge.host, edge.rtmp_port, app="live?vhost=closed.example")
        assert refused.connect_result.ok, "the origin refused this vhost; the edge must too"
    assert "rejected the connect" in edge.log()
