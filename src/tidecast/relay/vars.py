"""SRS's `[name]` variables in exec commands, transcode outputs and ingest outputs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_VHOST = "__defaultVhost__"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the relays know of a published stream (SRS's request)."""

    vhost: str
    app: str
    stream: str
    port: int  # the RTMP port of this server (the first `listen`)
    param: str = ""  # the query string with its leading "?", or ""
    tc_url: str = ""
    swf_url: str = ""
    page_url: str = ""
    host: str = ""  # the host the client connected to (from the tcUrl)
    client_id: str = ""
    ip: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.vhost, self.app, self.stream)

    @property
    def label(self) -> str:
        return f"{self.vhost}/{self.app}/{self.stream}"


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


def stream_with_query(host: str, vhost: str, stream: str, param: str) -> str:
    """The stream name as SRS sends it upstream: the query kept, the vhost added when it is not implied."""
    query = param.lstrip("?")
    if "vhost=" not in query:
        guess = vhost if vhost != DEFAULT_VHOST else ("" if not host or _is_ipv4(host) else host)
        if guess:
            query = f"{query}&vhost={guess}" if query else f"vhost={guess}"
    query = query.lstrip("&?")
    return f"{stream}?{query}" if query else stream


def rtmp_url(server: str, port: int, info: StreamInfo) -> str:
    """`rtmp://server:port/app/stream?query`, the [url] of exec and the target of a forward."""
    return f"rtmp://{server}:{port}/{info.app}/{stream_with_query(info.host, info.vhost, info.stream, info.param)}"


def stream_values(info: StreamInfo, engine: str | None = None) -> dict[str, str]:
    values = {
        "vhost": info.vhost,
        "port": str(info.port),
        "app": info.app,
        "stream": info.stream,
        "param": info.param,
        "tcUrl": info.tc_url,
        "swfUrl": info.swf_url,
        "pageUrl": info.page_url,
    }
    if engine is not None:
        values["engine"] = engine
    return values
