"""Socket options every media connection wants, and closing one whose peer has stopped reading."""

from __future__ import annotations

import asyncio
import socket
import struct
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


# close() lets what is buffered go out first, so a connection closed on a peer that reads nothing
# (a player kicked after SEND_TIMEOUT_S) kept its socket and its buffered bytes for as long as the
# peer stayed. After this grace it is aborted.
CLOSE_GRACE_S = 5.0


def close_transport(transport: asyncio.Transport, grace: float = CLOSE_GRACE_S) -> None:
    """Close after the buffered bytes are sent, or abort `grace` seconds on if they are not."""
    if transport.is_closing():
        return
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(grace, reset, transport)


def reset(transport: asyncio.Transport) -> None:
    """Abort with a TCP reset (a no-op once closed): what the kernel still holds for the peer goes too."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
