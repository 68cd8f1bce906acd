"""What the hub knows of each publisher and player, for the API and for kicking."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from typing import Final, Protocol

from tidecast.config.model import DEFAULT_VHOST

_ALPHABET: Final = string.ascii_lowercase + string.digits


def new_client_id() -> str:
    """SRS-style short connection id, also the logging context id."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


class StreamRef(Protocol):
    """What a client knows of the stream it publishes or plays (the API shows it)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...


class Client:
    """A connection that published or played a stream."""

    __slots__ = (
        "app",
        "closer",
        "created",
        "id",
        "ip",
        "page_url",
        "query",
        "recv_bytes",
        "reject",
        "send_bytes",
        "stream",
        "swf_url",
        "tc_url",
        "type",
        "vhost",
    )

    def __init__(self, cid: str, ip: str, kind: str, closer: Callable[[], None]) -> None:
        self.id = cid
        self.ip = ip
        self.type = kind
        self.closer = closer
        self.created = time.monotonic()
        self.vhost = DEFAULT_VHOST
        self.app = ""
        self.tc_url = ""
        self.page_url = ""
        self.swf_url = ""
        self.query = ""  # the request's query string without "?": hooks and signed URLs read it
        self.stream: StreamRef | None = None
        self.send_bytes = 0
        self.recv_bytes = 0
        # Set by connections that can tell their peer why it is refused late.
        self.reject: Callable[[str], None] | None = None

    @property
    def is_publisher(self) -> bool:
        return self.type.endswith("publish")

    def kick(self) -> None:
        self.closer()
