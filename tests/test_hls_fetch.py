"""Edges serving HLS fetched from the origin (`cluster { hls_fetch on; }`), and stale playlists, with real
tidecast processes on loopback and ffmpeg publishing.

Every edge serves the origin's own names, MEDIA-SEQUENCE and bytes; concurrent players of one segment
cost the origin one request per edge; a fresh edge serves the window at once; a dead origin leaves the
last playlist for a few target durations, then a clear error; hostile paths never reach the origin and a
flood of bogus names is answered from a short negative cache.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit.helpers import Publisher, TidecastProcess, free_port, http_get, wait_for

HLS = "hls {{ enabled on; hls_fragment 1; hls_window {window}; hls_path ./html; }}"

Factory = Callable[..., TidecastProcess]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., TidecastProcess]]:
    started: list[TidecastProcess] = []

    def make(name: str, vhost: str, start: bool = True) -> TidecastProcess:
        srv = TidecastProcess(tmp_path / name, vhost=vhost)
        started.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in started:
        srv.stop()


def edge_of(origin: TidecastProcess, first: str = "") -> str:
    """The edge's vhost body: `first` (another origin address) is tried before the real one."""
    origins = f"{first} 127.0.0.1:{origin.rtmp_port}".strip()
    return f"cluster {{ mode remote; origin {origins}; hls_fetch on; hls_fetch_port {origin.http_port}; }}"


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    status, body, _ = http_get(url, timeout=timeout)
    return status, body


def playlist(srv: TidecastProcess, name: str = "tv") -> tuple[int, list[str], bytes]:
    """(MEDIA-SEQUENCE, segment URIs, body) of a 200 playlist."""
    status, body = get(f"{srv.http}/live/{name}.m3u8")
    assert status == 200, (status, body[:300])
    text = body.decode()
    found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    assert found is not None, text
    return int(found.group(1)), [ln for ln in text.splitlines() if ln and not ln.startswith("#")], body


def served_media(origin: TidecastProcess) -> float:
    return origin.metrics()['tidecast_hls_files_served_total{kind="media"}']


def wait_segments(srv: TidecastProcess, count: int, name: str = "tv") -> tuple[int, list[str], bytes]:
    def enough() -> tuple[int, list[str], bytes] | None:
        status, _ = get(f"{srv.http}/live/{name}.m3u8")
        if status != 200:
            return None
        got = playlist(srv, name)
        return got if len(got[1]) >= count else None

    result: tuple[int, list[str], bytes] = wait_for(enough, 20, what=f"{count} segments of {name}")
    return result


def test_two_edges_serve_the_origins_names_and_bytes_once_per_segment(nodes: Factory, clip: Path) -> None:
    origin = nodes("origin", HLS.format(window=6))
    edges = [nodes(f"edge{i}", edge_of(origin)) for i in range(2)]
    with Publisher(clip, f"{origin.rtmp}/live/tv"):
        wait_segments(origin, 3)
        identical = 0
        fetched: set[str] = set()
        for _round in range(6):
            (seq_a, uris_a, body_a), (seq_b, uris_b, body_b) = playlist(edges[0]), playlist(edges[1])
            identical += body_a == body_b
            # Wherever both list a sequence number, both name the same segment.
            by_seq_a = {seq_a + i: u for i, u in enumerate(uris_a)}
            by_seq_b = {seq_b + i: u for i, u in enumerate(uris_b)}
            common = by_seq_a.keys() & by_seq_b.keys()
            assert common and all(by_seq_a[s] == by_seq_b[s] for s in common), (body_a, body_b)
            # Every segment one edge lists, the other serves, byte for byte the origin's file.
            for edge, uris in ((edges[1], uris_a), (edges[0], uris_b)):
                for uri in uris:
                    status, data = get(f"{edge.http}/live/{uri}")
                    assert status == 200, (uri, status, data[:200])
                    disk = origin.html / "live" / uri
                    if disk.exists():
                        assert data == disk.read_bytes(), uri
                    fetched.add(uri)
            time.sleep(0.4)
        assert identical >= 3, identical
        # A segment neither edge has fetched yet, asked by 40 players on each edge at once:
        # each edge asks the origin once.
        fresh = wait_for(
            lambda: next((u for u in playlist(origin)[1] if u not in fetched), None), 10, what="a new segment"
        )
        before = served_media(origin)
        edge_before = [e.metrics() for e in edges]
        with ThreadPoolExecutor(80) as pool:
            results = list(pool.map(lambda k: get(f"{edges[k % 2].http}/live/{fresh}"), range(80)))
        assert {status for status, _ in results} == {200}
        assert len({data for _, data in results}) == 1
        assert served_media(origin) - before == 2
        for edge, m0 in zip(edges, edge_before, strict=True):
            m1 = edge.metrics()
            key = 'tidecast_hls_fetch_upstream_requests_total{kind="media"}'
            assert m1[key] - m0[key] == 1
            shared = sum(
                m1.get(f'{name}{{kind="media"}}', 0) - m0.get(f'{name}{{kind="media"}}', 0)
                for name in ("tidecast_hls_fetch_hits_total", "tidecast_hls_fetch_coalesced_total")
            )
            assert shared == 39
        # No local muxing on a fetching edge, and no upstream RTMP pull for HLS requests.
        for edge in edges:
            assert not (edge.html / "live").exists()
            assert edge.api_json("/api/v1/streams")["streams"] == []


def test_a_fresh_edge_serves_the_current_window_at_once(nodes: Factory, clip: Path) -> None:
    origin = nodes("origin", HLS.format(window=6))
    with Publisher(clip, f"{origin.rtmp}/live/tv"):
        wait_segments(origin, 5)
        edge = nodes("edge", edge_of(origin))
        started = time.monotonic()
        seq, uris, _ = playlist(edge)
        origin_seq, _, _ = playlist(origin)
        assert abs(seq - origin_seq) <= 1 and len(uris) >= 5
        for uri in uris:  # the oldest too: this edge never saw them cut
            status, data = get(f"{edge.http}/live/{uri}")
            assert status == 200 and len(data) > 1000, (uri, status)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, elapsed
        print(f"\nfresh edge: playlist and {len(uris)} segments in {elapsed * 1000:.0f} ms")


def test_origin_down_last_playlist_then_a_clear_error(nodes: Factory, clip: Path) -> None:
    origin = nodes("origin", HLS.format(window=4))
    # 127.0.0.9 has nothing on that port: the edge moves on to the real origin, then remembers it.
    edge = nodes("edge", edge_of(origin, first="127.0.0.9"))
    with Publisher(clip, f"{origin.rtmp}/live/tv"):
        wait_segments(origin, 2)
        _, uris, body = playlist(edge)
        assert get(f"{edge.http}/live/{uris[-1]}")[0] == 200
        time.sleep(0.5)
        _, uris, body = playlist(edge)
        last_good = time.monotonic()
        assert origin.proc is not None
        os.kill(origin.proc.pid, signal.SIGKILL)
        origin.proc.wait()
    # A few target durations (6 s at least): the last copy, unchanged; cached segments still serve.
    deadline = last_good + 5.0
    while time.monotonic() < deadline:
        status, again = get(f"{edge.http}/live/tv.m3u8")
        assert (status, again) == (200, body)
        time.sleep(0.5)
    assert get(f"{edge.http}/live/{uris[-1]}")[0] == 200

    def failed() -> tuple[int, bytes] | None:
        status, text = get(f"{edge.http}/live/tv.m3u8")
        return (status, text) if status != 200 else None

    status, text = wait_for(failed, 6, what="the edge to give up on the last copy")
    assert time.monotonic() - last_good >= 5.5
    assert status == 502
    assert b"no origin answered" in text and b"127.0.0.9" in text and b"cannot connect" in text, text
    # A segment it never had: a clear 502 at once.
    status, text = get(f"{edge.http}/live/tv-99999.ts")
    assert status == 502 and b"no origin answered" in text
    m = edge.metrics()
    assert m["tidecast_hls_fetch_stale_total"] >= 5
    assert m['tidecast_hls_fetch_upstream_errors_total{kind="connect"}'] >= 2
    # One log line per failure kind, not one per request.
    lines = [ln for ln in edge.log().splitlines() if "hls_fetch:" in ln]
    assert len(lines) <= 6, lines


def raw_get(srv: TidecastProcess, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_hostile_paths_are_refused_and_a_404_storm_is_bounded(nodes: Factory) -> None:
    origin = nodes("origin", HLS.format(window=4))
    (origin.html / "secret.ts").write_bytes(b"secret")
    edge = nodes("edge", edge_of(origin))
    before = origin.metrics()["tidecast_hls_files_missing_total"]
    for path in (
        "/live/%2e%2e/%2e%2e/etc/passwd.m3u8",
        "/live/../secret.ts",
        "/live/..%2fsecret.ts",
        "/live/%00.ts",
        "//etc/x.m3u8",
        "/live//x.ts",
        "/live/x%5c..%5csecret.ts",
        "/live/x.m3u8?_HLS_msn=-1",
    ):
        status, body = raw_get(edge, path)
        assert status in (400, 404), (path, status, body)
        assert body != b"secret"
    assert origin.metrics()["tidecast_hls_files_missing_total"] - before <= 1  # /live/../secret.ts -> /secret.ts

    # 400 requests for two bogus names, 50 at a time: one upstream request per name per half second.
    before = origin.metrics()["tidecast_hls_files_missing_total"]
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        names = ["/live/bogus.m3u8", "/live/bogus-7.ts"] * 200
        statuses = list(pool.map(lambda p: get(f"{edge.http}{p}")[0], names))
    elapsed = time.monotonic() - started
    assert set(statuses) == {404}
    upstream = origin.metrics()["tidecast_hls_files_missing_total"] - before
    assert upstream <= 2 * (elapsed / 0.5 + 2), (upstream, elapsed)
    # Distinct bogus names: at most one upstream request each, never more.
    before = origin.metrics()["tidecast_hls_files_missing_total"]
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda k: get(f"{edge.http}/live/nope-{k % 40}.ts")[0], range(200)))
    assert set(statuses) == {404}
    assert origin.metrics()["tidecast_hls_files_missing_total"] - before <= 40 * 2
    print(f"\n404 storm: {len(names)} requests in {elapsed:.2f} s cost the origin {upstream:.0f} requests")


def test_low_latency_blocking_reloads_pass_through_an_edge(nodes: Factory, clip: Path) -> None:
    ll = "hls { enabled on; hls_variant lowlatency; hls_part 0.2; hls_fragment 1; hls_window 4; hls_path ./html; }"
    origin = nodes("origin", ll)
    edge = nodes("edge", edge_of(origin))
    with Publisher(clip, f"{origin.rtmp}/live/tv"):
        wait_segments(origin, 2)
        seq, _, body = playlist(edge)
        assert b"#EXT-X-PART" in body and b"#EXT-X-SERVER-CONTROL" in body
        msn = seq + body.count(b"#EXTINF") + 1
        url = f"{edge.http}/live/tv.m3u8?_HLS_msn={msn}&_HLS_part=0"
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda _: get(url, timeout=10), range(10)))
        assert {status for status, _ in results} == {200}, results[0]
        # The blocking reload came back once the origin had that part: it lists it.
        text = results[0][1].decode()
        assert f'URI="tv-{msn}.part0.m4s"' in text, text
        m = edge.metrics()
        assert m.get('tidecast_hls_fetch_coalesced_total{kind="playlist"}', 0) >= 5
        part = re.findall(r'URI="([^"]+\.m4s)"', text)[-1]
        assert get(f"{edge.http}/live/{part}")[0] == 200


def test_stale_live_playlists_are_served_ended(nodes: Factory) -> None:
    origin = nodes("origin", HLS.format(window=4))
    live = origin.html / "live"
    live.mkdir()
    body = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-TARGETDURATION:{t}\n#EXTINF:2.000,\nx-40.ts\n"
    (live / "x-40.ts").write_bytes(b"\x47" * 188)
    old = time.time() - 120
    files = {
        "dead": (body.format(t=2), old),  # a kill -9 left it 2 minutes ago
        "fresh": (body.format(t=2), time.time()),  # another process writes it (a shared volume)
        "slow": (body.format(t=10), time.time() - 45),  # 45 s < 6 x 10 s
        "ended": (body.format(t=2) + "#EXT-X-ENDLIST\n", old),
        "master": ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\ndead.m3u8\n", old),
    }
    for name, (text, mtime) in files.items():
        path = live / f"{name}.m3u8"
        path.write_text(text)
        os.utime(path, (mtime, mtime))
    for name, (text, _) in files.items():
        status, got = get(f"{origin.http}/live/{name}.m3u8")
        assert status == 200
        if name == "dead":
            assert got.decode() == text + "#EXT-X-ENDLIST\n"
        else:
            assert got.decode() == text, name
    # The file itself is left as it was; an edge in front gets the ended copy too.
    assert (live / "dead.m3u8").read_text() == files["dead"][0]
    edge = nodes("edge", edge_of(origin))
    status, got = get(f"{edge.http}/live/dead.m3u8")
    assert status == 200 and got.decode().endswith("#EXT-X-ENDLIST\n")
    assert origin.metrics()["tidecast_hls_stale_playlists_ended_total"] == 2


class HlsWatcher(threading.Thread):
    """A player through an edge: reloads the playlist every half target duration, fetches each new
    segment once, and notes every failed fetch and every MEDIA-SEQUENCE it saw."""

    def __init__(self, srv: TidecastProcess, name: str = "tv", interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.url = f"{srv.http}/live/{name}.m3u8"
        self.base = f"{srv.http}/live/"
        self.errors: list[str] = []
        self.sequences: list[int] = []
        self.fetched: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            status, body = get(self.url)
            if status != 200:
                self.errors.append(f"playlist: {status} {body[:200]!r}")
            else:
                text = body.decode()
                found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
                self.sequences.append(int(found.group(1)) if found else -1)
                for uri in [ln for ln in text.splitlines() if ln and not ln.startswith("#")]:
                    if uri in self.fetched:
                        continue
                    status, data = get(self.base + uri)
                    if status != 200:
                        self.errors.append(f"segment {uri}: {status} {data[:200]!r}")
                    self.fetched.append(uri)
            self.stopping.wait(self.interval)


def _common_port(hosts: list[str]) -> int:
    for _ in range(200):
        port = free_port(hosts[0])
        if all(_bindable(host, port) for host in hosts[1:]):
            return port
    raise RuntimeError("no port free on every host")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def test_a_new_owner_on_shared_storage_continues_and_edge_players_see_no_error(clip: Path, tmp_path: Path) -> None:
    """The origin cluster's owner of a stream changes (an origin update): both origins write one
    hls_path, the new owner numbers on after the old one's playlist, and a player behind an edge
    fetches every segment either lists, without one failed fetch."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    rtmp, api, http_port = (_common_port(hosts) for _ in range(3))
    nas = tmp_path / "nas"
    origins = []
    for k, host in enumerate(hosts):
        text = (
            f"listen {host}:{rtmp};\ndaemon off;\nsrs_log_tank console;\npid ./objs/srs.pid;\n"
            f"http_api {{ enabled on; listen {host}:{api}; }}\n"
            f"http_server {{ enabled on; listen {host}:{http_port}; dir ./html; }}\n"
            f"vhost __defaultVhost__ {{ hls {{ enabled on; hls_fragment 1; hls_window 4; hls_path {nas}; }} }}\n"
        )
        srv = TidecastProcess(tmp_path / f"o{k}", host=host, config_text=text)
        srv.rtmp_port, srv.api_port, srv.http_port = rtmp, api, http_port
        origins.append(srv)
    edge = TidecastProcess(
        tmp_path / "edge",
        vhost=f"cluster {{ mode remote; origin {hosts[0]}:{rtmp} {hosts[1]}:{rtmp}; hls_fetch on; "
        f"hls_fetch_port {http_port}; }}",
    )
    # A slow reload (1.5 s, as a player of 2 s segments may) so the old owner's last segment is
    # usually fetched after the new owner started.
    watcher = HlsWatcher(edge, interval=1.5)
    stale = 0.0
    # What an nginx on the same volume would see: the playlist never missing, every segment it names there.
    missing: list[str] = []

    def watch_disk() -> None:
        seen = False
        while not watcher.stopping.is_set():
            try:
                text = (nas / "live" / "tv.m3u8").read_text()
            except FileNotFoundError:
                if seen:
                    missing.append("tv.m3u8")
                time.sleep(0.02)
                continue
            seen = True
            for uri in [ln for ln in text.splitlines() if ln and not ln.startswith("#")]:
                if not (nas / "live" / uri).exists():
                    missing.append(uri)
            time.sleep(0.02)

    disk = threading.Thread(target=watch_disk, daemon=True)
    try:
        for srv in [*origins, edge]:
            srv.start()
        with Publisher(clip, f"{origins[0].rtmp}/live/tv"):
            wait_segments(edge, 3)
            watcher.start()
            disk.start()
            time.sleep(2.5)
        # The publisher moves to the other origin, as an encoder cut by a draining origin does.
        time.sleep(0.3)
        with Publisher(clip, f"{origins[1].rtmp}/live/tv"):
            time.sleep(7.0)
        stale = edge.metrics()["tidecast_hls_fetch_stale_total"]
    finally:
        watcher.stopping.set()
        watcher.join(10)
        disk.join(10)
        for srv in [*origins, edge]:
            srv.stop()
    assert watcher.errors == [], watcher.errors
    assert missing == [], missing
    assert watcher.sequences == sorted(watcher.sequences), watcher.sequences  # never back
    numbers = [int(re.findall(r"\d+", uri)[-1]) for uri in watcher.fetched]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), watcher.fetched
    assert numbers[-1] >= numbers[0] + 8, watcher.fetched
    print(f"\nowner change: fetched {watcher.fetched}; {stale:.0f} playlists from the edge's last copy")


def test_a_reload_turns_it_on_and_off(nodes: Factory, clip: Path) -> None:
    origin = nodes("origin", HLS.format(window=4))
    fetching = edge_of(origin)
    edge = nodes("edge", fetching.replace("hls_fetch on;", "hls_fetch off;"))

    def reload(vhost: str) -> None:
        text = edge.conf.read_text()
        start = text.index("vhost __defaultVhost__ {")
        edge.conf.write_text(text[:start] + f"vhost __defaultVhost__ {{\n{vhost}\n}}\n")
        assert edge.api_json("/api/v1/raw?rpc=reload")["code"] == 0

    with Publisher(clip, f"{origin.rtmp}/live/tv"):
        wait_segments(origin, 2)
        assert get(f"{edge.http}/live/tv.m3u8")[0] == 404  # off, and no local HLS on this edge
        reload(fetching.replace("}", "hls_fetch_cache 2097152; }"))
        assert playlist(edge)[1]
        assert edge.metrics()['tidecast_hls_fetch_misses_total{kind="playlist"}'] >= 1
        reload(fetching.replace("hls_fetch on;", "hls_fetch off;"))
        assert wait_for(lambda: get(f"{edge.http}/live/tv.m3u8")[0] == 404, 5, what="hls_fetch off again")
