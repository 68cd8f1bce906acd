"""Splitting RTMP and HTTP request targets into vhost, app, stream and query."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from tidecast.live.hub import Target
from tidecast.live.limits import DEFAULT_VHOST

if TYPE_CHECKING:
    from tidecast.config import Config

__all__ = ["DEFAULT_VHOST", "Target", "advertised_ip", "parse_rtmp_url", "rtmp_target", "split_origin"]


def advertised_ip(config: Config, asked_host: str = "") -> str:
    """The address other nodes should use for this one (SRS #1501)."""
    for listen in config.listen:
        if listen.host not in ("0.0.0.0", "::", "127.0.0.1", ""):
            return listen.host
    pod_ip = os.environ.get("POD_IP", "")
    if pod_ip:
        return pod_ip
    if asked_host:
        return asked_host
    for listen in config.listen:
        if listen.host not in ("0.0.0.0", "::", ""):
            return listen.host
    return "127.0.0.1"


def _split_query(s: str) -> tuple[str, str]:
    path, _, query = s.partition("?")
    return path, query


def _vhost_param(*queries: str) -> str:
    for query in queries:
        if not query:
            continue
        # SRS also accepts `...vhost...` spelt with ... as the separator (old Flash).
        params = parse_qs(query.replace("...", "&"), keep_blank_values=True)
        for key in ("vhost", "domain"):
            if params.get(key):
                return params[key][0]
    return ""


def rtmp_target(tc_url: str, app: str, stream: str) -> Target:
    """Resolve what a connect + play/publish asked for."""
    app_path, app_query = _split_query(app)
    stream_name, stream_query = _split_query(stream)
    host = ""
    tc_query = ""
    if tc_url:
        try:
            parts = urlsplit(tc_url)
            host = parts.hostname or ""
            tc_query = parts.query
            if not app_path:
                app_path, app_query = _split_query(parts.path.lstrip("/"))
        except ValueError:
            host = ""
    vhost = _vhost_param(stream_query, app_query, tc_query) or host or DEFAULT_VHOST
    query = "&".join(q for q in (app_query, stream_query) if q)
    return Target(vhost, app_path.strip("/"), stream_name, query)


def parse_rtmp_url(url: str) -> tuple[str, int, str, str]:
    """`rtmp://host[:port]/app/stream` into (host, port, app, stream); stream may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise ValueError(f"not an rtmp:// URL: {url!r}")
    path = parts.path.lstrip("/")
    app, _, stream = path.partition("/")
    if parts.query:
        stream = f"{stream}?{parts.query}" if stream else stream
        app = app if stream else f"{app}?{parts.query}"
    return parts.hostname, parts.port or 1935, app, stream


def split_origin(origin: str, default_port: int = 1935) -> tuple[str, int]:
    """`host[:port]`, with `[v6]:port` accepted."""
    if origin.startswith("["):
        host, _, rest = origin[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else default_port
    host, sep, port = origin.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return origin, default_port
