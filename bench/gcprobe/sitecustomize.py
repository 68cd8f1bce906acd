"""A full garbage collection on demand inside a tidecast server that a bench started: how long it stalls.

    PYTHONPATH=bench/gcprobe python bench/ceiling.py --loads 2 --players 5000,9900 --window 60
    touch /tmp/tidecast-gcprobe/go        # as often as wanted while it runs; one collection per touch
    echo types > /tmp/tidecast-gcprobe/go # the same, then the tracked objects' commonest types
    echo owners > /tmp/tidecast-gcprobe/go  # ... and which types hold the lists, dicts, sets and tuples

Python imports `sitecustomize` from PYTHONPATH at start-up, and the benches hand their PYTHONPATH to the
servers they start, so this runs in the server (and in no other process: it checks the command line).
A thread looks for the flag file twice a second; when it is there, the thread runs `gc.collect()`. The
collection holds the interpreter lock as an automatic full collection would, so the event loop stalls
as long as one would stall it. Each collection appends a line to `pauses.txt` beside the flag: wall and
CPU seconds, the server's open descriptors (its players, near enough), and the objects the collector
tracks in generation 2. The directory is $TIDECAST_GCPROBE_DIR, or /tmp/tidecast-gcprobe.

A bench tool, not part of tidecast: the server's own `tidecast_gc_pause_max_seconds` gauge reports
the collections that come by themselves.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import types
from collections import Counter

_DIR = os.environ.get("TIDECAST_GCPROBE_DIR", "/tmp/tidecast-gcprobe")


def _collect_when_asked() -> None:
    flag = os.path.join(_DIR, "go")
    while True:
        time.sleep(0.5)
        try:
            with open(flag) as f:
                ask = f.read()
            os.unlink(flag)
        except OSError:
            continue
        counts = gc.get_count()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        collected = gc.collect()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        line = (
            f"{time.time():.0f} pid={os.getpid()} wall_s={wall:.4f} cpu_s={cpu:.4f} collected={collected}"
            f" fds={len(os.listdir('/proc/self/fd'))} gen2={len(gc.get_objects(2))}"
            f" frozen={gc.get_freeze_count()} counts_before={counts}\n"
        )
        if "types" in ask:
            line += _histogram()
        if "owners" in ask:
            line += _owners()
        with open(os.path.join(_DIR, "pauses.txt"), "a") as out:
            out.write(line)


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _ranked(counts: Counter[str], top: int) -> str:
    return "".join(f"    {n:8d} {key}\n" for key, n in counts.most_common(top))


def _histogram(top: int = 30) -> str:
    """The types the collector tracks most of, by count (this walk is not part of the timed pause)."""
    return _ranked(Counter(_type_name(obj) for obj in gc.get_objects()), top)


def _owners(top: int = 40) -> str:
    """Who holds the tracked builtin containers: (container type, holder type) pairs, commonest first."""
    containers = (list, dict, set, tuple, types.MethodType)
    pairs: Counter[str] = Counter()
    for holder in gc.get_objects():
        for obj in gc.get_referents(holder):
            if type(obj) in containers and gc.is_tracked(obj):
                pairs[f"{type(obj).__name__} in {_type_name(holder)}"] += 1
    return _ranked(pairs, top)


def _is_server() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return b"-m\x00tidecast\x00serve" in f.read()
    except OSError:
        return False


if _is_server() and not getattr(sys, "_tidecast_gcprobe", False):
    sys._tidecast_gcprobe = True  # type: ignore[attr-defined]
    os.makedirs(_DIR, exist_ok=True)
    threading.Thread(target=_collect_when_asked, daemon=True, name="gcprobe").start()
