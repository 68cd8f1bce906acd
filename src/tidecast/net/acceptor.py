"""Listening sockets that take waiting connections in batches, not one per turn of the event loop.

uvloop's servers accept one connection per event-loop iteration (libuv 1.45 dropped its accept
loop, libuv#3696). On a busy server an iteration lasts milliseconds, and one that flushes a batch to
15,000 players lasts hundreds: new connections then arrive faster than they are taken, the
listen backlog fills, and the kernel drops SYNs. Clients wait out 1, 3, 7 s retransmits, and a
reconnect storm after a rolling update never catches up. Measured on one core with 15,000 RTMP players
ramping at 250 a second: exactly one accept(2) per iteration, a backlog at its 1,024 limit, and
set-ups timing out after 15 s.

So the listening socket is ours. When it is readable, up to ACCEPT_BATCH waiting connections are
accepted in one go and handed to the loop's own transport (`connect_accepted_socket`), so the
protocols see the same transports as before. Running out of descriptors pauses accepting for a second
rather than spinning on a socket that stays readable, as asyncio's own server does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from tidecast.log import RateLimitedLogger

log = logging.getLogger("tidecast.net")

# At most this many connections taken per readiness: a storm of them cannot hold the loop for long
# (a level-triggered reader comes back next iteration for the rest).
ACCEPT_BATCH = 256
LISTEN_BACKLOG = 1024
RETRY_AFTER_S = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

_errors = RateLimitedLogger(log, per_second=0.1)  # a full descriptor table lasts: a line every 10 s


class Acceptor:
    """One address's listening sockets (an IPv4 and an IPv6 one for a name that has both)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        sockets: list[socket.socket],
        what: str,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self.sockets = sockets
        self._what = what  # "RTMP 0.0.0.0:1935", for the log
        self._starting: set[asyncio.Task[Any]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self.closed = False
        self._watch()

    def close(self) -> None:
        """Stop listening. Connections already taken carry on; the kernel resets those still waiting."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while it waited: the next one
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                _errors.error("%s: accept failed: %s", self._what, exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._start(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # reset before its transport was up: nothing was started for it

    def _pause(self, exc: OSError) -> None:
        _errors.error(
            "%s: cannot accept connections: %s; pausing accepts for %.0f s (raise the process's descriptor "
            "limit, ulimit -n, or lower max_connections)",
            self._what,
            exc,
            RETRY_AFTER_S,
        )
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._retry = self._loop.call_later(RETRY_AFTER_S, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self.closed:
            self._watch()

    def _watch(self) -> None:
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)


def listen(
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    what: str,
    reuse_port: bool = False,
    backlog: int = LISTEN_BACKLOG,
) -> Acceptor:
    """Bind `host:port` (every address the name has) and start accepting; OSError when it cannot bind."""
    loop = asyncio.get_running_loop()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, _, _, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            # SO_REUSEADDR, and IPV6_V6ONLY on an IPv6 socket so that 0.0.0.0 and :: can both be bound.
            sock = socket.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port)
            sockets.append(sock)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return Acceptor(loop, factory, sockets, what)
