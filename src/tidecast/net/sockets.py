"""Socket options every media connection wants."""

from __future__ import annotations

import asyncio
import socket
from typing import cast


def media_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """The transport as a stream transport, with Nagle off: merged writes already batch, and
    delaying the last partial segment of a batch would only add latency."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
    return cast(asyncio.Transport, transport)
