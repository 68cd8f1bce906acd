"""File operations off the event loop: one thread runs them in the order they were submitted.

A disk that stalls (an NFS server that hiccups, a volume at its IOPS limit, a
full journal) blocks the thread that writes to it. When that thread is the
event loop, every connection of the process stalls with it: publishers stop
being read, players stop being written, the HTTP API stops answering. A
`FileWorker` takes the blocking calls instead, so a slow disk delays the files
and nothing else.

Order is kept: operations run one at a time, first in first out, so a segment
is renamed before the playlist naming it is written and deleted after the
playlist stopped naming it, exactly as when they ran inline. A caller that
wants to know how an operation went passes `done`; it is called on the event
loop (through `deliver`, `loop.call_soon_threadsafe`) with None or the
OSError (with `errors_only`, only for an error: a wake-up of the loop per
write would cost more than the write). The bytes waiting in the queue are counted, so a caller can stop
submitting (drop output) rather than grow without bound while the disk is away.

`INLINE` runs every operation at once in the caller's thread and raises its
errors there: tools, tests, and output that must be on disk before the next
step (low-latency HLS reads its own playlist state) use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger("tidecast.files")

_IOV_MAX = 1024  # buffers one writev takes (Linux)

Done = Callable[[OSError | None], None]
_Item = tuple[Callable[[], None], int, "Done | None", bool]


class FileWork(Protocol):
    """Where file operations run: `Inline` or a `FileWorker`."""

    def submit(
        self, op: Callable[[], None], size: int = 0, done: Done | None = None, errors_only: bool = False
    ) -> None: ...

    def backlog(self) -> int: ...


class Inline:
    """Runs each operation immediately; errors propagate to the caller (who handles them as before)."""

    def submit(
        self, op: Callable[[], None], size: int = 0, done: Done | None = None, errors_only: bool = False
    ) -> None:
        op()
        if done is not None and not errors_only:
            done(None)

    def backlog(self) -> int:
        return 0


INLINE = Inline()


def write_all(fd: int, parts: Sequence[bytes | bytearray], size: int) -> None:
    """All of `parts` (`size` bytes) to `fd`: one writev, the rest (a short write) one piece at a time."""
    if len(parts) > _IOV_MAX:
        parts = [b"".join(parts)]
    written = os.writev(fd, parts)
    if written < size:
        with memoryview(b"".join(parts)) as whole:
            rest = whole[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]


def close_quietly(fd: int) -> None:
    """Close a descriptor whose file has failed already (it goes anyway): a second error says nothing new."""
    try:
        os.close(fd)
    except OSError:
        pass


def remove_file(path: str) -> OSError | None:
    """Delete a file; one that is not there is fine. Returns the error for the caller to report."""
    try:
        os.remove(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        return exc
    return None


class FileWorker:
    """A daemon thread running file operations in submission order; see the module docstring."""

    def __init__(
        self,
        deliver: Callable[..., object],
        name: str = "tidecast-files",
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._deliver = deliver
        # With `defer` (loop.call_soon), what one turn of the loop submits crosses to the thread as one
        # batch: one wake-up of the thread for dozens of writes, and one of the loop for their outcomes.
        self._defer = defer
        self._batch: list[_Item] = []
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        # Each counter has one writer (the submitter, the thread), so neither needs a lock.
        self._submitted = 0
        self._finished = 0
        self._ops_submitted = 0
        self._ops_finished = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, op: Callable[[], None], size: int = 0, done: Done | None = None, errors_only: bool = False
    ) -> None:
        """Queue `op`; `size` is the bytes it holds (counted in `backlog` until it ran)."""
        self._submitted += size
        self._ops_submitted += 1
        item = (op, size, done, errors_only)
        if self._defer is None:
            self._queue.put([item])
            return
        if not self._batch:
            self._defer(self._hand_over)
        self._batch.append(item)

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._queue.put(batch)

    def backlog(self) -> int:
        """Bytes submitted and not yet written."""
        return self._submitted - self._finished

    def pending(self) -> int:
        """Operations submitted and not yet finished."""
        return self._ops_submitted - self._ops_finished

    async def drain(self, timeout: float) -> bool:
        """Wait, with the loop running, until nothing is queued and what finished has been heard of
        (a callback may queue more: a segment's rename, then its playlist); False after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.pending():
                await asyncio.sleep(0.02)  # the callbacks delivered last run now
                if not self.pending():
                    return True
            await asyncio.sleep(0.01)
        return False

    async def shutdown(self, timeout: float) -> bool:
        """A quit: `drain` for up to `timeout`, then `close`; False when the disk did not let it finish
        (then the thread is left to die with the process: closing would only wait on the same disk)."""
        return await self.drain(timeout) and self.close(0.5)

    def close(self, timeout: float) -> bool:
        """Run what is queued, then stop; False when the disk did not let it finish within `timeout`."""
        self._hand_over()
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            outcomes: list[tuple[Done, OSError | None]] = []
            for op, size, done, errors_only in batch:
                error: OSError | None = None
                try:
                    op()
                except OSError as exc:
                    error = exc
                except Exception:  # a bug in an operation must not stop every later one
                    log.exception("file operation failed")
                finally:
                    self._finished += size
                if error is not None or (done is not None and not errors_only):
                    outcomes.append((_report if done is None else done, error))
            if outcomes:
                try:
                    self._deliver(_call_all, outcomes)
                except RuntimeError:
                    return  # the event loop is closed: the process is going away
            self._ops_finished += len(batch)  # after the delivery: `drain` then waits for the callbacks too


def _call_all(outcomes: list[tuple[Done, OSError | None]]) -> None:
    for done, error in outcomes:
        try:
            done(error)
        except Exception:
            log.exception("file operation callback failed")


def _report(error: OSError | None) -> None:
    if error is not None:
        log.warning("file operation failed: %s", error)
