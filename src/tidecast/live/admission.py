"""What every protocol asks the hub before a client may connect, publish or play.

A gate is awaited (it may call an HTTP hook or ask other origins); its answer
is a value, never an exception: `None` admits, a `Refusal` refuses with an SRS
error code and a short reason, a `Redirect` sends a player elsewhere (the
origin cluster's 302). Adapters turn these into RTMP statuses or HTTP codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# SRS's error codes, as its hooks and API report them.
ERROR_SYSTEM_SECURITY_DENY = 1016
ERROR_STREAM_NOT_FOUND = 2048
ERROR_SYSTEM_STREAM_BUSY = 1028
ERROR_VHOST_NOT_FOUND = 1062
ERROR_SERVER_DRAINING = 1077
ERROR_BAD_NAME = 2022


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    reason: str  # shown to the client and logged: never a secret


@dataclass(frozen=True, slots=True)
class Redirect:
    """Play it from another node (SRS's RTMP 302, or an HTTP 302 for HTTP-FLV)."""

    host: str
    port: int  # RTMP
    vhost: str
    http: str = ""  # host:port of the node's HTTP server; "" when it did not say


@dataclass(slots=True)
class JoinRequest:
    action: str  # "connect" | "publish" | "play"
    client_id: str
    ip: str
    vhost: str  # the configured vhost it resolved to
    app: str
    stream: str  # "" for connect
    param: str  # the query string with its leading "?", or ""
    tc_url: str
    page_url: str
    protocol: str  # "rtmp" | "flv" | "hls" | "mp4"
    stream_id: str  # the hub's stream id, "" for connect
    server_id: str


class Gate(Protocol):
    """Admission, awaited before a connect, publish or play is accepted."""

    async def check(self, request: JoinRequest) -> Refusal | Redirect | None: ...


class Observer(Protocol):
    """Notifications after the fact ("close", "unpublish", "stop"); must never block or raise."""

    def on_event(self, event: str, request: JoinRequest) -> None: ...
