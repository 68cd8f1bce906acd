"""Where the whole process stops serving: the garbage collector's pauses and late housekeeping ticks.

While the collector runs, or a callback holds the event loop, every player of the process waits. These
figures let an operator tell such a stop apart from a slow disk or a CPU quota. They are kept for
`/metrics`, and a long collection is logged.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("tidecast.pauses")

GENERATIONS = 3
# A collection this long shows as a latency spike on every player; it is logged, at most once a minute.
SLOW_COLLECTION_S = 0.1
# The "max" gauges cover the current and the previous window: a scrape sees the worst of the last one
# to two minutes whenever it comes, and an old spike does not stay on the dashboard.
WINDOW_S = 60.0


class RecentMax:
    """The largest value added in the current and the previous window."""

    __slots__ = ("current", "previous", "window_start")

    def __init__(self, now: float) -> None:
        self.current = 0.0
        self.previous = 0.0
        self.window_start = now

    def add(self, value: float) -> None:
        if value > self.current:
            self.current = value

    def roll(self, now: float) -> None:
        if now - self.window_start >= WINDOW_S:
            # A gap of more than a window (no ticks) leaves nothing recent to report.
            self.previous = self.current if now - self.window_start < 2 * WINDOW_S else 0.0
            self.current = 0.0
            self.window_start = now

    @property
    def value(self) -> float:
        return max(self.current, self.previous)


class Pauses:
    """Counts and times the collector's runs (gc.callbacks) and records how late housekeeping ticks come."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, now: float | None = None) -> None:
        start = time.monotonic() if now is None else now
        self.clock = clock
        self.collections = [0] * GENERATIONS
        self.seconds = [0.0] * GENERATIONS
        self.longest = [RecentMax(start) for _ in range(GENERATIONS)]
        self.tick_late = RecentMax(start)
        self._started = 0.0
        self._last_log = -WINDOW_S

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        took = self.clock() - self._started
        generation = int(info.get("generation", GENERATIONS - 1))
        self.collections[generation] += 1
        self.seconds[generation] += took
        self.longest[generation].add(took)
        if took >= SLOW_COLLECTION_S:
            now = time.monotonic()
            if now - self._last_log >= WINDOW_S:
                self._last_log = now
                log.warning(
                    "garbage collection of generation %d took %.0f ms, and every connection waited: if this "
                    "repeats (tidecast_gc_pause_max_seconds), give the process fewer connections or more "
                    "workers (workers N)",
                    generation,
                    took * 1000,
                )

    def tick(self, now: float, late: float) -> None:
        """From the housekeeping tick: `late` is how far past its due time this tick ran, in seconds."""
        for worst in self.longest:
            worst.roll(now)
        self.tick_late.roll(now)
        self.tick_late.add(max(0.0, late))

    def metrics(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("tidecast_gc_collections", "garbage collector runs", labels=["generation"])
        spent = CounterMetricFamily(
            "tidecast_gc_pause_seconds", "time the garbage collector held the process", labels=["generation"]
        )
        worst = GaugeMetricFamily(
            "tidecast_gc_pause_max_seconds", "longest collection in the last 1-2 minutes", labels=["generation"]
        )
        for generation in range(GENERATIONS):
            label = [str(generation)]
            runs.add_metric(label, self.collections[generation])
            spent.add_metric(label, self.seconds[generation])
            worst.add_metric(label, self.longest[generation].value)
        yield runs
        yield spent
        yield worst
        yield GaugeMetricFamily(
            "tidecast_loop_tick_late_max_seconds",
            "how late the once-a-second housekeeping tick ran at worst in the last 1-2 minutes (a stalled loop)",
            value=self.tick_late.value,
        )
