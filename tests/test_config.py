"""srs.conf parsing, validation, defaults, environment overrides and `tidecast config check`."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidecast.config import ConfigError, Listen, load_config, parse_text

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = sorted(FIXTURES.glob("seed_*.conf"))
REPO = Path(__file__).parent.parent


def test_every_seed_configmap_config_is_extracted() -> None:
    assert len(SEEDS) >= 9
    table = (FIXTURES / "SEEDS.md").read_text()
    for seed in SEEDS:
        assert seed.name in table


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_configs_pass_config_check(path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "config", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "is ok" in out.stderr
    original = load_config(str(path), env={})
    again = parse_text(out.stdout, "dump")
    again.path, again.unsupported = original.path, original.unsupported
    assert again == original, "the printed effective settings do not describe the loaded config"


def test_seed_edge_config_values() -> None:
    edge = load_config(str(FIXTURES / "seed_001_1.conf"), env={})
    vhost = edge.vhost("__defaultVhost__")
    assert vhost.cluster.mode == "remote" and vhost.cluster.origin == ["srs-origin-service"]
    assert vhost.http_remux.enabled and edge.http_server.listen == Listen("0.0.0.0", 8080)
    graceful = load_config(str(FIXTURES / "seed_000_1.conf"), env={})
    assert (graceful.grace_start_wait, graceful.grace_final_wait, graceful.force_grace_quit) == (700, 800, True)


def test_defaults_follow_srs() -> None:
    config = parse_text("listen 1935;")
    assert config.listen == [Listen("0.0.0.0", 1935)]
    assert config.max_connections == 1000 and config.daemon is True and config.pid == "./objs/srs.pid"
    assert (config.grace_start_wait, config.grace_final_wait, config.force_grace_quit) == (2300, 3200, False)
    assert config.http_api.listen.port == 1985 and not config.http_api.enabled
    assert config.http_server.listen.port == 8080 and config.http_server.dir == "./objs/nginx/html"
    vhost = config.vhost("any.example.com")
    assert vhost.name == "__defaultVhost__"
    assert (vhost.hls.hls_fragment, vhost.hls.hls_window, vhost.hls.hls_dispose) == (10.0, 60.0, 120.0)
    assert (vhost.hls.hls_m3u8_file, vhost.hls.hls_ts_file) == ("[app]/[stream].m3u8", "[app]/[stream]-[seq].ts")
    assert (vhost.play.queue_length, vhost.play.mw_latency, vhost.play.mw_msgs) == (30.0, 350, 8)
    assert vhost.play.gop_cache and vhost.play.gop_cache_max_frames == 2500
    assert vhost.http_remux.mount == "[vhost]/[app]/[stream].flv" and vhost.cluster.mode == "local"


def test_grammar_comments_quotes_nesting_and_include(tmp_path: Path) -> None:
    (tmp_path / "vhosts.conf").write_text("vhost v1 { hls { enabled on; } }\n")
    main = tmp_path / "main.conf"
    main.write_text(
        "# a comment\n"
        "listen 127.0.0.1:1935 [::1]:1936;  # two listeners\n"
        'pid "/tmp/a b.pid";\n'
        "http_server { enabled on; dir './my html'; }\n"
        "include vhosts.conf;\n"
        "vhost v1 { hls { enabled off; } }\n"
    )
    config = load_config(str(main), env={})
    assert config.listen == [Listen("127.0.0.1", 1935), Listen("::1", 1936)]
    assert config.pid == "/tmp/a b.pid" and config.http_server.dir == "./my html"
    assert config.vhost("v1").hls.enabled is True  # the first definition wins, as in SRS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "listen 1935;\nfoo bar;\n",
            'x.conf:2: unknown directive "foo" in the top level; accepted here: auto_reload_for_docker, chunk_size,',
        ),
        (
            "listen 1935;\nvhost v { hls { hls_fragment abc; } }\n",
            'x.conf:2: bad value "abc" for hls_fragment (in vhost v hls): '
            "expected a number of seconds from 0.1 to 3600, e.g. 10",
        ),
        (
            "listen 1935;\nvhost v {\n  hls { enabled on; }\n",
            'x.conf:2: unterminated block "vhost" opened here; add the closing "}"',
        ),
        ("listen 1935\nmax_connections 10;\n", 'x.conf:1: directive "listen" does not end on its line; add ";"'),
        (
            "listen 1935;\ndaemon maybe;\n",
            'x.conf:2: bad value "maybe" for daemon (in the top level): expected on or off',
        ),
        ("listen 1935;\n}\n", 'x.conf:2: unexpected "}" with no block open; remove it'),
        ("listen abc;\n", 'x.conf:1: bad value "abc" for listen (in the top level): expected one or more ports'),
        ("daemon off;\n", "x.conf: no listen directive; add one, e.g. `listen 1935;`"),
    ],
)
def test_errors_name_file_line_directive_and_what_is_accepted(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(message), str(info.value)


def test_config_check_cli_prints_the_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("listen 1935;\nvhost v { play { time_jitter sometimes; } }\n")
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "config", "check", "-c", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert f'{path}:2: bad value "sometimes" for time_jitter (in vhost v play): expected full or zero or off' in (
        out.stderr
    )


def test_unsupported_srs_directives_load_with_one_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "srs.conf"
    path.write_text(
        "listen 1935;\nrtc_server { enabled on; listen 8000; }\nstats { network 0; }\n"
        "vhost __defaultVhost__ { dvr { enabled off; } hls { enabled on; hls_acodec aac; } }\n"
    )
    with caplog.at_level(logging.WARNING, logger="tidecast.config"):
        config = load_config(str(path), env={})
    assert len(config.unsupported) == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "tidecast.config"]
    assert len(warnings) == 1
    assert "rtc_server" in warnings[0] and "dvr (in vhost __defaultVhost__)" in warnings[0] and "hls_acodec" in warnings[0]
    assert config.vhost("x").hls.enabled


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "srs.conf"
    path.write_text("listen 1935;\ndaemon on;\nvhost __defaultVhost__ { hls { hls_fragment 10; } }\n")
    env = {
        "SRS_LISTEN": "127.0.0.1:2935",
        "SRS_DAEMON": "off",
        "SRS_HTTP_API_ENABLED": "on",
        "SRS_HTTP_API_RAW_API_ALLOW_RELOAD": "on",
        "SRS_VHOST_HLS_HLS_FRAGMENT": "2",
        "SRS_IN_DOCKER": "on",
        "SRS_SOMETHING_ELSE": "ignored",
    }
    config = load_config(str(path), env=env)
    assert config.listen == [Listen("127.0.0.1", 2935)] and config.daemon is False and config.in_docker
    assert config.http_api.enabled and config.http_api.raw_api.allow_reload
    assert config.vhost("__defaultVhost__").hls.hls_fragment == 2.0
    with pytest.raises(ConfigError, match="environment variable SRS_MAX_CONNECTIONS: bad value"):
        load_config(str(path), env={"SRS_MAX_CONNECTIONS": "lots"})
    env_only = load_config(None, env={"SRS_LISTEN": "1936"}, env_only=True)
    assert env_only.listen == [Listen("0.0.0.0", 1936)] and env_only.path is None


def test_default_config_matches_the_readme() -> None:
    config = load_config(str(REPO / "conf" / "tidecast.conf"), env={})
    assert [x.port for x in config.listen] == [1935]
    assert config.http_api.enabled and config.http_api.listen.port == 1985
    assert config.http_server.enabled and config.http_server.listen.port == 8080
    vhost = config.vhost("__defaultVhost__")
    assert vhost.http_remux.enabled and vhost.hls.enabled and config.daemon is False


def test_dump_round_trips() -> None:
    text = (
        "listen 127.0.0.1:1935; max_connections 10; http_api { enabled on; auth { enabled on; username a; "
        "password 'p w'; } }\nvhost v { cluster { mode remote; origin a:1935 b; coworkers_dns socs:1985; } }\n"
    )
    config = parse_text(text)
    again = parse_text(config.dump())
    again.path = config.path
    assert again == config


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"ab {};#'\"\n\t 1:", "vhost", "hls", "listen", "on", "include"]), max_size=40).map(
        "".join
    )
)
def test_parser_fuzz_only_config_errors(text: str) -> None:
    try:
        parse_text(text)
    except ConfigError:
        pass
