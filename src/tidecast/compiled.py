"""Which of tidecast's modules run as C: the optional mypyc build of the per-message path.

`TIDECAST_COMPILE=1 pip install .` compiles the modules listed here with mypyc (setup.py reads this
list). They are ordinary Python sources, type-checked with mypy, and run unchanged as Python without
the build. Compiled, the chunk parser takes 1.8-2.6x less time per message, the TS muxer a quarter
less, and a server ingesting 1,000 streams about 30 % less CPU (docs/performance.md, "The compiled build").

This module imports nothing from tidecast, so setup.py can read it before the package is installed.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

# The sans-I/O path every published message takes, and the muxers behind it. Nothing in here may be
# subclassed or monkeypatched by interpreted code: compiled classes refuse it.
MODULES = (
    "tidecast.codec.aac",
    "tidecast.codec.avc",
    "tidecast.codec.flv",
    "tidecast.codec.mp4",
    "tidecast.codec.mpegts",
    "tidecast.rtmp.constants",
    "tidecast.rtmp.chunk",
    "tidecast.rtmp.session",
    "tidecast.live.client",
    "tidecast.live.codecs",
    "tidecast.live.limits",
    "tidecast.live.packet",
    "tidecast.live.player",
    "tidecast.live.stream",
    "tidecast.hls.fmp4",
    "tidecast.hls.segmenter",
    "tidecast.dvr.recorder",
    "tidecast.net.formats",
)


_UNPACK_SLACK_S = 5.0


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """The listed modules, of those imported so far, that were loaded from a compiled extension."""
    loaded = (sys.modules.get(name) for name in MODULES)
    return [m.__name__ for m in loaded if m is not None and _is_extension(getattr(m, "__file__", "") or "")]


def stale_extensions() -> list[str]:
    """Compiled modules older than the source beside them: an in-place build that no longer runs the
    code in the tree (rebuild it, or delete the .so files)."""
    stale = []
    for name in compiled_modules():
        path = sys.modules[name].__file__ or ""
        source = os.path.join(os.path.dirname(path), os.path.basename(path).split(".", 1)[0] + ".py")
        # A wheel's files are unpacked in any order within a moment; an edit comes later than that.
        if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(path) + _UNPACK_SLACK_S:
            stale.append(f"{path} (older than {source})")
    return stale
