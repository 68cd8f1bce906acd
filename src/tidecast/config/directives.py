"""Which directives exist where, how each value is read, and which SRS ones are only tolerated.

One table drives the file, the environment overrides and `config check`'s dump,
so a directive cannot be known to one and not the others.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tidecast.config.model import (
    ApiAuth,
    Cluster,
    Config,
    Dvr,
    Engine,
    Exec,
    Exporter,
    Forward,
    Hls,
    HttpApi,
    HttpHooks,
    HttpRemux,
    HttpServer,
    Ingest,
    IngestInput,
    Listen,
    Play,
    Publish,
    RawApi,
    Refer,
    Security,
    SecurityRule,
    SignedUrl,
    Transcode,
    Vhost,
)
from tidecast.config.parser import ConfigError, Directive

Reader = Callable[[Directive, str], Any]


def _where(d: Directive) -> str:
    return d.file if d.line == 0 else d.where


def _bad(d: Directive, context: str, expected: str) -> ConfigError:
    value = " ".join(d.args)
    return ConfigError(f'{_where(d)}: bad value "{value}" for {d.name} (in {context}): expected {expected}')


def _single(d: Directive, context: str, expected: str) -> str:
    if len(d.args) != 1:
        raise _bad(d, context, expected)
    return d.args[0]


_TRUE = {"on", "true", "yes", "1", "enabled"}
_FALSE = {"off", "false", "no", "0", "disabled"}


def flag(d: Directive, context: str) -> bool:
    value = _single(d, context, "on or off").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(d, context, "on or off")


# Plain ASCII decimals only: Python's int()/float() would also take "1_000",
# "inf", "nan" and non-Latin digits, none of which SRS reads the same way; and
# the length cap keeps int() clear of its limit on huge digit strings.
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?")
_PORT = re.compile(r"[0-9]{1,5}")


def integer(lo: int, hi: int, unit: str = "") -> Reader:
    def read(d: Directive, context: str) -> int:
        expected = f"an integer{' ' + unit if unit else ''} from {lo} to {hi}"
        raw = _single(d, context, expected)
        if not _INTEGER.fullmatch(raw) or not lo <= int(raw) <= hi:
            raise _bad(d, context, expected)
        return int(raw)

    return read


def number(lo: float, hi: float, unit: str) -> Reader:
    def read(d: Directive, context: str) -> float:
        expected = f"a number of {unit} from {lo:g} to {hi:g}, e.g. 10"
        raw = _single(d, context, expected)
        if not _NUMBER.fullmatch(raw) or not lo <= float(raw) <= hi:
            raise _bad(d, context, expected)
        return float(raw)

    return read


def text(d: Directive, context: str) -> str:
    expected = "one value (quote it if it has spaces)"
    value = _single(d, context, expected)
    if "\n" in value:  # only the environment can carry one; no config could write it back
        raise _bad(d, context, expected + " on one line")
    return value


def choice(*options: str) -> Reader:
    def read(d: Directive, context: str) -> str:
        value = _single(d, context, " or ".join(options))
        if value not in options:
            raise _bad(d, context, " or ".join(options))
        return value

    return read


def workers(d: Directive, context: str) -> int | str:
    """`workers N` or `workers auto` (tidecast: how many processes share the listening ports)."""
    expected = "auto or an integer from 1 to 256"
    raw = _single(d, context, expected)
    if raw == "auto":
        return raw
    if not _INTEGER.fullmatch(raw) or not 1 <= int(raw) <= 256:
        raise _bad(d, context, expected)
    return int(raw)


def words(d: Directive, context: str) -> list[str]:
    return list(d.args)


def parse_listen(value: str) -> Listen:
    """`1935`, `127.0.0.1:1935`, `[::]:1935` or `0.0.0.0:1935`."""
    host, port = "0.0.0.0", value
    if value.startswith("["):
        inner, _, rest = value[1:].partition("]")
        host, port = inner, rest.lstrip(":")
    elif ":" in value:
        host, _, port = value.rpartition(":")
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536 or not host:
        raise ValueError(value)
    return Listen(host, int(port))


def one_listen(d: Directive, context: str) -> Listen:
    expected = "a port or host:port, e.g. 1985 or 127.0.0.1:1985"
    try:
        return parse_listen(_single(d, context, expected))
    except ValueError:
        raise _bad(d, context, expected) from None


def listens(d: Directive, context: str) -> list[Listen]:
    expected = "one or more ports or host:port, e.g. 1935 or 127.0.0.1:1935"
    if not d.args:
        raise _bad(d, context, expected)
    try:
        return [parse_listen(arg) for arg in d.args]
    except ValueError:
        raise _bad(d, context, expected) from None


def optional_text(d: Directive, context: str) -> str | None:
    return _single(d, context, "one NAME:PORT, e.g. socs:1985")


def urls(d: Directive, context: str) -> list[str]:
    expected = "one or more http:// or https:// URLs, called in turn"
    if not d.args:
        raise _bad(d, context, expected)
    for arg in d.args:
        scheme, sep, rest = arg.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
            raise _bad(d, context, expected)
    return list(d.args)


def domains(d: Directive, context: str) -> list[str]:
    # SRS reads an empty list as "refuse everyone"; an explicit value is asked
    # for instead, so that a dump cannot turn it into "no list, allow all".
    if not d.args or any(not arg or "/" in arg for arg in d.args):
        raise _bad(d, context, "one or more domains, e.g. github.com github.io")
    return list(d.args)


def security_rule(d: Directive, context: str) -> SecurityRule:
    expected = "publish or play, then all, an IP address or a network, e.g. allow play 10.0.0.0/8"
    if len(d.args) != 2 or d.args[0] not in ("publish", "play"):
        raise _bad(d, context, expected)
    target = d.args[1]
    if target != "all":
        try:
            ipaddress.ip_network(target, strict=False)
        except ValueError:
            raise _bad(d, context, expected) from None
    return SecurityRule(d.name, d.args[0], target)


def secret_file(d: Directive, context: str) -> str:
    path = text(d, context)
    if not path:
        return path
    # Read now so a missing secret fails the load (or the reload) with its
    # location instead of refusing every client later; the value is not kept.
    try:
        with open(path, "rb") as f:
            empty = not f.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"{_where(d)}: cannot read the secret file {path} for {d.name} (in {context}): {exc.strerror}"
        ) from None
    if empty:
        raise ConfigError(f"{_where(d)}: the secret file {path} for {d.name} (in {context}) is empty")
    return path


def env_name(d: Directive, context: str) -> str:
    name = text(d, context)
    if name and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise _bad(d, context, "an environment variable name, e.g. TIDECAST_SIGN_SECRET")
    return name


# Readers that take a list; every other one takes a single value, so an
# environment variable's whole value is one argument (a dir may hold spaces).
MULTI_VALUE: frozenset[Reader] = frozenset({words, listens, urls, domains})


# ---------------------------------------------------------------- the table


# A value in srs.conf syntax (quoted when needed), for dumping; see config.dump.
Formatter = Callable[[Any], str | None]


@dataclass(frozen=True)
class Special:
    """A directive the value/block table cannot express: one that repeats (`exec publish`,
    `ingest NAME {}`, `engine NAME {}`), or a block of free-form options (`vparams {}`).

    `read(d, context, unsupported)` builds the value; with `repeat` every occurrence
    is appended to the attribute's list, otherwise the first one wins as usual.
    `dump(value, name, indent, fmt)` writes it back in srs.conf syntax.
    """

    read: Callable[[Directive, str, list[str]], Any]
    dump: Callable[[Any, str, str, Formatter], list[str]]
    repeat: bool = False


@dataclass
class Block:
    """A block's directives: value readers, nested blocks, and SRS names only tolerated."""

    factory: Callable[[], Any]
    values: dict[str, Reader] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    tolerated: frozenset[str] = frozenset()
    special: dict[str, Special] = field(default_factory=dict)
    # Directives that may repeat (security's allow/deny): each one read is
    # appended, in file order, to the block's `rules`; items have `words()`.
    repeated: dict[str, Reader] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return sorted({*self.values, *self.blocks, *self.special, *self.repeated})


RAW_API = Block(RawApi, {"enabled": flag, "allow_reload": flag, "allow_query": flag, "allow_update": flag})
AUTH = Block(ApiAuth, {"enabled": flag, "username": text, "password": text})
HTTP_API = Block(
    HttpApi,
    {"enabled": flag, "listen": one_listen, "crossdomain": flag},
    {"raw_api": RAW_API, "auth": AUTH},
    frozenset({"https", "device_id"}),
)
HTTP_SERVER = Block(
    HttpServer, {"enabled": flag, "listen": one_listen, "dir": text, "crossdomain": flag}, {}, frozenset({"https"})
)
EXPORTER = Block(Exporter, {"enabled": flag, "listen": one_listen, "label": text, "tag": text})
CLUSTER = Block(
    Cluster,
    {
        "mode": choice("local", "remote"),
        "origin": words,
        "token_traverse": flag,
        "vhost": text,
        "protocol": choice("rtmp", "flv", "flvs"),
        "origin_cluster": flag,
        "coworkers": words,
        "coworkers_dns": optional_text,
        "debug_srs_upnode": flag,
        "hls_fetch": flag,
        "hls_fetch_port": integer(1, 65535),
        "hls_fetch_cache": integer(1024 * 1024, 1 << 40, "of bytes"),
    },
    {},
    frozenset({"follow_client"}),
)
HTTP_REMUX = Block(
    HttpRemux,
    {"enabled": flag, "mount": text, "has_audio": flag, "has_video": flag, "guess_has_av": flag},
    {},
    frozenset({"fast_cache", "drop_if_not_match", "hstrs"}),
)
HLS = Block(
    Hls,
    {
        "enabled": flag,
        "hls_fragment": number(0.1, 3600, "seconds"),
        "hls_td_ratio": number(1.0, 100, "times"),
        "hls_aof_ratio": number(1.0, 100, "times"),
        "hls_window": number(0.1, 86400, "seconds"),
        "hls_path": text,
        "hls_m3u8_file": text,
        "hls_ts_file": text,
        "hls_entry_prefix": text,
        "hls_cleanup": flag,
        "hls_dispose": number(0, 86400 * 7, "seconds"),
        "hls_wait_keyframe": flag,
        "hls_variant": choice("mpegts", "fmp4", "lowlatency"),
        "hls_part": number(0.05, 10, "seconds"),
    },
    {},
    frozenset(
        {
            "hls_acodec",
            "hls_vcodec",
            "hls_dts_directly",
            "hls_ctx",
            "hls_ts_ctx",
            "hls_keys",
            "hls_fragments_per_key",
            "hls_key_file",
            "hls_key_file_path",
            "hls_key_url",
            "hls_on_error",
            "hls_nb_notify",
            "hls_storage",
            "hls_mount",
            "hls_use_fmp4",
            "hls_fmp4_file",
            "hls_init_file",
            "hls_recover",
            "hls_ts_floor",
        }
    ),
)
DVR = Block(
    Dvr,
    {
        "enabled": flag,
        "dvr_apply": words,
        "dvr_plan": choice("session", "segment", "append"),
        "dvr_path": text,
        "dvr_duration": number(0, 86400, "seconds"),
        "dvr_wait_keyframe": flag,
        "time_jitter": choice("full", "zero", "off"),
        "dvr_mp4_faststart": flag,
    },
)
PLAY = Block(
    Play,
    {
        "gop_cache": flag,
        "gop_cache_max_frames": integer(0, 1_000_000),
        "queue_length": number(0.1, 3600, "seconds"),
        "mw_latency": integer(0, 10_000, "of milliseconds"),
        "mw_msgs": integer(0, 128),
        "time_jitter": choice("full", "zero", "off"),
        "atc": flag,
        "mix_correct": flag,
    },
    {},
    frozenset({"atc_auto", "reduce_sequence_header", "send_min_interval"}),
)
PUBLISH = Block(
    Publish,
    {
        "firstpkt_timeout": integer(100, 3_600_000, "of milliseconds"),
        "normal_timeout": integer(100, 3_600_000, "of milliseconds"),
        "mr": flag,
        "mr_latency": integer(0, 10_000, "of milliseconds"),
        "parse_sps": flag,
    },
    {},
    frozenset({"try_annexb_first", "kickoff_for_idle"}),
)

_HOOKS = ("on_connect", "on_close", "on_publish", "on_unpublish", "on_play", "on_stop", "on_dvr", "on_hls")
HTTP_HOOKS = Block(
    HttpHooks,
    {
        "enabled": flag,
        **{name: urls for name in _HOOKS},
        "on_hls_notify": urls,
        "timeout": number(0.1, 3600, "seconds"),
    },
)
SECURITY = Block(Security, {"enabled": flag}, repeated={"allow": security_rule, "deny": security_rule})
REFER = Block(Refer, {"enabled": flag, "all": domains, "publish": domains, "play": domains})
SIGNED_URL = Block(
    SignedUrl,
    {"enabled": flag, "secret_file": secret_file, "secret_env": env_name, "publish": flag, "play": flag},
)

# Whole SRS features tidecast does not implement: their blocks load and are ignored.
UNSUPPORTED_VHOST = frozenset(
    {
        "bandcheck",
        "http_static",
        "http",
        "hds",
        "dash",
        "rtc",
        "srt",
        "nack",
        "twcc",
        "edge",
        "in_ack_size",
        "out_ack_size",
    }
)

# Older SRS releases wrote these directly in the vhost. SRS 3+ reads them as if
# they were written in the block that holds them now, and so does tidecast, so
# an old config keeps its meaning instead of silently losing it. A value set in
# the block itself wins over the old spelling.
LEGACY_VHOST: dict[str, tuple[str, str]] = {
    "gop_cache": ("play", "gop_cache"),
    "gop_cache_max_frames": ("play", "gop_cache_max_frames"),
    "queue_length": ("play", "queue_length"),
    "time_jitter": ("play", "time_jitter"),
    "mix_correct": ("play", "mix_correct"),
    "atc": ("play", "atc"),
    "atc_auto": ("play", "atc_auto"),
    "mw_latency": ("play", "mw_latency"),
    "mw_msgs": ("play", "mw_msgs"),
    "send_min_interval": ("play", "send_min_interval"),
    "reduce_sequence_header": ("play", "reduce_sequence_header"),
    "mr": ("publish", "mr"),
    "mr_latency": ("publish", "mr_latency"),
    "publish_1stpkt_timeout": ("publish", "firstpkt_timeout"),
    "publish_normal_timeout": ("publish", "normal_timeout"),
    "mode": ("cluster", "mode"),
    "origin": ("cluster", "origin"),
    "token_traverse": ("cluster", "token_traverse"),
    "vhost": ("cluster", "vhost"),
    "debug_srs_upnode": ("cluster", "debug_srs_upnode"),
}
# SRS 2's `mr { enabled; latency; }` in the vhost is publish's mr and mr_latency.
LEGACY_VHOST_FLATTEN: dict[str, tuple[str, dict[str, str]]] = {
    "mr": ("publish", {"enabled": "mr", "latency": "mr_latency"}),
}
# SRS 1's name for http_server.
LEGACY_ROOT_BLOCKS = {"http_stream": "http_server"}


def lift_legacy(
    children: list[Directive],
    values: dict[str, tuple[str, str]] | None = None,
    flatten: dict[str, tuple[str, dict[str, str]]] | None = None,
    renames: dict[str, str] | None = None,
) -> list[Directive]:
    """`children` with old spellings rewritten: a value moved into its block, a
    block's values moved into another block, a block renamed. Each lands after
    the current spelling, so the current one wins (the first duplicate does)."""
    values, flatten, renames = values or {}, flatten or {}, renames or {}
    out: list[Directive] = []
    moved: dict[str, list[Directive]] = {}
    renamed: list[Directive] = []
    for d in children:
        if d.name in values and not d.block:
            block, name = values[d.name]
            moved.setdefault(block, []).append(replace(d, name=name))
        elif d.name in flatten and d.block:
            block, names = flatten[d.name]
            moved.setdefault(block, []).extend(replace(c, name=names.get(c.name, c.name)) for c in d.children)
        elif d.name in renames and d.block:
            renamed.append(replace(d, name=renames[d.name]))
        else:
            out.append(d)
    for block, items in moved.items():
        if not items:
            continue
        index = next((i for i, d in enumerate(out) if d.name == block and d.block), None)
        if index is None:
            out.append(Directive(block, [], items, items[0].file, items[0].line, block=True))
        else:
            out[index] = replace(out[index], children=[*out[index].children, *items])
    return out + renamed


# SRS 1/2's `refer a.com;`, `refer_play …;`, `refer_publish …;` in the vhost:
# SRS 3+ reads them as a refer block that they switch on.
LEGACY_REFER = {"refer": "all", "refer_play": "play", "refer_publish": "publish"}


def _lift_legacy_refer(children: list[Directive]) -> list[Directive]:
    old = [d for d in children if d.name in LEGACY_REFER and not d.block]
    if not old:
        return children
    moved = [Directive("enabled", ["on"], [], old[0].file, old[0].line)]
    moved += [replace(d, name=LEGACY_REFER[d.name]) for d in old]
    out = [d for d in children if not (d.name in LEGACY_REFER and not d.block)]
    index = next((i for i, d in enumerate(out) if d.name == "refer" and d.block), None)
    if index is None:
        out.append(Directive("refer", [], moved, old[0].file, old[0].line, block=True))
    else:
        out[index] = replace(out[index], children=[*out[index].children, *moved])
    return out


def lift_legacy_vhost(children: list[Directive]) -> list[Directive]:
    children = _lift_legacy_refer(children)
    return lift_legacy(lift_legacy_forward(children), values=LEGACY_VHOST, flatten=LEGACY_VHOST_FLATTEN)


def lift_legacy_root(children: list[Directive]) -> list[Directive]:
    return lift_legacy(children, renames=LEGACY_ROOT_BLOCKS)


UNSUPPORTED_GLOBAL = frozenset(
    {
        "rtc_server",
        "srt_server",
        "stats",
        "heartbeat",
        "stream_caster",
        "ff_log_dir",
        "ff_log_level",
        "utc_time",
        "work_dir",
        "asprocess",
        "query_latest_version",
        "first_wait_for_qlv",
        "circuit_breaker",
        "tencentcloud_cls",
        "tencentcloud_apm",
        "exec",
        "threads",
        "pithy_print_ms",
        "tcmalloc_release_rate",
        "srs_log_flush",
        "hybrids",
        "api_server",
        "rtsp_server",
        "gb28181",
        "auto_reload_for_docker_timeout",
        "server_id",
        "is_full",
        "srs_log_level_v2",
    }
)

# ---------------------------------------------------------------- relays: forward, exec, transcode, ingest


def _sub_context(context: str, d: Directive) -> str:
    label = " ".join([d.name, *d.args])
    return label if context == "the top level" else f"{context} {label}"


def _block_of(d: Directive, what: str) -> None:
    if not d.block:
        raise ConfigError(f'{d.where}: "{d.name}" is a block; write {what} {{ ... }}')


def _read_options(d: Directive, context: str, unsupported: list[str]) -> list[tuple[str, str]]:
    """`vparams { t 100; coder 1; }`: free-form ffmpeg options, each `-name [value]`."""
    _block_of(d, d.name)
    options: list[tuple[str, str]] = []
    for c in d.children:
        if c.block or len(c.args) > 1:
            raise ConfigError(
                f'{c.where}: bad option "{c.name}" in {context} {d.name}: '
                "expected NAME [VALUE]; (one ffmpeg option and at most one value)"
            )
        options.append((c.name, c.arg(0)))
    return options


def _dump_options(value: list[tuple[str, str]], name: str, indent: str, fmt: Formatter) -> list[str]:
    out = [f"{indent}{name} {{"]
    for option, arg in value:
        formatted = fmt(arg) if arg else None
        out.append(f"{indent}    {fmt(option)}{' ' + formatted if formatted else ''};")
    return [*out, f"{indent}}}"]


_OPTIONS = Special(_read_options, _dump_options)

ENGINE = Block(
    Engine,
    {
        "enabled": flag,
        "iformat": text,
        "vcodec": text,
        "vbitrate": integer(0, 10_000_000, "of kbps"),
        "vfps": number(0, 1000, "frames per second"),
        "vwidth": integer(0, 65536, "of pixels"),
        "vheight": integer(0, 65536, "of pixels"),
        "vthreads": integer(0, 1024),
        "vprofile": text,
        "vpreset": text,
        "acodec": text,
        "abitrate": integer(0, 10_000_000, "of kbps"),
        "asample_rate": integer(0, 768_000, "of Hz"),
        "achannels": integer(0, 2),
        "oformat": text,
        "output": text,
    },
    {},
    frozenset(),
    {"perfile": _OPTIONS, "vfilter": _OPTIONS, "vparams": _OPTIONS, "aparams": _OPTIONS},
)


def _read_engine(d: Directive, context: str, unsupported: list[str]) -> Engine:
    _block_of(d, "engine [NAME]")
    if len(d.args) > 1:
        raise ConfigError(f"{d.where}: engine takes at most one name: engine NAME {{ ... }} (in {context})")
    engine = Engine(name=d.arg(0))
    bind(engine, d.children, ENGINE, _sub_context(context, d), unsupported)
    return engine


def _dump_named(block: Block, attr: str) -> Callable[[Any, str, str, Formatter], list[str]]:
    def dump(value: Any, name: str, indent: str, fmt: Formatter) -> list[str]:
        label = getattr(value, attr)
        out = [f"{indent}{name}{' ' + str(fmt(label)) if label else ''} {{"]
        dump_block(value, block, indent + "    ", out, fmt)
        return [*out, f"{indent}}}"]

    return dump


_ENGINES = Special(_read_engine, _dump_named(ENGINE, "name"), repeat=True)

FORWARD = Block(Forward, {"enabled": flag, "destination": words, "backend": text})


def _read_command(d: Directive, context: str, unsupported: list[str]) -> list[str]:
    if d.block or not d.args:
        raise ConfigError(f"{d.where}: {d.name} needs a command line: {d.name} PROGRAM ARGS...; (in {context})")
    return list(d.args)


def _dump_command(value: list[str], name: str, indent: str, fmt: Formatter) -> list[str]:
    return [f"{indent}{name} {' '.join(str(fmt(a)) for a in value)};"]


EXEC = Block(Exec, {"enabled": flag}, {}, frozenset(), {"publish": Special(_read_command, _dump_command, repeat=True)})

TRANSCODE = Block(Transcode, {"enabled": flag, "ffmpeg": text}, {}, frozenset(), {"engine": _ENGINES})


def _read_transcode(d: Directive, context: str, unsupported: list[str]) -> Transcode:
    _block_of(d, "transcode [APP[/STREAM]]")
    if len(d.args) > 1:
        raise ConfigError(
            f"{d.where}: transcode takes at most one scope: transcode [APP or APP/STREAM] {{ ... }} (in {context})"
        )
    transcode = Transcode(scope=d.arg(0).strip("/"), where=d.where)
    bind(transcode, d.children, TRANSCODE, _sub_context(context, d), unsupported)
    return transcode


INGEST_INPUT = Block(IngestInput, {"type": choice("file", "stream"), "url": text})
INGEST = Block(Ingest, {"enabled": flag, "ffmpeg": text}, {"input": INGEST_INPUT}, frozenset(), {"engine": _ENGINES})


def _read_ingest(d: Directive, context: str, unsupported: list[str]) -> Ingest:
    _block_of(d, "ingest NAME")
    if len(d.args) != 1:
        raise ConfigError(f"{d.where}: ingest needs exactly one name: ingest NAME {{ ... }} (in {context})")
    ingest = Ingest(name=d.args[0], where=d.where)
    bind(ingest, d.children, INGEST, _sub_context(context, d), unsupported)
    return ingest


RELAY_SPECIAL = {
    "transcode": Special(_read_transcode, _dump_named(TRANSCODE, "scope"), repeat=True),
    "ingest": Special(_read_ingest, _dump_named(INGEST, "name"), repeat=True),
}
RELAY_BLOCKS = {"forward": FORWARD, "exec": EXEC}


def lift_legacy_forward(children: list[Directive]) -> list[Directive]:
    """SRS 2's `forward HOST:PORT …;` in the vhost is `forward { enabled on; destination …; }`."""
    out: list[Directive] = []
    for d in children:
        if d.name == "forward" and not d.block:
            inner = [Directive("enabled", ["on"], [], d.file, d.line), replace(d, name="destination")]
            d = Directive("forward", [], inner, d.file, d.line, block=True)
        out.append(d)
    return out


VHOST = Block(
    Vhost,
    {"enabled": flag, "chunk_size": integer(128, 65536), "min_latency": flag, "tcp_nodelay": flag},
    {
        "cluster": CLUSTER,
        "http_remux": HTTP_REMUX,
        "hls": HLS,
        "dvr": DVR,
        "play": PLAY,
        "publish": PUBLISH,
        **RELAY_BLOCKS,
        "http_hooks": HTTP_HOOKS,
        "security": SECURITY,
        "refer": REFER,
        "signed_url": SIGNED_URL,
    },
    UNSUPPORTED_VHOST,
    RELAY_SPECIAL,
)
ROOT = Block(
    Config,
    {
        "listen": listens,
        "max_connections": integer(1, 1_000_000),
        "workers": workers,
        "pid": text,
        "daemon": flag,
        "disable_daemon_for_docker": flag,
        "in_docker": flag,
        "srs_log_tank": choice("console", "file"),
        "srs_log_level": choice("verbose", "info", "trace", "warn", "error"),
        "srs_log_file": text,
        "log_format": choice("text", "json"),
        "chunk_size": integer(128, 65536),
        "empty_ip_ok": flag,
        "handshake_timeout": integer(100, 3_600_000, "of milliseconds"),
        "grace_start_wait": integer(0, 3_600_000, "of milliseconds"),
        "grace_final_wait": integer(0, 3_600_000, "of milliseconds"),
        "force_grace_quit": flag,
        "grace_drain_timeout": integer(0, 86_400_000, "of milliseconds"),
        "grace_drain_pace": integer(0, 1_000_000, "of players per second"),
        "inotify_auto_reload": flag,
        "auto_reload_for_docker": flag,
    },
    {"http_api": HTTP_API, "http_server": HTTP_SERVER, "exporter": EXPORTER},
    UNSUPPORTED_GLOBAL,
)

TIDECAST_EXTENSIONS = (
    "workers",
    "log_format",
    "handshake_timeout",
    "grace_drain_timeout",
    "grace_drain_pace",
    "cluster.coworkers_dns",
    "cluster.hls_fetch",
    "cluster.hls_fetch_port",
    "cluster.hls_fetch_cache",
    "dvr.dvr_mp4_faststart",
    "http_hooks.timeout",
    "signed_url",
)


# ---------------------------------------------------------------- binding


def bind(target: Any, children: list[Directive], block: Block, context: str, unsupported: list[str]) -> None:
    """Read `children` into `target`; the first of duplicate directives wins, as in SRS."""
    seen: set[str] = set()
    for d in children:
        name = d.name
        if name in block.tolerated:
            unsupported.append(f"{d.where} {name}" + ("" if context == "the top level" else f" (in {context})"))
            continue
        special = block.special.get(name)
        if special is not None:
            if special.repeat:
                getattr(target, name).append(special.read(d, context, unsupported))
            elif name not in seen:
                seen.add(name)
                setattr(target, name, special.read(d, context, unsupported))
            continue
        if name in block.repeated:
            if d.block:
                raise ConfigError(f'{d.where}: "{name}" takes values, not a block; write {name} VALUE;')
            target.rules.append(block.repeated[name](d, context))
            continue
        if name not in block.values and name not in block.blocks:
            raise ConfigError(
                f'{d.where}: unknown directive "{name}" in {context}; accepted here: {", ".join(block.accepted)}'
            )
        if name in seen:
            continue
        seen.add(name)
        if name in block.blocks:
            if not d.block:
                raise ConfigError(f'{d.where}: "{name}" is a block; write {name} {{ ... }}')
            sub = block.blocks[name]
            inner = sub.factory()
            inner_context = name if context == "the top level" else f"{context} {name}"
            bind(inner, d.children, sub, inner_context, unsupported)
            if hasattr(inner, "where"):
                inner.where = d.where
            setattr(target, name, inner)
        else:
            if d.block:
                raise ConfigError(f'{d.where}: "{name}" takes values, not a block; write {name} VALUE;')
            setattr(target, name, block.values[name](d, context))


def dump_block(target: Any, block: Block, indent: str, out: list[str], fmt: Formatter) -> None:
    """Append `target`'s settings under `block` to `out`, in srs.conf syntax."""
    for name in block.values:
        formatted = fmt(getattr(target, name))
        if formatted is not None:
            out.append(f"{indent}{name} {formatted};")
    if block.repeated:
        for rule in target.rules:
            out.append(indent + " ".join(fmt(word) or '""' for word in rule.words()) + ";")
    for name, sub in block.blocks.items():
        out.append(f"{indent}{name} {{")
        dump_block(getattr(target, name), sub, indent + "    ", out, fmt)
        out.append(f"{indent}}}")
    for name, special in block.special.items():
        value = getattr(target, name)
        for item in value if special.repeat else [value]:
            out.extend(special.dump(item, name, indent, fmt))


def _find_program(program: str, base: str) -> bool:
    """A path (relative ones from `base`, the server's working directory) or a name on PATH."""
    if os.sep in program:
        path = program if os.path.isabs(program) else os.path.join(base, program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(program) is not None


def check_programs(config: Config, base: str | None = None) -> None:
    """Every program an enabled exec, transcode or ingest would start must exist.

    SRS finds out only when it forks, and then logs and retries forever; a missing
    ffmpeg is better refused by `config check`, at start and at reload.
    """
    base = base or os.getcwd()
    for vhost in config.vhosts.values():
        ctx = f"vhost {vhost.name}"
        if vhost.exec.enabled:
            for command in vhost.exec.publish:
                if command and not _find_program(command[0], base):
                    raise ConfigError(
                        f'{vhost.exec.where or ctx}: exec publish program "{command[0]}" (in {ctx} exec) is not an '
                        "executable file or a program on PATH; install it or fix the path"
                    )
        for transcode in vhost.transcode:
            if transcode.enabled and any(e.enabled for e in transcode.engine):
                scope = f" {transcode.scope}" if transcode.scope else ""
                _check_ffmpeg(transcode.ffmpeg, base, transcode.where, f"{ctx} transcode{scope}")
        for ingest in vhost.ingest:
            if ingest.enabled:
                _check_ffmpeg(ingest.ffmpeg, base, ingest.where, f"{ctx} ingest {ingest.name}")


def _check_ffmpeg(program: str, base: str, where: str, ctx: str) -> None:
    if not program:
        raise ConfigError(f"{where}: no ffmpeg in {ctx}; add one, e.g. ffmpeg /usr/bin/ffmpeg;")
    if not _find_program(program, base):
        raise ConfigError(
            f'{where}: ffmpeg "{program}" (in {ctx}) is not an executable file or a program on PATH; '
            "install ffmpeg or fix the path"
        )
