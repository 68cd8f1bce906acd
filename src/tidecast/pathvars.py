"""SRS's variables in file names and commands: [vhost] [app] [stream] [seq] and the date ones.

HLS, DVR and the relays expand the same names the same way, from here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping


def substitute(template: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        template = template.replace(f"[{name}]", value)
    return template


def date_vars(template: str, now: float | None = None, utc: bool = False) -> str:
    """[2006] [01] [02] [15] [04] [05] [999] [timestamp]: Go's reference time as names."""
    if "[" not in template:
        return template
    now = time.time() if now is None else now
    t = time.gmtime(now) if utc else time.localtime(now)
    ms = int(now * 1000)
    values = {
        "2006": f"{t.tm_year:04d}",
        "01": f"{t.tm_mon:02d}",
        "02": f"{t.tm_mday:02d}",
        "15": f"{t.tm_hour:02d}",
        "04": f"{t.tm_min:02d}",
        "05": f"{t.tm_sec:02d}",
        "999": f"{ms % 1000:03d}",
        "timestamp": str(ms),
    }
    return substitute(template, values)


def stream_path(
    template: str, vhost: str, app: str, stream: str, seq: int | None = None, now: float | None = None
) -> str:
    """[vhost] [app] [stream] [seq] and the date variables (local time), as in hls_ts_file or dvr_path."""
    out = template.replace("[vhost]", vhost).replace("[app]", app).replace("[stream]", stream)
    if seq is not None:
        out = out.replace("[seq]", str(seq))
    return date_vars(out, now)
