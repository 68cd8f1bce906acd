"""The process supervisor with real processes: restarts with backoff, no zombies, no orphans."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from testkit.helpers import child_python_path, wait_for

from tidecast.relay.supervisor import RestartPolicy, Supervised, Supervisor


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of every process whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append((int(entry), fields[0]))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dying_process_is_restarted_with_backoff_then_given_up_and_leaves_no_zombie(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exits: list[float] = []

    async def main() -> Supervised:
        proc = Supervised(
            "exec",
            "v/live/s",
            ["sh", "-c", "echo boom on stderr >&2; exit 3"],
            policy=RestartPolicy(initial=0.2, factor=2.0, cap=5.0, stable_after=5.0, max_failures=4),
            on_exit=lambda rc: exits.append(time.monotonic()),
        )
        proc.start()
        deadline = time.monotonic() + 10
        while proc.state != "failed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await proc.stop()
        return proc

    with caplog.at_level(logging.INFO, logger="tidecast.relay"):
        proc = asyncio.run(main())
    assert proc.state == "failed" and proc.restarts == 3 and proc.last_exit == 3
    assert len(exits) == 4
    gaps = [b - a for a, b in itertools.pairwise(exits)]
    # 0.2, 0.4, 0.8 s of backoff, plus the time to fork a shell.
    assert 0.15 < gaps[0] < 0.6 and 0.35 < gaps[1] < 0.9 and 0.7 < gaps[2] < 1.5, gaps
    assert gaps[0] < gaps[1] < gaps[2]
    messages = [r.getMessage() for r in caplog.records]
    assert "exec v/live/s: boom on stderr" in messages
    assert any("gave up after 4 quick exits" in m and "boom on stderr" in m for m in messages)
    assert [c for c in children_of(os.getpid()) if c[1] == "Z"] == []


def test_stop_terms_the_group_and_kills_what_ignores_it() -> None:
    async def main() -> tuple[Supervised, list[int], float]:
        # A shell that ignores SIGTERM, with a child of its own in its group.
        proc = Supervised(
            "exec", "v/live/s", ["sh", "-c", "trap '' TERM; sleep 300 & wait; sleep 300"], stop_timeout=0.5
        )
        proc.start()
        while proc.state != "running":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert proc.pid is not None
        group = [p for p, _ in children_of(proc.pid)] + [proc.pid]
        began = time.monotonic()
        await proc.stop()
        return proc, group, time.monotonic() - began

    proc, group, took = asyncio.run(main())
    assert len(group) == 2
    assert 0.4 < took < 3.0
    assert proc.state == "stopped" and proc.last_exit == -signal.SIGKILL
    wait_for(lambda: not any(alive(p) for p in group), 5, what="the whole process group to be gone")


def test_an_ffmpeg_stopped_with_its_stream_exits_cleanly_and_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out.flv"

    async def main() -> tuple[list[dict[str, object]], list[dict[str, object]], str]:
        sup = Supervisor()
        argv = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-y", str(out)]
        proc = sup.add(Supervised("transcode", "v/live/s ld", argv, labels={"stream": "s"}))
        while proc.state != "running":
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)
        running = sup.describe()
        metrics = "".join(f"{m.name}{s.labels}{s.value}\n" for m in sup.metrics() for s in m.samples)
        await sup.close()
        return running, [proc.describe()], metrics

    running, stopped, metrics = asyncio.run(main())
    assert running[0]["state"] == "running" and isinstance(running[0]["pid"], int)
    assert running[0]["command"].startswith("ffmpeg -v error") and running[0]["stream"] == "s"  # type: ignore[union-attr]
    assert stopped[0]["state"] == "stopped" and stopped[0]["last_exit"] in (0, 255)
    assert "tidecast_relay_processes{'kind': 'transcode', 'name': 'v/live/s ld', 'state': 'running'}1" in metrics
    # ffmpeg got SIGTERM, not SIGKILL: it finished the file, which reads back.
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_format", str(out)], capture_output=True, text=True)
    assert probe.returncode == 0 and "duration=" in probe.stdout


PARENT = textwrap.dedent(
    """
    import asyncio, sys, uvloop
    from tidecast.relay.supervisor import Supervised

    async def main():
        argv = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "null", "-"]
        proc = Supervised("ingest", "test", argv)
        proc.start()
        while proc.pid is None:
            await asyncio.sleep(0.02)
        print(proc.pid, flush=True)
        await asyncio.sleep(300)

    loop_factory = uvloop.new_event_loop if sys.argv[1] == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    """
)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_no_ffmpeg_outlives_a_kill_9_of_its_supervising_parent(tmp_path: Path, loop: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": child_python_path()}
    parent = subprocess.Popen([sys.executable, str(script), loop], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert parent.stdout is not None
        ffmpeg_pid = int(parent.stdout.readline())
        assert alive(ffmpeg_pid)
        with open(f"/proc/{ffmpeg_pid}/cmdline") as f:
            assert f.read().split("\0")[0] == "ffmpeg"
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        wait_for(lambda: not alive(ffmpeg_pid), 5, what=f"ffmpeg {ffmpeg_pid} to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_stderr_progress_and_banner_stay_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    script = (
        r"printf 'ffmpeg version 5.1\n  built with gcc\nframe=  1 fps=0.0\rframe=  2 fps=0.0\r[flv] real problem\n' >&2"
    )

    async def main() -> Supervised:
        proc = Supervised("transcode", "v/live/s ld", ["sh", "-c", script + "; sleep 30"])
        proc.start()
        while "real problem" not in "".join(proc.stderr_tail):
            await asyncio.sleep(0.02)
        await proc.stop()
        return proc

    with caplog.at_level(logging.INFO, logger="tidecast.relay"):
        proc = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transcode v/live/s ld: ")]
    assert [line for line in lines if "started pid" not in line] == ["transcode v/live/s ld: [flv] real problem"]
    assert proc.describe()["progress"] == "frame=  2 fps=0.0"
