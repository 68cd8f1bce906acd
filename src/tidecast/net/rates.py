"""30-second bitrates for the API, sampled once a second off the hot path."""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 30.0


class RateWindow:
    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, recv: int, send: int) -> None:
        samples = self.samples
        samples.append((now, recv, send))
        while len(samples) > 2 and now - samples[0][0] > WINDOW_S:
            samples.popleft()

    def kbps(self) -> tuple[int, int]:
        if len(self.samples) < 2:
            return 0, 0
        t0, r0, s0 = self.samples[0]
        t1, r1, s1 = self.samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return 0, 0
        return max(0, int((r1 - r0) * 8 / 1000 / dt)), max(0, int((s1 - s0) * 8 / 1000 / dt))


class Rates:
    """Rate windows keyed by stream id, vhost name, or "" for the whole server."""

    def __init__(self) -> None:
        self.windows: dict[str, RateWindow] = {}

    def add(self, key: str, recv: int, send: int, now: float | None = None) -> None:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = RateWindow()
        window.add(time.monotonic() if now is None else now, recv, send)

    def kbps(self, key: str) -> tuple[int, int]:
        window = self.windows.get(key)
        return window.kbps() if window else (0, 0)

    def forget(self, keep: set[str]) -> None:
        for key in [k for k in self.windows if k not in keep]:
            del self.windows[key]
