"""What a vhost, app or stream name may be, checked once for every protocol.

Names become file names (HLS, DVR), log fields and URLs: they must never carry
a path out of its directory or forge a log line. The allowed alphabet is SRS's
in spirit (letters, digits, `-_.` and `/` inside app names) with a length cap.
"""

from __future__ import annotations

import re

MAX_NAME = 255
_STREAM = re.compile(r"[A-Za-z0-9_\-.~@+=]+")
_APP = re.compile(r"[A-Za-z0-9_\-.~@+=]+(?:/[A-Za-z0-9_\-.~@+=]+)*")
_VHOST = re.compile(r"[A-Za-z0-9_\-.:\[\]]+")


def check_name(kind: str, value: str, pattern: re.Pattern[str]) -> str | None:
    if not value:
        return f"empty {kind} name"
    if len(value) > MAX_NAME:
        return f"{kind} name longer than {MAX_NAME} characters"
    if pattern.fullmatch(value) is None:
        return f"{kind} name {sanitize(value)!r} has characters outside A-Z a-z 0-9 and -_.~@+="
    if any(part in (".", "..") for part in value.split("/")):
        return f"{kind} name {sanitize(value)!r} has a . or .. path segment"
    return None


def check_target(vhost: str, app: str, stream: str | None) -> str | None:
    """Why these names are refused, or None; `stream` None for a connect."""
    return (
        check_name("vhost", vhost, _VHOST)
        or check_name("app", app, _APP)
        or (check_name("stream", stream, _STREAM) if stream is not None else None)
    )


def sanitize(value: str, limit: int = 80) -> str:
    """A name as it may appear in a log line: no control characters, bounded."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return cleaned + ("…" if len(value) > limit else "")


MAX_PATH = 1024


def check_rel_path(value: str) -> str | None:
    """Why a relative file path from a URL (an HLS file under hls_path) is refused, or None.

    The names' alphabet in every `/`-separated part, and no empty, `.` or `..` part: a path that passes
    stays inside whatever directory (or origin URL) it is joined to, whoever decodes it next."""
    if not value:
        return "empty path"
    if len(value) > MAX_PATH:
        return f"path longer than {MAX_PATH} characters"
    if value.startswith("/"):
        return f"absolute path {sanitize(value)!r}"
    for part in value.split("/"):
        if part in ("", ".", ".."):
            return f"path {sanitize(value)!r} has an empty, . or .. segment"
        if _STREAM.fullmatch(part) is None:
            return f"path {sanitize(value)!r} has characters outside A-Z a-z 0-9 and -_.~@+="
    return None
