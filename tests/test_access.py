"""Access control without a hook server: config blocks, security rules, refer, signed URLs, `tidecast sign`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidecast.access import HookCaller, gates_for, observers_for
from tidecast.access._contract import JoinRequest
from tidecast.access.security import refer_check, security_check
from tidecast.access.signed import SignedUrlGate, sign_query, signed_url, strip_signature, verify
from tidecast.config import ConfigError, Refer, Security, SecurityRule, SignedUrl, load_config, parse_text
from tidecast.config.directives import UNSUPPORTED_VHOST

SECRET = b"correct horse battery staple"


def request(action: str = "play", ip: str = "127.0.0.1", param: str = "", **kw: str) -> JoinRequest:
    fields = {
        "action": action,
        "client_id": "k3j5h2g1",
        "ip": ip,
        "vhost": "__defaultVhost__",
        "app": "live",
        "stream": "cam1" if action != "connect" else "",
        "param": param,
        "tc_url": "rtmp://127.0.0.1/live",
        "page_url": "",
        "protocol": "rtmp",
        "stream_id": "vid-7" if action != "connect" else "",
        "server_id": "vid-srv",
    }
    fields.update(kw)
    return JoinRequest(**fields)


# ---------------------------------------------------------------- config


HOOKS_VHOST = """
listen 1935;
vhost hooks.callback.srs.com {
    http_hooks {
        enabled on;
        on_connect http://127.0.0.1:8085/api/v1/clients http://localhost:8085/api/v1/clients;
        on_close http://127.0.0.1:8085/api/v1/clients;
        on_publish http://127.0.0.1:8085/api/v1/streams https://hooks.example.com/api/v1/streams;
        on_unpublish http://127.0.0.1:8085/api/v1/streams;
        on_play http://127.0.0.1:8085/api/v1/sessions;
        on_stop http://127.0.0.1:8085/api/v1/sessions;
        on_dvr http://127.0.0.1:8085/api/v1/dvrs;
        on_hls http://127.0.0.1:8085/api/v1/hls;
        on_hls_notify http://127.0.0.1:8085/api/v1/hls/[server_id]/[app]/[stream]/[ts_url][param];
        timeout 2.5;
    }
}
vhost security.srs.com {
    security {
        enabled on;
        allow play all;
        deny publish 10.0.0.0/8;
        allow publish 127.0.0.1;
        allow publish ::1;
    }
}
vhost refer.anti_suck.com {
    refer { enabled on; all github.com github.io; publish github.com; play github.com github.io; }
}
vhost old.refer { refer github.com; refer_play a.com b.com; refer_publish c.com; }
"""


def test_srs_full_conf_blocks_load_as_real_settings() -> None:
    config = parse_text(HOOKS_VHOST)
    hooks = config.vhost("hooks.callback.srs.com").http_hooks
    assert hooks.enabled and hooks.timeout == 2.5
    assert hooks.on_connect == ["http://127.0.0.1:8085/api/v1/clients", "http://localhost:8085/api/v1/clients"]
    assert hooks.on_publish[1] == "https://hooks.example.com/api/v1/streams"
    assert hooks.on_hls_notify == ["http://127.0.0.1:8085/api/v1/hls/[server_id]/[app]/[stream]/[ts_url][param]"]
    security = config.vhost("security.srs.com").security
    assert security.enabled and security.rules == [
        SecurityRule("allow", "play", "all"),
        SecurityRule("deny", "publish", "10.0.0.0/8"),
        SecurityRule("allow", "publish", "127.0.0.1"),
        SecurityRule("allow", "publish", "::1"),
    ]
    refer = config.vhost("refer.anti_suck.com").refer
    assert refer == Refer(True, ["github.com", "github.io"], ["github.com"], ["github.com", "github.io"])
    # SRS 1/2's spellings switch refer on, as SRS 3+ reads them.
    assert config.vhost("old.refer").refer == Refer(True, ["github.com"], ["c.com"], ["a.com", "b.com"])
    assert config.unsupported == []  # none of them is merely tolerated any more
    assert not {"http_hooks", "security", "refer", "refer_play", "refer_publish"} & UNSUPPORTED_VHOST
    # Defaults: everything off.
    default = config.vhost("__defaultVhost__")
    assert not (default.http_hooks.enabled or default.security.enabled or default.refer.enabled)
    assert not default.signed_url.enabled and default.http_hooks.timeout == 30.0


def test_dump_keeps_hooks_rules_and_refer() -> None:
    config = parse_text(HOOKS_VHOST)
    again = parse_text(config.dump())
    for name in ("hooks.callback.srs.com", "security.srs.com", "refer.anti_suck.com", "old.refer"):
        assert again.vhost(name) == config.vhost(name), name
    assert "        deny publish 10.0.0.0/8;" in config.dump().splitlines()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "http_hooks { on_play 127.0.0.1:8085/hook; }",
            'x.conf:2: bad value "127.0.0.1:8085/hook" for on_play (in vhost v http_hooks): '
            "expected one or more http:// or https:// URLs, called in turn",
        ),
        (
            "http_hooks { on_publish; }",
            'x.conf:2: bad value "" for on_publish (in vhost v http_hooks): '
            "expected one or more http:// or https:// URLs, called in turn",
        ),
        (
            "http_hooks { timeout 0; }",
            'x.conf:2: bad value "0" for timeout (in vhost v http_hooks): '
            "expected a number of seconds from 0.1 to 3600, e.g. 10",
        ),
        (
            "http_hooks { on_pubilsh http://x/; }",
            'x.conf:2: unknown directive "on_pubilsh" in vhost v http_hooks; accepted here: enabled, on_close, '
            "on_connect, on_dvr, on_hls, on_hls_notify, on_play, on_publish, on_stop, on_unpublish, timeout",
        ),
        (
            "security { enabled on; allow play 10.0.0.300; }",
            'x.conf:2: bad value "play 10.0.0.300" for allow (in vhost v security): expected publish or play, '
            "then all, an IP address or a network, e.g. allow play 10.0.0.0/8",
        ),
        (
            "security { deny watch all; }",
            'x.conf:2: bad value "watch all" for deny (in vhost v security): expected publish or play, '
            "then all, an IP address or a network, e.g. allow play 10.0.0.0/8",
        ),
        (
            "refer { enabled on; play; }",
            'x.conf:2: bad value "" for play (in vhost v refer): '
            "expected one or more domains, e.g. github.com github.io",
        ),
        (
            "signed_url { enabled on; }",
            "x.conf: vhost v signed_url is enabled without a secret; add secret_file PATH; or secret_env VARIABLE; "
            "(tidecast never reads a secret written in the config)",
        ),
        (
            "signed_url { enabled on; secret_env 'A B'; }",
            'x.conf:2: bad value "A B" for secret_env (in vhost v signed_url): '
            "expected an environment variable name, e.g. TIDECAST_SIGN_SECRET",
        ),
        (
            "signed_url { enabled on; secret /etc/x; }",
            'x.conf:2: unknown directive "secret" in vhost v signed_url; accepted here: enabled, play, publish, '
            "secret_env, secret_file",
        ),
    ],
)
def test_bad_access_config_names_the_place_and_the_fix(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "x.conf"
    path.write_text(f"listen 1935;\nvhost v {{ {block} }}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert str(info.value) == message.replace("x.conf", str(path))


def test_secret_file_is_checked_at_load_and_never_dumped(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    path = tmp_path / "x.conf"
    path.write_text(f"listen 1935;\nvhost v {{ signed_url {{ enabled on; secret_file {missing}; }} }}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert str(info.value) == (
        f"{path}:2: cannot read the secret file {missing} for secret_file (in vhost v signed_url): "
        "No such file or directory"
    )
    key = tmp_path / "sign.key"
    key.write_text("  topsecret-value\n")
    path.write_text(f"listen 1935;\nvhost v {{ signed_url {{ enabled on; secret_file {key}; play off; }} }}\n")
    config = load_config(str(path), env={})
    assert config.vhost("v").signed_url == SignedUrl(True, str(key), "", True, False)
    assert "topsecret" not in config.dump() and "topsecret" not in repr(config)
    gate = SignedUrlGate.from_settings(config.vhost("v").signed_url, "v")
    assert "topsecret" not in repr(gate)
    # The file's surrounding whitespace is not part of the secret.
    query = sign_query(b"topsecret-value", "publish", "live", "cam1", int(time.time()) + 60, vhost="v")
    assert gate.verdict(request("publish", param="?" + query, vhost="v")) is None


def test_environment_overrides_for_hooks(tmp_path: Path) -> None:
    env = {
        "SRS_VHOST_HTTP_HOOKS_ENABLED": "on",
        "SRS_VHOST_HTTP_HOOKS_ON_PUBLISH": "http://a:8085/p https://b/p",
        "SRS_VHOST_HTTP_HOOKS_ON_PLAY": "http://a:8085/play",
        "SRS_VHOST_HTTP_HOOKS_TIMEOUT": "3",
    }
    path = tmp_path / "x.conf"
    path.write_text("listen 1935;\nvhost __defaultVhost__ { http_hooks { enabled off; on_play http://file/; } }\n")
    hooks = load_config(str(path), env=env).vhost("__defaultVhost__").http_hooks
    assert hooks.enabled and hooks.on_publish == ["http://a:8085/p", "https://b/p"]
    assert hooks.on_play == ["http://a:8085/play"] and hooks.timeout == 3.0
    # The hook variables apply to every vhost, as SRS reads them: a named vhost cannot be left open.
    path.write_text("listen 1935;\nvhost named { http_hooks { on_stop http://file/; } }\nvhost other { }\n")
    config = load_config(str(path), env=env)
    for name in ("named", "other", "__defaultVhost__"):
        assert (
            config.vhosts[name].http_hooks.enabled
            and config.vhosts[name].http_hooks.on_play == env["SRS_VHOST_HTTP_HOOKS_ON_PLAY"].split()
        ), name
    assert config.vhosts["named"].http_hooks.on_stop == ["http://file/"]  # what the variables do not set stays
    assert config.vhosts["named"].hls.enabled is False
    env_only = load_config(None, env=env, env_only=True).vhost("__defaultVhost__").http_hooks
    assert env_only.enabled and env_only.on_publish == ["http://a:8085/p", "https://b/p"]
    with pytest.raises(ConfigError, match="SRS_VHOST_HTTP_HOOKS_ON_STOP: bad value"):
        load_config(None, env={"SRS_VHOST_HTTP_HOOKS_ON_STOP": "ftp://x/"}, env_only=True)
    signed = {"SRS_VHOST_SIGNED_URL_ENABLED": "on", "SRS_VHOST_SIGNED_URL_SECRET_ENV": "SIGN_KEY"}
    settings = load_config(None, env={**signed, "SRS_VHOST_SIGNED_URL_PLAY": "off"}, env_only=True).vhost("x")
    assert settings.signed_url == SignedUrl(True, "", "SIGN_KEY", publish=True, play=False)
    with pytest.raises(ConfigError, match="the environment: vhost __defaultVhost__ signed_url is enabled without"):
        load_config(None, env={"SRS_VHOST_SIGNED_URL_ENABLED": "on"}, env_only=True)


def test_gates_follow_the_vhost_settings(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(SECRET)
    config = parse_text(
        "listen 1935;\nvhost all { security { enabled on; allow play all; } refer { enabled on; play a.com; }\n"
        f"signed_url {{ enabled on; secret_file {key}; }} http_hooks {{ enabled on; on_play http://h/; }} }}\n"
        "vhost none { security { allow play all; } http_hooks { on_play http://h/; } }\n"
    )
    caller = HookCaller()
    kinds = [type(gate).__name__ for gate in gates_for(config.vhost("all"), caller)]
    assert kinds == ["SecurityGate", "ReferGate", "SignedUrlGate", "HookGate"]
    assert gates_for(config.vhost("none"), caller) == [] and observers_for(config.vhost("none"), caller) == []
    assert len(observers_for(config.vhost("all"), caller)) == 1
    with pytest.raises(ConfigError, match="vhost e signed_url: the environment variable TC_KEY"):
        gates_for(parse_text("listen 1;vhost e{signed_url{enabled on;secret_env TC_KEY;}}").vhost("e"), caller, env={})


# ---------------------------------------------------------------- security


def rules(*items: str) -> Security:
    return Security(True, [SecurityRule(*item.split()) for item in items])


def verdict(settings: Security, method: str, ip: str) -> int:
    refusal = security_check(settings, method, ip)
    return 0 if refusal is None else refusal.code


def test_security_off_admits_and_on_without_rules_refuses_all() -> None:
    assert verdict(Security(False, []), "publish", "1.2.3.4") == 0
    assert verdict(Security(False, [SecurityRule("deny", "publish", "all")]), "publish", "1.2.3.4") == 0
    assert verdict(Security(True, []), "play", "1.2.3.4") == 1054


def test_security_deny_rules_come_first_whatever_the_order() -> None:
    settings = rules("allow publish all", "deny publish 10.0.0.0/8", "deny publish 192.168.1.7")
    assert verdict(settings, "publish", "10.1.2.3") == 1053
    assert verdict(settings, "publish", "192.168.1.7") == 1053
    assert verdict(settings, "publish", "192.168.1.8") == 0
    refusal = security_check(settings, "publish", "10.1.2.3")
    assert refusal is not None and refusal.reason == "security: publish from 10.1.2.3 denied by rule 10.0.0.0/8"


def test_security_allow_rules_make_everyone_else_refused() -> None:
    settings = rules("allow publish 127.0.0.1", "allow play all")
    assert verdict(settings, "publish", "127.0.0.1") == 0
    assert verdict(settings, "publish", "127.0.0.2") == 1054
    assert verdict(settings, "play", "8.8.8.8") == 0
    # An allow rule for play alone still refuses every publish (SRS counts allow rules of any method).
    assert verdict(rules("allow play all"), "publish", "127.0.0.1") == 1054
    # Deny rules alone: whoever is not denied is admitted.
    only_deny = rules("deny play 10.0.0.0/8")
    assert verdict(only_deny, "play", "10.9.9.9") == 1053
    assert verdict(only_deny, "play", "11.0.0.1") == 0 and verdict(only_deny, "publish", "10.9.9.9") == 0


def test_security_networks_ipv6_and_mapped_addresses() -> None:
    settings = rules("allow play 10.0.0.1/8", "allow play fd00::/8", "deny play fd00::bad")
    assert verdict(settings, "play", "10.200.0.1") == 0  # host bits in the rule are ignored, as SRS masks both
    assert verdict(settings, "play", "::ffff:10.0.0.5") == 0  # an IPv4 client on a dual-stack socket
    assert verdict(settings, "play", "fd00::1") == 0
    assert verdict(settings, "play", "fd00:0:0::bad") == 1053  # same address, other spelling
    assert verdict(settings, "play", "11.0.0.1") == 1054 and verdict(settings, "play", "not-an-ip") == 1054


def test_security_gate_ignores_connect() -> None:
    from tidecast.access.security import SecurityGate

    gate = SecurityGate(Security(True, []))
    assert asyncio.run(gate.check(request("connect"))) is None
    refused = asyncio.run(gate.check(request("play")))
    assert refused is not None and refused.code == 1054


# ---------------------------------------------------------------- refer


def test_refer_matches_the_end_of_the_page_host() -> None:
    settings = Refer(True, all=["github.com"], play=["github.io"], publish=None)
    connect = request("connect", page_url="https://www.github.com:443/ossrs/srs")
    assert refer_check(settings, connect) is None
    refused = refer_check(settings, request("connect", page_url="http://evil.example/github.com"))
    assert refused is not None and refused.code == 2015
    assert refused.reason == "refer: page evil.example is not allowed to connect"
    # RTMP play: only the play list (all was checked at connect).
    assert refer_check(settings, request("play", page_url="http://ossrs.github.io/x")) is None
    assert refer_check(settings, request("play", page_url="http://github.com/x")) is not None
    # No publish list: publishing is not refer-checked.
    assert refer_check(settings, request("publish", page_url="")) is None
    # HTTP has no connect: an HTTP play must pass both lists.
    both = Refer(True, all=["github.io"], play=["ossrs.github.io"])
    assert refer_check(both, request("play", page_url="http://ossrs.github.io/", protocol="flv")) is None
    assert refer_check(both, request("play", page_url="http://x.github.io/", protocol="flv")) is not None
    assert refer_check(Refer(False, all=["a.com"]), request("connect", page_url="http://b.com/")) is None


# ---------------------------------------------------------------- signed URLs


def signed_param(action: str = "play", ttl: int = 60, ip: str = "", stream: str = "cam1", now: float = 0) -> str:
    return "?" + sign_query(SECRET, action, "live", stream, int(now or time.time()) + ttl, ip)


def why(param: str, action: str = "play", ip: str = "127.0.0.1", stream: str = "cam1", now: float | None = None) -> str:
    return verify(SECRET, action, "__defaultVhost__", "live", stream, param, ip, now) or ""


def test_signed_url_valid() -> None:
    assert why(signed_param()) == ""
    assert why(signed_param("publish"), "publish") == ""
    assert why(signed_param(ip="10.1.2.3"), ip="10.1.2.3") == ""
    assert why(signed_param() + "&token=abc") == ""  # other parameters are left alone
    gate = SignedUrlGate(SignedUrl(True, "k", "", publish=True, play=False), SECRET)
    assert gate.verdict(request("play")) is None  # play off: not required
    assert gate.verdict(request("connect")) is None
    refused = gate.verdict(request("publish"))
    assert refused is not None and refused.code == 1052
    assert refused.reason == "signed URL required: add ?expires=…&sign=… (see tidecast sign)"


def test_signed_url_expired() -> None:
    param = signed_param(ttl=10)
    assert why(param, now=time.time() + 5) == ""
    assert why(param, now=time.time() + 75) == "signed URL expired 65 s ago"


def test_signed_url_tampered() -> None:
    param = signed_param()
    tampered = "signed URL does not match this play of live/{} (tampered, or signed for another)"
    assert why(param, stream="cam2") == tampered.format("cam2")  # moved to another stream
    assert why(param, "publish") == tampered.format("cam1").replace("play", "publish")  # a play URL to publish
    expires = param.split("expires=")[1].split("&")[0]
    assert why(param.replace(expires, str(int(expires) + 3600))) == tampered.format("cam1")  # extended
    assert why(param[:-2] + ("AA" if not param.endswith("AA") else "BB")) == tampered.format("cam1")
    bound = signed_param(ip="10.1.2.3")
    assert why(bound.replace("&ip=10.1.2.3", ""), ip="10.1.2.3") == tampered.format("cam1")  # binding removed
    other = "?" + sign_query(b"another secret", "play", "live", "cam1", int(time.time()) + 60)
    assert why(other) == tampered.format("cam1")
    assert why("?expires=soon&sign=x") == "signed URL has a malformed expires"
    # Fields are length-prefixed: a newline in a name cannot shift bytes from one field to the next.
    odd = "?" + sign_query(SECRET, "play", "live", "a\nb", int(time.time()) + 60)
    assert verify(SECRET, "play", "__defaultVhost__", "live\na", "b", odd, "127.0.0.1") is not None
    assert verify(SECRET, "play", "__defaultVhost__", "live", "a\nb", odd, "127.0.0.1") is None
    # A second sign= cannot override the first.
    assert why(param.replace("sign=", "sign=AAAA&sign=")) == tampered.format("cam1")


def test_signed_url_wrong_ip() -> None:
    param = signed_param(ip="10.1.2.3")
    assert why(param, ip="10.1.2.4") == "signed URL is bound to another client address"
    assert why(param, ip="::ffff:10.1.2.3") == ""  # the same client through a dual-stack listener
    assert why(signed_param(ip="2001:db8::1"), ip="2001:db8:0:0::1") == ""
    # Tampering is reported as such even for a bound URL, so a forger learns nothing about the binding.
    assert why(param.replace("ip=10.1.2.3", "ip=10.1.2.4"), ip="10.1.2.4").startswith("signed URL does not match")


def test_signed_url_helpers() -> None:
    url = signed_url("rtmp://live.example.com/", SECRET, "publish", "live", "cam1", ttl=30, now=1_700_000_000)
    parts = urlsplit(url)
    assert parts.scheme == "rtmp" and parts.netloc == "live.example.com" and parts.path == "/live/cam1"
    assert parts.query.startswith("expires=1700000030&sign=")
    assert why("?" + parts.query, "publish", now=1_700_000_010) == ""
    assert strip_signature("?token=a&expires=1&ip=2&sign=3&x=y") == "?token=a&x=y"
    assert strip_signature("?expires=1&sign=3") == ""


# ---------------------------------------------------------------- tidecast sign


def run_sign(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidecast", "sign", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_tidecast_sign_prints_urls_that_verify(tmp_path: Path) -> None:
    key = tmp_path / "sign.key"
    key.write_bytes(SECRET + b"\n")
    out = run_sign("--secret-file", str(key), "--publish", "--app", "live", "--stream", "cam1", "--ttl", "120")
    assert out.returncode == 0, out.stderr
    url = urlsplit(out.stdout.strip())
    assert (url.scheme, url.netloc, url.path) == ("rtmp", "127.0.0.1", "/live/cam1")
    assert why("?" + url.query, "publish") == ""
    expires = int(url.query.split("expires=")[1].split("&")[0])
    assert 110 <= expires - time.time() <= 121

    out = run_sign(
        "--secret-env", "TC_SIGN", "--play", "--app", "live", "--stream", "cam1", "--ip", "10.0.0.9",
        "--base", "http://cdn.example.com:8080", env={"TC_SIGN": SECRET.decode()},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    url = urlsplit(out.stdout.strip())
    assert url.path == "/live/cam1.flv" and "ip=10.0.0.9" in url.query
    assert why("?" + url.query, ip="10.0.0.9") == ""
    assert why("?" + url.query, ip="10.0.0.8") == "signed URL is bound to another client address"

    out = run_sign("--secret-file", str(key), "--play", "--app", "live", "--stream", "cam1", "--suffix", ".m3u8",
                   "--base", "https://cdn.example.com")  # fmt: skip
    url = urlsplit(out.stdout.strip())
    assert out.returncode == 0 and url.path == "/live/cam1.m3u8" and why("?" + url.query) == ""
    out = run_sign("--secret-file", str(key), "--play", "--app", "live", "--stream", "cam1", "--query")
    assert out.returncode == 0 and out.stdout.startswith("?expires=") and why(out.stdout.strip()) == ""

    out = run_sign("--secret-env", "TC_SIGN", "--play", "--app", "live", "--stream", "cam1", "--query", env={})
    assert out.returncode == 1 and "the environment variable TC_SIGN (secret_env) is not set" in out.stderr
    assert SECRET.decode() not in out.stderr
    out = run_sign("--secret-file", str(key), "--app", "live", "--stream", "cam1")
    assert out.returncode == 2 and "one of the arguments --publish --play is required" in out.stderr


fields = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from(["publish", "play"]),
    stream=fields,
    other_stream=fields,
    ip=st.sampled_from(["", "10.0.0.1", "::1"]),
    ttl=st.integers(1, 10**6),
)
def test_signed_url_property_only_the_signed_request_passes(
    action: str, stream: str, other_stream: str, ip: str, ttl: int
) -> None:
    now = 1_700_000_000
    param = "?" + sign_query(SECRET, action, "live", stream, now + ttl, ip)
    peer = ip or "127.0.0.1"
    assert verify(SECRET, action, "__defaultVhost__", "live", stream, param, peer, now) is None
    other_action = "play" if action == "publish" else "publish"
    assert verify(SECRET, other_action, "__defaultVhost__", "live", stream, param, peer, now) is not None
    assert verify(SECRET, action, "v2", "live", stream, param, peer, now) is not None
    assert verify(SECRET, action, "__defaultVhost__", "live", stream, param, peer, now + ttl + 1) is not None
    if other_stream != stream:
        assert verify(SECRET, action, "__defaultVhost__", "live", other_stream, param, peer, now) is not None


def test_observer_outside_a_loop_drops_and_never_raises() -> None:
    from tidecast.access.hooks import HookObserver
    from tidecast.config import HttpHooks

    caller = HookCaller()
    observer = HookObserver(caller, HttpHooks(enabled=True, on_stop=["http://127.0.0.1:9/x"]))
    observer.on_event("stop", request())  # no running loop: counted as dropped, not raised
    assert caller.calls == {("on_stop", "dropped"): 1}
