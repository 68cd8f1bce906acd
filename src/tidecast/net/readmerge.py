"""Merged reads (`mr on`) resumed by one timer for every publisher of a loop.

After each read a merging publisher's socket is paused for `mr_latency`, so the
kernel gathers the next reads into one. One timer per pause meant, with a
thousand publishers and SRS's 350 ms, about 2,900 timers armed and fired a
second, each with its own handle and context. Here the resumes that fall due
within `SLACK_S` of each other run from one timer callback; a read waits
`mr_latency` plus at most that slack.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import deque
from collections.abc import Callable

log = logging.getLogger("tidecast.rtmp")

SLACK_S = 0.02


class ReadMerges:
    """Callbacks to run `delay` seconds on, in batches; one instance per event loop (`for_loop`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, slack: float = SLACK_S) -> None:
        self._loop = loop
        self._slack = slack
        # By delay: within one delay, deadlines come in the order they were added.
        self._due: dict[float, deque[tuple[float, Callable[[], object]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._due.values())

    def later(self, delay: float, callback: Callable[[], object]) -> None:
        at = self._loop.time() + delay
        queue = self._due.get(delay)
        if queue is None:
            queue = self._due[delay] = deque()
        queue.append((at, callback))
        if at + self._slack < self._timer_at:
            self._arm(at + self._slack)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        nxt = math.inf
        for delay, queue in list(self._due.items()):
            while queue and queue[0][0] <= now:
                try:
                    queue.popleft()[1]()
                except Exception:  # one connection's failure must not leave the others paused
                    log.exception("resuming a merged read failed")
            if queue:
                nxt = min(nxt, queue[0][0])
            else:
                del self._due[delay]
        # A callback may have armed the timer for a later deadline than what is still queued here.
        if nxt + self._slack < self._timer_at:
            self._arm(nxt + self._slack)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadMerges] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop) -> ReadMerges:
    merges = _by_loop.get(loop)
    if merges is None:
        merges = _by_loop[loop] = ReadMerges(loop)
    return merges
