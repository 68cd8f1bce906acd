"""The listening sockets (net/acceptor.py) on real event loops and real sockets: a storm of waiting
connections is taken in a few loop iterations however long each iteration is, a full descriptor table
pauses accepting instead of spinning, and a closed listener refuses."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import pytest
import uvloop

from tidecast.net import acceptor

STORM = 300  # connections waiting at once, as after an edge restarts (well within the 1,024 backlog)
BURN_S = 0.01  # each loop iteration does this much work, as a flush to thousands of players does


class _Listener(Protocol):
    def close(self) -> None: ...


Opener = Callable[[type[asyncio.Protocol]], Awaitable[tuple[_Listener, int]]]


async def _iterations_to_take_storm(open_listener: Opener) -> int:
    """Loop iterations, each `BURN_S` long, until STORM connections already waiting are all made."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    listener, port = await open_listener(Counting)
    # Blocking connects: the kernel completes each handshake into the backlog before the loop runs again.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(STORM)]
    iterations = 0
    done = loop.create_future()

    def burn() -> None:
        nonlocal iterations
        time.sleep(BURN_S)
        iterations += 1
        if len(made) >= STORM or iterations >= 2 * STORM:
            done.set_result(None)
        else:
            loop.call_soon(burn)

    loop.call_soon(burn)
    await done
    for transport in made:
        transport.close()
    for client in clients:
        client.close()
    listener.close()
    assert len(made) == STORM, f"only {len(made)} of {STORM} connections made in {iterations} iterations"
    return iterations


async def _ours(factory: type[asyncio.Protocol]) -> tuple[_Listener, int]:
    listener = acceptor.listen(factory, "127.0.0.1", 0, "test storm")
    return listener, listener.sockets[0].getsockname()[1]


async def _the_loops_own(factory: type[asyncio.Protocol]) -> tuple[_Listener, int]:
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, backlog=1024)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_a_storm_of_waiting_connections_is_taken_in_a_few_busy_iterations(use_uvloop: bool) -> None:
    runner = uvloop.run if use_uvloop else asyncio.run
    iterations = runner(_iterations_to_take_storm(_ours))
    # 256 a readiness, then each connection's transport is made in the next iteration or two.
    assert iterations <= 6


def test_uvloop_own_server_takes_one_connection_per_iteration() -> None:
    # Why the listening socket is ours: libuv accepts one connection per loop iteration (libuv#3696), so
    # a storm of STORM takes about STORM busy iterations. If this fails, uvloop accepts in a loop again
    # and net/acceptor.py could go.
    assert uvloop.run(_iterations_to_take_storm(_the_loops_own)) >= STORM // 2


def test_a_closed_listener_refuses_connections() -> None:
    async def scenario() -> None:
        server = acceptor.listen(asyncio.Protocol, "127.0.0.1", 0, "test close")
        port = server.sockets[0].getsockname()[1]
        socket.create_connection(("127.0.0.1", port)).close()
        server.close()
        server.close()  # twice is harmless
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)

    uvloop.run(scenario())


def test_a_port_in_use_fails_to_bind_with_nothing_left_open() -> None:
    async def scenario() -> None:
        first = acceptor.listen(asyncio.Protocol, "127.0.0.1", 0, "first")
        port = first.sockets[0].getsockname()[1]
        with pytest.raises(OSError):
            acceptor.listen(asyncio.Protocol, "127.0.0.1", port, "second")
        first.close()

    uvloop.run(scenario())


# Run in a child process: lowering the descriptor limit would break whatever else the test process does.
_FULL_TABLE = textwrap.dedent(
    """
    import asyncio, logging, os, resource, socket, sys, time
    import uvloop
    from tidecast.net import acceptor

    logging.basicConfig(stream=sys.stdout, level=logging.ERROR, format="%(name)s %(message)s")

    async def main():
        loop = asyncio.get_running_loop()
        made = []

        class Counting(asyncio.Protocol):
            def connection_made(self, transport):
                made.append(transport)

        server = acceptor.listen(Counting, "127.0.0.1", 0, "RTMP test:0")
        port = server.sockets[0].getsockname()[1]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        probe = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor: the next accept would get it
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # the next descriptor is past the limit
        ticks = 0
        t0 = time.process_time()
        deadline = loop.time() + 0.5
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            ticks += 1
        cpu = time.process_time() - t0
        print("while full:", len(made), "made, cpu", round(cpu, 3), "ticks", ticks, flush=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        deadline = loop.time() + 3
        while len(made) < 5 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        print("after:", len(made), "made", flush=True)
        for c in clients:
            c.close()
        server.close()

    uvloop.run(main())
    """
)


def test_a_full_descriptor_table_pauses_accepting_and_says_what_to_do() -> None:
    out = subprocess.run([sys.executable, "-c", _FULL_TABLE], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    error = [line for line in lines if "cannot accept connections" in line]
    assert len(error) == 1, out.stdout  # said once (rate-limited), not once per readiness
    assert "RTMP test:0" in error[0] and "ulimit -n" in error[0] and "max_connections" in error[0]
    full = next(line for line in lines if line.startswith("while full:")).split()
    assert full[2] == "0"  # nothing was made while the table was full
    assert float(full[5]) < 0.25  # paused, not spinning on a socket that stays readable (half a second)
    assert "after: 5 made" in lines  # accepting resumed by itself once descriptors were free
