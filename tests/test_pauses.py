"""The collector's pauses and late ticks: counted from real collections, windows that forget, workers merged."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from tidecast.multi.aggregate import merge_metrics
from tidecast.multi.role import Sibling
from tidecast.pauses import WINDOW_S, Pauses, RecentMax


@pytest.fixture
def pauses() -> Iterator[Pauses]:
    p = Pauses(now=0.0)
    p.install()
    yield p
    p.uninstall()


def test_real_collections_are_counted_and_timed(pauses: Pauses) -> None:
    before = list(pauses.collections)
    gc.collect()
    gc.collect(0)
    assert pauses.collections[2] == before[2] + 1
    assert pauses.collections[0] >= before[0] + 1
    assert pauses.seconds[2] > 0.0
    assert 0.0 < pauses.longest[2].value <= pauses.seconds[2]
    pauses.uninstall()
    counted = list(pauses.collections)
    gc.collect()
    assert pauses.collections == counted, "an uninstalled watcher still counted"
    pauses.install()
    pauses.install()  # twice is once
    gc.collect()
    assert pauses.collections[2] == counted[2] + 1


def test_a_slow_collection_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(i * 0.25 for i in range(1000))  # each clock reading 250 ms after the previous
    p = Pauses(clock=lambda: next(ticks), now=0.0)
    p.install()
    try:
        with caplog.at_level(logging.WARNING, logger="tidecast.pauses"):
            gc.collect()
            gc.collect()
    finally:
        p.uninstall()
    lines = [r.getMessage() for r in caplog.records if r.name == "tidecast.pauses"]
    assert len(lines) == 1, lines
    assert "generation 2 took 250 ms" in lines[0] and "workers N" in lines[0]
    assert p.longest[2].value == pytest.approx(0.25)


def test_recent_max_covers_one_to_two_windows() -> None:
    worst = RecentMax(0.0)
    worst.add(0.5)
    worst.add(0.2)
    worst.roll(WINDOW_S / 2)
    assert worst.value == 0.5
    worst.roll(WINDOW_S + 1)  # the spike moves to the previous window and is still reported
    assert worst.value == 0.5
    worst.add(0.1)
    worst.roll(2 * WINDOW_S + 2)
    assert worst.value == 0.1
    worst.roll(3 * WINDOW_S + 3)
    assert worst.value == 0.0
    worst.add(0.7)
    worst.roll(10 * WINDOW_S)  # no roll for several windows: nothing of that is recent
    assert worst.value == 0.0


def test_tick_lateness_and_the_metrics(pauses: Pauses) -> None:
    pauses.tick(1.0, 0.003)
    pauses.tick(2.0, 0.750)
    pauses.tick(3.0, -0.001)  # early (clock granularity) counts as on time
    gc.collect()
    families = {m.name: m for m in pauses.metrics()}
    assert families["tidecast_loop_tick_late_max_seconds"].samples[0].value == 0.75
    runs = {s.labels["generation"]: s.value for s in families["tidecast_gc_collections"].samples}
    assert set(runs) == {"0", "1", "2"} and runs["2"] >= 1
    assert {s.labels["generation"] for s in families["tidecast_gc_pause_max_seconds"].samples} == {"0", "1", "2"}


def test_workers_merge_the_worst_stall_and_sum_the_counts() -> None:
    def text(pause: float, late: float, runs: int) -> str:
        return (
            "# HELP tidecast_gc_collections_total runs\n# TYPE tidecast_gc_collections_total counter\n"
            f'tidecast_gc_collections_total{{generation="2"}} {runs}.0\n'
            "# HELP tidecast_gc_pause_max_seconds longest\n# TYPE tidecast_gc_pause_max_seconds gauge\n"
            f'tidecast_gc_pause_max_seconds{{generation="2"}} {pause}\n'
            "# HELP tidecast_loop_tick_late_max_seconds late\n# TYPE tidecast_loop_tick_late_max_seconds gauge\n"
            f"tidecast_loop_tick_late_max_seconds {late}\n"
        )

    merged = merge_metrics([(Sibling(0, 1, 2), text(0.12, 0.02, 5)), (Sibling(1, 3, 4), text(0.03, 0.40, 7))])
    assert 'tidecast_gc_pause_max_seconds{generation="2"} 0.12' in merged
    assert "tidecast_loop_tick_late_max_seconds 0.4" in merged
    assert 'tidecast_gc_collections_total{generation="2"} 12.0' in merged
