"""srs.conf-compatible configuration: grammar, typed settings with SRS's defaults, env overrides.

`load_config(path)` is what the server and `tidecast config check` use; every
error it raises is a `ConfigError` naming file:line, the directive and what is
accepted, so a bad file (or a bad reload) is explained, never half-applied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from tidecast.config.directives import (
    ROOT,
    VHOST,
    bind,
    check_programs,
    dump_block,
    lift_legacy_root,
    lift_legacy_vhost,
)
from tidecast.config.env import apply_env
from tidecast.config.model import (
    DEFAULT_VHOST,
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
from tidecast.config.parser import ConfigError, Directive, parse_file
from tidecast.config.parser import parse_text as parse_directives

__all__ = [
    "DEFAULT_VHOST",
    "ApiAuth",
    "Cluster",
    "Config",
    "ConfigError",
    "Dvr",
    "Engine",
    "Exec",
    "Exporter",
    "Forward",
    "Hls",
    "HttpApi",
    "HttpHooks",
    "HttpRemux",
    "HttpServer",
    "Ingest",
    "IngestInput",
    "Listen",
    "Play",
    "Publish",
    "RawApi",
    "Refer",
    "Security",
    "SecurityRule",
    "SignedUrl",
    "Transcode",
    "Vhost",
    "dump",
    "load_config",
    "parse_text",
]

log = logging.getLogger("tidecast.config")


def _build(directives: list[Directive], path: str | None, env: Mapping[str, str] | None) -> Config:
    config = Config(path=path)
    unsupported: list[str] = []
    top = lift_legacy_root([d for d in directives if d.name != "vhost"])
    bind(config, top, ROOT, "the top level", unsupported)
    vhosts: dict[str, Vhost] = {}
    for d in directives:
        if d.name != "vhost":
            continue
        if len(d.args) != 1 or not d.block:
            raise ConfigError(f"{d.where}: vhost needs exactly one name and a block: vhost NAME {{ ... }}")
        name = d.args[0]
        if name in vhosts:
            continue  # the first definition wins, as in SRS
        vhost = Vhost(name=name)
        bind(vhost, lift_legacy_vhost(d.children), VHOST, f"vhost {name}", unsupported)
        vhosts[name] = vhost
    vhosts.setdefault(DEFAULT_VHOST, Vhost())
    config.vhosts = vhosts
    config.unsupported = unsupported
    has_listen = any(d.name == "listen" for d in top)
    if env is not None:
        applied = apply_env(config, env)
        has_listen = has_listen or "SRS_LISTEN" in applied
    if path is not None and not has_listen:
        raise ConfigError(f"{path}: no listen directive; add one, e.g. `listen 1935;` (or set SRS_LISTEN)")
    for vhost in config.vhosts.values():
        signed = vhost.signed_url
        if signed.enabled and not (signed.secret_file or signed.secret_env):
            raise ConfigError(
                f"{path or 'the environment'}: vhost {vhost.name} signed_url is enabled without a secret; "
                "add secret_file PATH; or secret_env VARIABLE; (tidecast never reads a secret written in the config)"
            )
    return config


def parse_text(text: str, path: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """A config from text (tests, tools); `env=None` applies no environment overrides."""
    return _build(parse_directives(text, path), path, env)


def load_config(path: str | None, env: Mapping[str, str] | None = None, env_only: bool = False) -> Config:
    """Load `path` (or only the environment with `env_only`), with `SRS_*` overrides from `env`."""
    environ = os.environ if env is None else env
    if env_only or path is None:
        config = _build([], None, environ)
    else:
        config = _build(parse_file(path), path, environ)
    check_programs(config)
    if config.unsupported:
        log.warning(
            "config: %d SRS directive(s) tidecast does not implement were ignored: %s",
            len(config.unsupported),
            ", ".join(config.unsupported),
        )
    return config


# ---------------------------------------------------------------- dump


def _format(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same float.
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, Listen):
        return str(value)
    if isinstance(value, list):
        parts = [_format(v) for v in value]
        return " ".join(p for p in parts if p) or None
    text = str(value)
    if text and not any(c.isspace() or c in ";{}#\"'" for c in text):
        return text
    # The grammar has no escapes: quote with the mark the value does not hold.
    # (A value holding both cannot come from a file, only from the environment.)
    quote = "'" if '"' in text else '"'
    return quote + text.replace(quote, "") + quote


def dump(config: Config) -> str:
    """The effective settings, defaults included, in srs.conf syntax."""
    source = (config.path or "the environment").replace("\n", " ")
    out: list[str] = [f"# effective settings of {source}"]
    dump_block(config, ROOT, "", out, _format)
    for name, vhost in config.vhosts.items():
        out.append(f"vhost {_format(name)} {{")
        dump_block(vhost, VHOST, "    ", out, _format)
        out.append("}")
    return "\n".join(out) + "\n"
