"""The edge's choice of origin: SRS's round robin, without going straight back to the one that just failed."""

from __future__ import annotations

from tidecast.cluster.edge import _RoundRobin


def test_round_robin_starts_at_the_first_origin_and_moves_on() -> None:
    picker = _RoundRobin()
    assert [picker.pick(["a:1935", "b:1935", "c"]) for _ in range(4)] == ["a:1935", "b:1935", "c", "a:1935"]


def test_the_origin_that_just_failed_is_skipped_when_another_is_listed() -> None:
    picker = _RoundRobin()
    origins = ["a", "b:1936"]
    assert picker.pick(origins) == "a"  # redirected from a to b, then b went away:
    assert picker.pick(origins, avoid=("b", 1936)) == "a"  # round robin would have said b
    assert picker.pick(origins, avoid=("a", 1935)) == "b:1936"
    assert picker.pick(["a"], avoid=("a", 1935)) == "a"  # the only one: tried again
    assert _RoundRobin().pick(["[::1]:1940", "b"], avoid=("::1", 1940)) == "b"
