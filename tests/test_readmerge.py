"""ReadMerges: the one timer that resumes every merging publisher, on a real event loop."""

from __future__ import annotations

import asyncio

import uvloop

from tidecast.net.readmerge import ReadMerges, for_loop


def test_resumes_run_after_their_delay_in_order_and_batched() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        merges = ReadMerges(loop, slack=0.02)
        t0 = loop.time()
        fired: list[tuple[str, float]] = []
        for i in range(5):
            merges.later(0.05, lambda i=i: fired.append((f"a{i}", loop.time() - t0)))
        merges.later(0.01, lambda: fired.append(("short", loop.time() - t0)))  # a shorter delay re-arms earlier
        await asyncio.sleep(0.005)
        merges.later(0.05, lambda: fired.append(("late", loop.time() - t0)))
        await asyncio.sleep(0.2)
        assert len(merges) == 0
        return fired

    fired = asyncio.run(main())
    names = [name for name, _ in fired]
    assert names == ["short", "a0", "a1", "a2", "a3", "a4", "late"]
    times = dict(fired)
    assert 0.01 <= times["short"] < 0.05
    assert all(0.05 <= times[f"a{i}"] <= 0.05 + 0.02 + 0.03 for i in range(5))
    assert times["late"] >= 0.055
    # The five due together ran from one timer callback, back to back.
    spread = max(times[f"a{i}"] for i in range(5)) - min(times[f"a{i}"] for i in range(5))
    assert spread < 0.002


def test_a_failing_resume_does_not_keep_the_others_paused() -> None:
    async def main() -> list[int]:
        merges = ReadMerges(asyncio.get_running_loop(), slack=0.0)
        done: list[int] = []

        def boom() -> None:
            raise RuntimeError("broken connection")

        merges.later(0.01, lambda: done.append(1))
        merges.later(0.01, boom)
        merges.later(0.01, lambda: done.append(2))
        merges.later(0.03, lambda: done.append(3))
        await asyncio.sleep(0.1)
        return done

    assert asyncio.run(main()) == [1, 2, 3]


def test_one_instance_per_loop_under_uvloop() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        first = for_loop(loop)
        fired = asyncio.Event()
        first.later(0.01, fired.set)
        await asyncio.wait_for(fired.wait(), 1)
        return for_loop(loop) is first

    assert uvloop.run(main())
