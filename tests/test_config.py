"""srs.conf parsing, validation, defaults, environment overrides and `tidecast config check`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit.helpers import config_check

from tidecast.config import (
    ApiAuth,
    Cluster,
    Config,
    ConfigError,
    Exporter,
    Hls,
    HttpApi,
    HttpRemux,
    HttpServer,
    Listen,
    Play,
    Publish,
    RawApi,
    Vhost,
    load_config,
    parse_text,
)
from tidecast.config.directives import UNSUPPORTED_GLOBAL, UNSUPPORTED_VHOST
from tidecast.config.parser import parse_text as parse_directives

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = sorted(FIXTURES.glob("seed_*.conf"))
REPO = Path(__file__).parent.parent
DOCS = REPO / "docs" / "configuration.md"


def load(tmp_path: Path, text: str, name: str = "x.conf", env: dict[str, str] | None = None) -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path), env=env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The ConfigError message for `text` loaded as x.conf, with the temp dir removed."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env=env)
    return str(info.value).replace(str(tmp_path) + os.sep, "")


def same_settings(a: Config, b: Config) -> bool:
    """Equal apart from where the settings came from."""
    b.path, b.unsupported = a.path, a.unsupported
    return a == b


# ---------------------------------------------------------------- seeds


def test_every_seed_configmap_config_is_extracted() -> None:
    # Two seeds hold srs.conf ConfigMaps: one in 000, eight in 001.
    assert [p.name for p in SEEDS] == ["seed_000_1.conf"] + [f"seed_001_{n}.conf" for n in range(1, 9)]
    table = (FIXTURES / "SEEDS.md").read_text()
    for seed in SEEDS:
        assert seed.name in table


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_configs_load_with_nothing_ignored(path: Path) -> None:
    config = load_config(str(path), env={})
    assert config.unsupported == []
    assert config.listen == [Listen("0.0.0.0", 1935)] and config.daemon is False


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_configs_pass_config_check(path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRS_")}
    out = config_check(path, env=env)
    assert out.returncode == 0, out.stderr
    assert "is ok" in out.stderr
    assert same_settings(load_config(str(path), env={}), parse_text(out.stdout, "dump")), (
        "the printed effective settings do not describe the loaded config"
    )


def test_seed_edge_origin_and_graceful_values() -> None:
    edge = load_config(str(FIXTURES / "seed_001_1.conf"), env={}).vhost("__defaultVhost__")
    assert edge.cluster.mode == "remote" and edge.cluster.origin == ["srs-origin-service"]
    assert edge.http_remux.enabled and not edge.hls.enabled
    origin = load_config(str(FIXTURES / "seed_001_2.conf"), env={}).vhost("__defaultVhost__")
    assert origin.cluster.mode == "local" and origin.cluster.origin_cluster
    assert origin.cluster.coworkers == ["srs-origin-0.socs", "srs-origin-1.socs", "srs-origin-2.socs"]
    assert origin.hls.enabled
    # The scraped page lost the no-break spaces' line structure but not the values.
    graceful = load_config(str(FIXTURES / "seed_000_1.conf"), env={})
    assert (graceful.grace_start_wait, graceful.grace_final_wait, graceful.force_grace_quit) == (700, 800, True)
    assert graceful.http_api.enabled and graceful.http_server.listen == Listen("0.0.0.0", 8080)


# ---------------------------------------------------------------- defaults


def test_defaults_follow_srs() -> None:
    config = parse_text("listen 1935;")
    assert config.path == "<string>" and config.unsupported == []
    assert config.listen == [Listen("0.0.0.0", 1935)]
    assert (config.max_connections, config.pid, config.daemon) == (1000, "./objs/srs.pid", True)
    assert (config.disable_daemon_for_docker, config.in_docker) == (True, False)
    assert (config.srs_log_tank, config.srs_log_level, config.srs_log_file) == ("console", "trace", "./objs/srs.log")
    assert (config.chunk_size, config.empty_ip_ok) == (60000, True)
    assert (config.grace_start_wait, config.grace_final_wait, config.force_grace_quit) == (2300, 3200, False)
    assert (config.inotify_auto_reload, config.auto_reload_for_docker) == (False, True)
    assert (config.log_format, config.handshake_timeout, config.grace_drain_timeout) == ("text", 30000, 0)
    assert config.http_api == HttpApi(
        enabled=False,
        listen=Listen("0.0.0.0", 1985),
        crossdomain=True,
        raw_api=RawApi(enabled=False, allow_reload=False, allow_query=False, allow_update=False),
        auth=ApiAuth(enabled=False, username="", password=""),
    )
    assert config.http_server == HttpServer(False, Listen("0.0.0.0", 8080), "./objs/nginx/html", True)
    assert config.exporter == Exporter(False, Listen("0.0.0.0", 9972), "", "")
    assert list(config.vhosts) == ["__defaultVhost__"]
    vhost = config.vhost("__defaultVhost__")
    assert vhost == Vhost(name="__defaultVhost__", enabled=True, chunk_size=None, min_latency=False, tcp_nodelay=False)
    assert vhost.cluster == Cluster(
        mode="local",
        origin=[],
        token_traverse=False,
        vhost="[vhost]",
        protocol="rtmp",
        origin_cluster=False,
        coworkers=[],
        coworkers_dns=None,
        debug_srs_upnode=True,
    )
    assert vhost.http_remux == HttpRemux(enabled=False, mount="[vhost]/[app]/[stream].flv")
    assert vhost.hls == Hls(
        enabled=False,
        hls_fragment=10.0,
        hls_td_ratio=1.0,
        hls_aof_ratio=2.0,
        hls_window=60.0,
        hls_path="./objs/nginx/html",
        hls_m3u8_file="[app]/[stream].m3u8",
        hls_ts_file="[app]/[stream]-[seq].ts",
        hls_entry_prefix="",
        hls_cleanup=True,
        hls_dispose=120.0,
        hls_wait_keyframe=True,
    )
    assert vhost.play == Play(
        gop_cache=True,
        gop_cache_max_frames=2500,
        queue_length=30.0,
        mw_latency=350,
        mw_msgs=8,
        time_jitter="full",
        atc=False,
        mix_correct=False,
    )
    assert vhost.publish == Publish(
        firstpkt_timeout=20000, normal_timeout=5000, mr=False, mr_latency=350, parse_sps=True
    )


def test_default_config_file() -> None:
    config = load_config(str(REPO / "conf" / "tidecast.conf"), env={})
    assert config.unsupported == []
    assert config.listen == [Listen("0.0.0.0", 1935)] and config.daemon is False
    assert config.srs_log_tank == "console"
    assert config.http_api.enabled and config.http_api.listen == Listen("0.0.0.0", 1985)
    assert config.http_server.enabled and config.http_server.listen == Listen("0.0.0.0", 8080)
    assert config.http_server.dir == "./objs/nginx/html"
    vhost = config.vhost("__defaultVhost__")
    assert vhost.http_remux.enabled and vhost.http_remux.mount == "[vhost]/[app]/[stream].flv"
    assert vhost.hls.enabled and (vhost.hls.hls_fragment, vhost.hls.hls_window) == (2.0, 10.0)


# ---------------------------------------------------------------- grammar


def test_comments_quotes_and_nested_blocks() -> None:
    config = parse_text(
        "# a comment line\n"
        "listen 127.0.0.1:1935 [::1]:1936;  # two listeners\n"
        'pid "/tmp/a b#c.pid";\n'
        "http_server { enabled on; dir './my html'; }   # one line holds a whole block\n"
        "http_api {\n"
        "    enabled on;\n"
        "    raw_api { enabled on; allow_reload on; }\n"
        "    auth { enabled on; username admin; password 'p;w{}'; }\n"
        "}\n"
        "vhost v1 { cluster { mode remote; origin a:1935 'b c'; } }\n"
    )
    assert config.listen == [Listen("127.0.0.1", 1935), Listen("::1", 1936)]
    assert config.pid == "/tmp/a b#c.pid" and config.http_server.dir == "./my html"
    assert config.http_api.raw_api.allow_reload and config.http_api.auth.password == "p;w{}"
    assert config.vhost("v1").cluster.origin == ["a:1935", "b c"]


def test_directive_tree() -> None:
    tree = parse_directives("a 1 '2 3';\nb {\n  c;\n}\n", "t.conf")
    assert [(d.name, d.args, d.line, d.block) for d in tree] == [("a", ["1", "2 3"], 1, False), ("b", [], 2, True)]
    (c,) = tree[1].children
    assert (c.name, c.args, c.children, c.file, c.line) == ("c", [], [], "t.conf", 3)


def test_no_break_spaces_separate_words() -> None:
    # Configs pasted from web pages (the seeds among them) carry U+00A0.
    text = "listen  1935;\nvhost v { hls { enabled on; } }\n".replace(" ", "\u00a0")
    config = parse_text(text)
    assert config.vhost("v").hls.enabled


def test_include_at_any_level_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vhosts.conf").write_text("vhost v1 { include hls.conf; }\n")
    (tmp_path / "sub" / "hls.conf").write_text("hls { enabled on; hls_fragment 3; }\n")
    (tmp_path / "api.conf").write_text("enabled on;\n")
    config = load(tmp_path, "listen 1935;\nhttp_api { include api.conf; }\ninclude sub/vhosts.conf;\n")
    assert config.http_api.enabled
    assert config.vhost("v1").hls.enabled and config.vhost("v1").hls.hls_fragment == 3.0


def test_include_falls_back_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SRS opens include paths as given, so its configs write them from where the server runs.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "main.conf").write_text("listen 1935;\ninclude ./conf/vhost.conf;\n")
    (tmp_path / "conf" / "vhost.conf").write_text("vhost v { enabled off; }\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("conf/main.conf", env={}).vhosts["v"].enabled is False


def test_include_errors_name_the_include(tmp_path: Path) -> None:
    assert error_of(tmp_path, "listen 1935;\ninclude missing.conf;\n") == (
        'x.conf:2: include "missing.conf": cannot read the config file: No such file or directory'
    )
    (tmp_path / "loop.conf").write_text("include x.conf;\n")
    assert "the file includes itself" in error_of(tmp_path, "listen 1935;\ninclude loop.conf;\n")
    (tmp_path / "inner.conf").write_text("vhost v {\n")
    assert error_of(tmp_path, "listen 1935;\ninclude inner.conf;\n") == (
        'inner.conf:1: unterminated block "vhost" opened here; add the closing "}"'
    )


def test_the_first_duplicate_wins_as_in_srs() -> None:
    config = parse_text(
        "listen 1935;\nlisten 1936;\nvhost v { hls { enabled on; } }\nvhost v { hls { enabled off; } }\n"
    )
    assert config.listen == [Listen("0.0.0.0", 1935)] and config.vhost("v").hls.enabled


@pytest.mark.parametrize(
    ("value", "listen"),
    [
        ("1935", [Listen("0.0.0.0", 1935)]),
        ("127.0.0.1:1935 1936", [Listen("127.0.0.1", 1935), Listen("0.0.0.0", 1936)]),
        ("[::]:1935", [Listen("::", 1935)]),
        ("0.0.0.0:1935 [::]:1935", [Listen("0.0.0.0", 1935), Listen("::", 1935)]),
    ],
)
def test_listen_forms(value: str, listen: list[Listen]) -> None:
    assert parse_text(f"listen {value};").listen == listen


@pytest.mark.parametrize("value", ["on", "ON", "true", "yes", "1"])
def test_true_spellings(value: str) -> None:
    assert parse_text(f"listen 1935; daemon {value};").daemon is True


@pytest.mark.parametrize("value", ["off", "Off", "false", "no", "0"])
def test_false_spellings(value: str) -> None:
    assert parse_text(f"listen 1935; daemon {value};").daemon is False


# ---------------------------------------------------------------- errors

ERRORS = [
    (
        "listen 1935;\nvhost v {\n    foo bar;\n}\n",
        'x.conf:3: unknown directive "foo" in vhost v; accepted here: chunk_size, cluster, dvr, enabled, exec, '
        "forward, hls, http_hooks, http_remux, ingest, min_latency, play, publish, refer, security, signed_url, "
        "tcp_nodelay, transcode",
    ),
    (
        "listen 1935;\nhttp_api { raw_api { allow_all on; } }\n",
        'x.conf:2: unknown directive "allow_all" in http_api raw_api; accepted here: allow_query, allow_reload, '
        "allow_update, enabled",
    ),
    (
        "listen 1935;\nvhost __defaultVhost__ {\n  hls {\n    hls_fragment abc;\n  }\n}\n",
        'x.conf:4: bad value "abc" for hls_fragment (in vhost __defaultVhost__ hls): '
        "expected a number of seconds from 0.1 to 3600, e.g. 10",
    ),
    (
        "listen 1935;\nvhost v {\n  hls { enabled on; }\n",
        'x.conf:2: unterminated block "vhost" opened here; add the closing "}"',
    ),
    (
        "listen 1935\nmax_connections 10;\n",
        'x.conf:1: directive "listen" does not end on its line; add ";" (or "{" to open a block) before the line break',
    ),
    (
        "listen 1935;\nvhost v\n{\n}\n",
        'x.conf:2: directive "vhost" does not end on its line; add ";" (or "{" to open a block) before the line break',
    ),
    (
        "listen 1935;\nhttp_api { enabled on }\n",
        'x.conf:2: directive "enabled" is missing its ";" before "}"',
    ),
    ("listen 1935;\ndaemon off", 'x.conf:2: directive "daemon" is missing its ";" at the end'),
    ("listen 1935;\n}\n", 'x.conf:2: unexpected "}" with no block open; remove it'),
    ("listen 1935;\n;\n", 'x.conf:2: ";" without a directive name before it'),
    ("listen 1935;\npid 'a.pid;\n", "x.conf:2: unterminated quoted string; add the closing '"),
    (
        "listen 1935;\ndaemon maybe;\n",
        'x.conf:2: bad value "maybe" for daemon (in the top level): expected on or off',
    ),
    (
        "listen 1935;\ndaemon on off;\n",
        'x.conf:2: bad value "on off" for daemon (in the top level): expected on or off',
    ),
    (
        "listen abc;\n",
        'x.conf:1: bad value "abc" for listen (in the top level): '
        "expected one or more ports or host:port, e.g. 1935 or 127.0.0.1:1935",
    ),
    (
        "listen 70000;\n",
        'x.conf:1: bad value "70000" for listen (in the top level): '
        "expected one or more ports or host:port, e.g. 1935 or 127.0.0.1:1935",
    ),
    (
        "listen 1935;\nchunk_size 127;\n",
        'x.conf:2: bad value "127" for chunk_size (in the top level): expected an integer from 128 to 65536',
    ),
    (
        "listen 1935;\nmax_connections 1_000;\n",
        'x.conf:2: bad value "1_000" for max_connections (in the top level): expected an integer from 1 to 1000000',
    ),
    (
        "listen 1935;\nsrs_log_tank syslog;\n",
        'x.conf:2: bad value "syslog" for srs_log_tank (in the top level): expected console or file',
    ),
    (
        "listen 1935;\nvhost v { play { time_jitter sometimes; } }\n",
        'x.conf:2: bad value "sometimes" for time_jitter (in vhost v play): expected full or zero or off',
    ),
    (
        "listen 1935;\nvhost v { cluster { mode edge; } }\n",
        'x.conf:2: bad value "edge" for mode (in vhost v cluster): expected local or remote',
    ),
    (
        "listen 1935;\nvhost v { play { queue_length nan; } }\n",
        'x.conf:2: bad value "nan" for queue_length (in vhost v play): '
        "expected a number of seconds from 0.1 to 3600, e.g. 10",
    ),
    ("listen 1935;\nvhost v { hls on; }\n", 'x.conf:2: "hls" is a block; write hls { ... }'),
    ("listen 1935;\ndaemon { on; }\n", 'x.conf:2: "daemon" takes values, not a block; write daemon VALUE;'),
    ("listen 1935;\nvhost { }\n", "x.conf:2: vhost needs exactly one name and a block: vhost NAME { ... }"),
    ("daemon off;\n", "x.conf: no listen directive; add one, e.g. `listen 1935;` (or set SRS_LISTEN)"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(": ")[1][:40] for _, m in ERRORS])
def test_errors_name_file_line_directive_and_what_to_do(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_unknown_top_level_directive_lists_everything_accepted(tmp_path: Path) -> None:
    assert error_of(tmp_path, "listen 1935;\nfoo bar;\n") == (
        'x.conf:2: unknown directive "foo" in the top level; accepted here: auto_reload_for_docker, chunk_size, '
        "daemon, disable_daemon_for_docker, empty_ip_ok, exporter, force_grace_quit, grace_drain_pace, "
        "grace_drain_timeout, grace_final_wait, grace_start_wait, handshake_timeout, http_api, http_server, in_docker, "
        "inotify_auto_reload, listen, log_format, max_connections, pid, srs_log_file, srs_log_level, srs_log_tank, "
        "workers"
    )


@pytest.mark.parametrize("value", ["10s", "inf", "1e999", "0x10", "١٠", "", "9" * 5000])
def test_numbers_are_plain_decimals(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, f"listen 1935;\nvhost v {{ hls {{ hls_fragment '{value}'; }} }}\n")
    assert message.startswith(f'x.conf:2: bad value "{value}" for hls_fragment')


def test_huge_integers_are_config_errors(tmp_path: Path) -> None:
    assert "expected an integer" in error_of(tmp_path, f"listen 1935;\nmax_connections {'9' * 5000};\n")
    assert "bad value" in error_of(tmp_path, f"listen {'9' * 5000};\n")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.conf: cannot read the config file: No such file or directory"):
        load_config(str(tmp_path / "nowhere.conf"), env={})
    (tmp_path / "latin1.conf").write_bytes(b"listen 1935; pid caf\xe9;\n")
    with pytest.raises(ConfigError, match=r"latin1\.conf: not UTF-8 text .*; save it as UTF-8"):
        load_config(str(tmp_path / "latin1.conf"), env={})


def test_config_check_cli_prints_the_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("listen 1935;\nvhost v { play { time_jitter sometimes; } }\n")
    out = config_check(path)
    assert out.returncode == 1
    assert f'{path}:2: bad value "sometimes" for time_jitter (in vhost v play): expected full or zero or off' in (
        out.stderr
    )


# ---------------------------------------------------------------- vhosts


def test_vhost_lookup() -> None:
    config = parse_text(
        "listen 1935;\nvhost a.example.com { min_latency on; }\nvhost off.example.com { enabled off; }\n"
        "vhost __defaultVhost__ { chunk_size 4096; }\n"
    )
    assert config.vhost("a.example.com").min_latency and config.vhost("a.example.com").name == "a.example.com"
    assert config.vhost("b.example.com").name == "__defaultVhost__"
    assert config.vhost("b.example.com").chunk_size == 4096
    assert config.vhost("A.EXAMPLE.COM").name == "__defaultVhost__"  # exact match only
    disabled = config.vhost("off.example.com")
    assert disabled.name == "off.example.com" and disabled.enabled is False  # consumers check .enabled
    assert set(config.vhosts) == {"a.example.com", "off.example.com", "__defaultVhost__"}


def test_default_vhost_always_exists() -> None:
    config = parse_text("listen 1935;\nvhost only.example.com { }\n")
    assert config.vhost("other").name == "__defaultVhost__" and "__defaultVhost__" in config.vhosts


def test_min_latency_keeps_the_raw_merged_write_values() -> None:
    vhost = parse_text("listen 1935; vhost v { min_latency on; play { mw_msgs 4; } }").vhost("v")
    assert vhost.min_latency and vhost.play.mw_msgs == 4


def test_old_vhost_level_spellings_read_as_srs_3_does() -> None:
    config = parse_text(
        "listen 1935;\n"
        "http_stream { enabled on; listen 8081; }\n"
        "vhost old {\n"
        "    mode remote; origin a:1935 b:1935; token_traverse on; vhost up.example.com; debug_srs_upnode off;\n"
        "    gop_cache off; queue_length 10; time_jitter zero; mw_latency 100; atc on; atc_auto on;\n"
        "    publish_1stpkt_timeout 1000; publish_normal_timeout 7000;\n"
        "    mr { enabled on; latency 500; }\n"
        "}\n"
        "vhost both { gop_cache off; play { gop_cache on; } }\n"
    )
    assert config.http_server.enabled and config.http_server.listen.port == 8081
    old = config.vhost("old")
    assert old.cluster == Cluster(
        mode="remote", origin=["a:1935", "b:1935"], token_traverse=True, vhost="up.example.com", debug_srs_upnode=False
    )
    assert (old.play.gop_cache, old.play.queue_length, old.play.time_jitter) == (False, 10.0, "zero")
    assert (old.play.mw_latency, old.play.atc) == (100, True)
    assert old.publish == Publish(firstpkt_timeout=1000, normal_timeout=7000, mr=True, mr_latency=500)
    assert [u.split(" ", 1)[1] for u in config.unsupported] == ["atc_auto (in vhost old play)"]
    assert config.vhost("both").play.gop_cache is True  # the block itself wins over the old spelling


# ---------------------------------------------------------------- unsupported SRS directives


def test_unsupported_srs_directives_load_with_one_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    text = (
        "listen 1935;\n"
        "rtc_server { enabled on; listen 8000; }\n"
        "stats { network 0; }\n"
        "http_api { enabled on; https { enabled on; } }\n"
        "vhost __defaultVhost__ {\n"
        "    hds { enabled off; }\n"
        "    hls { enabled on; hls_acodec aac; }\n"
        "}\n"
    )
    with caplog.at_level(logging.WARNING, logger="tidecast.config"):
        config = load(tmp_path, text, name="srs.conf")
    path = tmp_path / "srs.conf"
    assert config.unsupported == [
        f"{path}:2 rtc_server",
        f"{path}:3 stats",
        f"{path}:4 https (in http_api)",
        f"{path}:6 hds (in vhost __defaultVhost__)",
        f"{path}:7 hls_acodec (in vhost __defaultVhost__ hls)",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tidecast.config"]
    assert warnings == [
        "config: 5 SRS directive(s) tidecast does not implement were ignored: " + ", ".join(config.unsupported)
    ]
    assert config.http_api.enabled and config.vhost("x").hls.enabled


def test_no_warning_without_unsupported_directives(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="tidecast.config"):
        load(tmp_path, "listen 1935;\n")
    assert [r for r in caplog.records if r.name == "tidecast.config"] == []


def test_unsupported_lists_are_documented() -> None:
    docs = DOCS.read_text()
    for name in sorted(UNSUPPORTED_GLOBAL | UNSUPPORTED_VHOST):
        assert f"`{name}`" in docs, name


# ---------------------------------------------------------------- environment


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "SRS_LISTEN": "127.0.0.1:2935 2936",
        "SRS_MAX_CONNECTIONS": "50",
        "SRS_DAEMON": "off",
        "SRS_IN_DOCKER": "on",
        "SRS_HTTP_API_ENABLED": "on",
        "SRS_HTTP_API_LISTEN": "127.0.0.1:2985",
        "SRS_HTTP_API_RAW_API_ALLOW_RELOAD": "on",
        "SRS_HTTP_SERVER_DIR": "/srv/my html",
        "SRS_VHOST_HLS_ENABLED": "on",
        "SRS_VHOST_HLS_HLS_FRAGMENT": "2",
        "SRS_VHOST_CLUSTER_ORIGIN": "a:1935 b:1935",
        "SRS_RTC_SERVER_ENABLED": "on",  # SRS has it, tidecast does not: ignored
        "OTHER": "x",
    }
    config = load(tmp_path, "listen 1935;\ndaemon on;\nvhost __defaultVhost__ { hls { hls_fragment 10; } }\n", env=env)
    assert config.listen == [Listen("127.0.0.1", 2935), Listen("0.0.0.0", 2936)]
    assert config.max_connections == 50 and config.daemon is False and config.in_docker is True
    assert config.http_api.enabled and config.http_api.listen == Listen("127.0.0.1", 2985)
    assert config.http_api.raw_api.allow_reload and config.http_server.dir == "/srv/my html"
    vhost = config.vhost("__defaultVhost__")
    assert vhost.hls.enabled and vhost.hls.hls_fragment == 2.0 and vhost.cluster.origin == ["a:1935", "b:1935"]


def test_environment_vhost_names_apply_to_every_vhost_as_in_srs() -> None:
    # SRS's vhost getters read SRS_VHOST_* before the vhost's block: the variable wins in every vhost.
    text = "listen 1935;\nvhost v { play { gop_cache on; } tcp_nodelay off; }\n"
    config = parse_text(text, env={"SRS_VHOST_PLAY_GOP_CACHE": "off", "SRS_VHOST_TCP_NODELAY": "on"})
    for name in ("__defaultVhost__", "v", "not.in.the.file"):
        assert config.vhost(name).play.gop_cache is False and config.vhost(name).tcp_nodelay is True, name


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    assert error_of(tmp_path, "listen 1935;\n", env={"SRS_MAX_CONNECTIONS": "lots"}) == (
        'environment variable SRS_MAX_CONNECTIONS: bad value "lots" for max_connections (in the environment): '
        "expected an integer from 1 to 1000000"
    )
    assert error_of(tmp_path, "listen 1935;\n", env={"SRS_VHOST_HLS_HLS_WINDOW": "long"}) == (
        'environment variable SRS_VHOST_HLS_HLS_WINDOW: bad value "long" for hls_window '
        "(in vhost __defaultVhost__ (environment)): expected a number of seconds from 0.1 to 86400, e.g. 10"
    )


def test_environment_can_provide_listen(tmp_path: Path) -> None:
    assert load(tmp_path, "daemon off;\n", env={"SRS_LISTEN": "1940"}).listen == [Listen("0.0.0.0", 1940)]


def test_env_only() -> None:
    config = load_config(None, env={"SRS_LISTEN": "1936", "SRS_HTTP_API_ENABLED": "on"}, env_only=True)
    assert config.path is None and config.listen == [Listen("0.0.0.0", 1936)] and config.http_api.enabled
    assert load_config("ignored.conf", env={}, env_only=True).listen == [Listen("0.0.0.0", 1935)]


def test_load_config_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRS_MAX_CONNECTIONS", "77")
    path = tmp_path / "x.conf"
    path.write_text("listen 1935;\n")
    assert load_config(str(path)).max_connections == 77
    assert parse_text("listen 1935;").max_connections == 1000  # parse_text: no environment unless given


# ---------------------------------------------------------------- dump


def test_dump_round_trips() -> None:
    text = (
        "listen 127.0.0.1:1935 [::]:1936; max_connections 10; pid ''; srs_log_file \"a b#;{}'.log\";\n"
        "http_api { enabled on; auth { enabled on; username a; password 'p\"w'; } }\n"
        "vhost v { chunk_size 4096; cluster { mode remote; origin a:1935 'b c'; coworkers_dns socs:1985; } }\n"
        "vhost 'odd name' { hls { hls_fragment 0.1234567891; hls_dispose 0; } }\n"
    )
    config = parse_text(text)
    assert same_settings(config, parse_text(config.dump()))
    assert config.dump().startswith("# effective settings of <string>\n")


def test_dump_shows_every_default() -> None:
    dumped = parse_text("listen 1935;").dump()
    for line in ("listen 0.0.0.0:1935;", "max_connections 1000;", "daemon on;", "grace_start_wait 2300;"):
        assert line in dumped.splitlines()
    for line in ("hls_fragment 10;", "hls_window 60;", "mount [vhost]/[app]/[stream].flv;", "time_jitter full;"):
        assert "        " + line in dumped.splitlines()
    assert "coworkers_dns" not in dumped  # None: nothing to write


values = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12).filter(
    lambda s: not ('"' in s and "'" in s)
)


@settings(max_examples=150, deadline=None)
@given(
    listen=st.lists(
        st.builds(Listen, st.sampled_from(["0.0.0.0", "127.0.0.1", "::", "::1"]), st.integers(1, 65535)),
        min_size=1,
        max_size=3,
    ),
    pid=values,
    max_connections=st.integers(1, 1_000_000),
    fragment=st.floats(0.1, 3600),
    window=st.floats(0.1, 86400),
    origin=st.lists(values, max_size=3),
    vhost=values.filter(bool),
    mode=st.sampled_from(["local", "remote"]),
    flag=st.booleans(),
)
def test_dump_round_trips_any_settings(
    listen: list[Listen],
    pid: str,
    max_connections: int,
    fragment: float,
    window: float,
    origin: list[str],
    vhost: str,
    mode: str,
    flag: bool,
) -> None:
    config = Config(path="<string>", listen=listen, pid=pid, max_connections=max_connections, daemon=flag)
    config.vhosts[vhost] = Vhost(
        name=vhost,
        enabled=flag,
        cluster=Cluster(mode=mode, origin=origin),
        hls=Hls(hls_fragment=fragment, hls_window=window, hls_cleanup=not flag),
    )
    assert same_settings(config, parse_text(config.dump()))


# ---------------------------------------------------------------- fuzz

ALPHABET = [*"ab {};#'\"\n\t 1:\u00a0", "vhost", "hls", "listen", "on", "include", "http_api", "enabled"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join))
def test_parser_fuzz_grammar_tokens(text: str) -> None:
    try:
        parse_text(text)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_fuzz_any_text(text: str) -> None:
    try:
        parse_text(text)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_load_config_fuzz_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.conf"
        path.write_bytes(data)
        try:
            load_config(str(path), env={})
        except ConfigError:
            pass


def test_an_include_naming_a_fifo_is_refused_at_once_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    main = tmp_path / "srs.conf"
    main.write_text(f"listen 1935;\ninclude {fifo};\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"srs\.conf:2: include .*fifo\.conf.*not a regular file"):
        load_config(str(main))
    assert time.monotonic() - started < 2.0
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(tmp_path))
