"""Socket options every media connection wants, and closing one whose peer has stopped reading."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import cast


def media_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """The transport as a stream transport, with Nagle off for the handshake and commands (each
    answer is awaited, so nothing is gained by holding one back). A player's socket then gets its
    vhost's `tcp_nodelay` when it joins a stream."""
    set_nodelay(transport, True)
    # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
    return cast(asyncio.Transport, transport)


def set_nodelay(transport: asyncio.BaseTransport, on: bool) -> None:
    """TCP_NODELAY on (Nagle off) or off. Off, as SRS's `tcp_nodelay off` default leaves it, the kernel
    holds a small write while earlier bytes are unacknowledged and sends it with the next ones: with
    `min_latency on` (a write per message) that makes fewer, fuller TCP segments, for up to a
    delayed-ACK time (about 40 ms) of latency."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)
        except OSError:
            pass  # not TCP (a Unix socket), or already closed


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
