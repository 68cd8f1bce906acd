"""The policy of an edge's HLS fetching (hls/fetchcache.py), its directives, the path checks and the
stale-playlist rule: pure functions and `tidecast config check`, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit.helpers import config_check

from tidecast.config import ConfigError, load_config, parse_text
from tidecast.hls.fetchcache import (
    MEDIA,
    PLAYLIST,
    ByteLru,
    Expiring,
    Recent,
    kind_of,
    ll_query,
    origin_order,
    playlist_ttl,
    resolve,
    stale_window,
    stream_key,
)
from tidecast.hls.playlist import (
    Entry,
    discontinuity_sequence_of,
    entries_of,
    is_stale_live,
    media_sequence_of,
    part_target_of,
    target_of,
    uris_of,
)
from tidecast.live.names import check_rel_path
from tidecast.net.hls_fetch import cache_limits

LIVE = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-TARGETDURATION:{t}\n#EXTINF:2.000,\ns-7.ts\n"

# ---------------------------------------------------------------- directives


def test_directives_default_off_and_parse() -> None:
    cluster = parse_text("listen 1935;").vhost("__defaultVhost__").cluster
    assert (cluster.hls_fetch, cluster.hls_fetch_port, cluster.hls_fetch_cache) == (False, 8080, 64 * 1024 * 1024)
    text = (
        "listen 1935;\nvhost v { cluster { mode remote; origin a b:1936; hls_fetch on; hls_fetch_port 8081; "
        "hls_fetch_cache 8388608; } }\n"
    )
    config = parse_text(text)
    cluster = config.vhost("v").cluster
    assert (cluster.hls_fetch, cluster.hls_fetch_port, cluster.hls_fetch_cache) == (True, 8081, 8388608)
    assert cache_limits(config) == (8388608, 2097152)
    # The dump writes them back, and reads back the same.
    dumped = config.dump()
    assert "        hls_fetch on;" in dumped.splitlines() and "        hls_fetch_cache 8388608;" in dumped.splitlines()
    assert parse_text(dumped).vhost("v").cluster == cluster


def test_environment_sets_them() -> None:
    env = {"SRS_VHOST_CLUSTER_HLS_FETCH": "on", "SRS_VHOST_CLUSTER_HLS_FETCH_PORT": "9090"}
    cluster = parse_text("listen 1935;", env=env).vhost("__defaultVhost__").cluster
    assert cluster.hls_fetch and cluster.hls_fetch_port == 9090


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hls_fetch maybe;", 'bad value "maybe" for hls_fetch (in vhost v cluster): expected on or off'),
        (
            "hls_fetch_port 70000;",
            'bad value "70000" for hls_fetch_port (in vhost v cluster): expected an integer from 1 to 65535',
        ),
        (
            "hls_fetch_cache 64MB;",
            'bad value "64MB" for hls_fetch_cache (in vhost v cluster): '
            "expected an integer of bytes from 1048576 to 1099511627776",
        ),
        ("hls_fetch_cache 1000;", 'bad value "1000" for hls_fetch_cache'),
    ],
)
def test_bad_values_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "x.conf"
    path.write_text(f"listen 1935;\nvhost v {{\n  cluster {{\n    mode remote;\n    {line}\n  }}\n}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(path), env={})
    assert str(exc.value).startswith(f"{path}:5: {message}")


def test_config_check_fails_on_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("listen 1935;\nvhost v { cluster { mode remote; hls_fetch_port http; } }\n")
    out = config_check(path)
    assert out.returncode == 1
    assert f'{path}:2: bad value "http" for hls_fetch_port (in vhost v cluster)' in out.stderr


# ---------------------------------------------------------------- which requests, which keys


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/live/s.m3u8", PLAYLIST),
        ("/live/s-12.ts", MEDIA),
        ("/live/s-12.m4s", MEDIA),
        ("/live/s-12.part3.m4s", MEDIA),
        ("/live/s.aac", MEDIA),
        ("/live/s-init-0.mp4", MEDIA),
        ("/live/s.mp4", None),  # a live-MP4 play
        ("/live/s.flv", None),
        ("/index.html", None),
    ],
)
def test_kind_of(path: str, kind: str | None) -> None:
    assert kind_of(path) == kind


def test_low_latency_query_is_normalised_and_checked() -> None:
    assert ll_query({}) == ""
    assert ll_query({"_HLS_part": "2", "x": "y", "_HLS_msn": "40", "vhost": "a"}) == "_HLS_msn=40&_HLS_part=2"
    assert ll_query({"_HLS_skip": "YES"}) == "_HLS_skip=YES"
    for bad in (
        {"_HLS_msn": "-1"},
        {"_HLS_msn": "1e3"},
        {"_HLS_part": "٣"},
        {"_HLS_skip": "no"},
        {"_HLS_msn": "9" * 13},
    ):
        with pytest.raises(ValueError):
            ll_query(bad)


def test_stream_key_and_resolve() -> None:
    for rel in ("live/s.m3u8", "live/s-12.ts", "live/s-12.part3.m4s", "live/s-init-0.mp4", "live/s-12.3.m4s"):
        assert stream_key(rel) == "live/s", rel
    assert stream_key("live/s-2.m3u8") == "live/s"  # a stream named s-2 shares s's origin memory: harmless
    assert resolve("live/s.m3u8", "s-1.ts") == "live/s-1.ts"
    assert resolve("live/s.m3u8", "../other/s-1.ts?x=1") == "other/s-1.ts"
    assert resolve("live/s.m3u8", "../../x.ts") is None
    assert resolve("live/s.m3u8", "http://cdn/live/s-1.ts") is None


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("live/s.m3u8", True),
        ("live/sub/s-1.ts", True),
        ("live/../s.m3u8", False),
        ("live/./s.m3u8", False),
        ("live//s.m3u8", False),
        ("/etc/s.m3u8", False),
        ("live/s\x00.ts", False),
        ("live/s\\..\\x.ts", False),
        ("live/s%2e.ts", False),
        ("live/s\n.ts", False),
        ("", False),
        ("a/" * 600 + "s.ts", False),
    ],
)
def test_relative_paths_never_escape(path: str, ok: bool) -> None:
    assert (check_rel_path(path) is None) == ok, check_rel_path(path)


# ---------------------------------------------------------------- how long


def test_playlist_ttl_follows_short_targets() -> None:
    assert playlist_ttl(LIVE.format(t=2)) == 0.5
    assert playlist_ttl(LIVE.format(t=1)) == 0.25
    ll = LIVE.format(t=1) + "#EXT-X-PART-INF:PART-TARGET=0.2\n"
    assert part_target_of(ll) == 0.2 and playlist_ttl(ll) == pytest.approx(0.1)
    assert playlist_ttl("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n") == 0.5  # a master playlist
    assert stale_window(LIVE.format(t=2)) == 8.0 and stale_window(LIVE.format(t=1)) == 6.0
    assert stale_window(LIVE.format(t=60)) == 30.0


def test_playlist_reading() -> None:
    text = (
        LIVE.format(t=2)
        + '#EXT-X-MAP:URI="s-init-0.mp4"\n#EXT-X-PART:DURATION=0.2,URI="s-8.0.m4s"\n'
        + '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s-8.1.m4s"\n'
    )
    assert target_of(text) == 2 and media_sequence_of(text) == 7
    assert uris_of(text) == ["s-7.ts", "s-init-0.mp4", "s-8.0.m4s", "s-8.1.m4s"]
    assert target_of("#EXT-X-TARGETDURATION:nan\n") is None and media_sequence_of("#EXTM3U\n") is None


def test_stale_live_playlist_rule() -> None:
    two = LIVE.format(t=2)
    assert not is_stale_live(two, 29.0) and is_stale_live(two, 31.0)  # max(30 s, 6 x 2 s)
    ten = LIVE.format(t=10)
    assert not is_stale_live(ten, 59.0) and is_stale_live(ten, 61.0)  # 6 x 10 s
    assert not is_stale_live(two + "#EXT-X-ENDLIST\n", 1e6)
    assert not is_stale_live("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n", 1e6)


# ---------------------------------------------------------------- bounded caches


def test_byte_lru_bounds_bytes_objects_and_age() -> None:
    lru: ByteLru[bytes] = ByteLru(100, 40, max_age=10.0)
    assert lru.put("a", b"x" * 40, 40, 0.0) and lru.put("b", b"x" * 40, 40, 0.0)
    assert not lru.put("big", b"x" * 41, 41, 0.0) and lru.get("big", 0.0) is None
    assert lru.get("a", 1.0) is not None  # a is now the most recent
    assert lru.put("c", b"x" * 40, 40, 1.0)
    assert lru.get("b", 1.0) is None and lru.get("a", 1.0) is not None and lru.bytes == 80 and lru.evictions == 1
    assert lru.get("a", 10.0) is None and len(lru) == 1  # too old
    lru.resize(30, 30)
    assert lru.bytes == 0 and len(lru) == 0


def test_negative_cache_and_recent_are_bounded() -> None:
    neg = Expiring(0.5, 3)
    neg.add("x", 0.0, 404, "gone")
    assert neg.get("x", 0.4) == (404, "gone") and neg.get("x", 0.5) is None
    for i in range(10):
        neg.add(i, 1.0, 404, "")
    assert len(neg) == 3 and neg.get(0, 1.0) is None and neg.get(9, 1.0) is not None
    recent = Recent(2)
    for k in "abc":
        recent.set(k, k.upper())
    assert recent.get("a") is None and recent.get("c") == "C"


def test_origin_order_starts_with_the_last_that_answered() -> None:
    assert origin_order(["a", "b", "c"], None) == ["a", "b", "c"]
    assert origin_order(["a", "b", "c"], "b") == ["b", "a", "c"]
    assert origin_order(["a", "b"], "gone") == ["a", "b"]  # removed by a reload


def test_entries_of_reads_a_plain_ts_playlist_and_refuses_what_cannot_be_continued() -> None:
    text = (
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-TARGETDURATION:2\n"
        "#EXTINF:2.000,\na-7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.500,\na-8.ts\n"
    )
    assert entries_of(text) == [Entry(2000, "a-7.ts", False), Entry(1500, "a-8.ts", True)]
    assert discontinuity_sequence_of(text) == 2
    assert entries_of(text + "#EXT-X-ENDLIST\n") is None
    assert entries_of(text.replace("#EXTINF:1.500", "#EXTINF:x")) is None
    assert entries_of('#EXT-X-MAP:URI="init.mp4"\n' + text) is None
    assert entries_of("#EXTM3U\n#EXTINF:2.0,\n#EXTINF:2.0,\na.ts\n") == [Entry(2000, "a.ts", False)]
