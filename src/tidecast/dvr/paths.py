"""DVR file names: SRS's `dvr_path` variables, its directory-only form, and the root a name must stay in."""

from __future__ import annotations

import os

from tidecast.pathvars import stream_path

# SRS 1.0's form: a dvr_path that names no .flv/.mp4 file is a directory, and
# the file in it is this (SRS appends the same).
DIRECTORY_FORM_FILE = "[stream].[timestamp].flv"
EXTENSIONS = (".flv", ".mp4")


class DvrPathError(ValueError):
    """A stream's dvr_path would leave the DVR root (or holds a name no file may have)."""


def template_for(dvr_path: str) -> str:
    """The full file template: the directory-only form gets SRS's default file name appended."""
    if dvr_path.endswith(EXTENSIONS):
        return dvr_path
    return dvr_path.rstrip("/") + "/" + DIRECTORY_FORM_FILE


def is_mp4(dvr_path: str) -> bool:
    """MP4 or FLV, chosen by dvr_path's extension, as SRS does."""
    return dvr_path.endswith(".mp4")


def root_of(dvr_path: str) -> str:
    """The fixed directory every file of this dvr_path lies in: the part before the first variable."""
    template = template_for(dvr_path)
    cut = template.find("[")
    fixed = template if cut < 0 else template[:cut]
    directory = fixed if fixed.endswith("/") else os.path.dirname(fixed)
    return os.path.abspath(directory or ".")


def expand(template: str, vhost: str, app: str, stream: str, now: float | None = None) -> str:
    """[vhost] [app] [stream] [timestamp] and the date parts [2006] [01] [02] [15] [04] [05] [999] (local time)."""
    return stream_path(template, vhost, app, stream, None, now)


def file_path(dvr_path: str, vhost: str, app: str, stream: str, now: float | None = None) -> str:
    """The absolute, normalised path of the file to record now; DvrPathError if it escapes the root."""
    root = root_of(dvr_path)
    if not stream:
        raise DvrPathError(f"dvr: {vhost}/{app}: refusing an empty stream name; not recorded")
    for what, value in (("vhost", vhost), ("app", app), ("stream", stream)):
        parts = value.split("/")
        if "\x00" in value or value.startswith("/") or any(p in (".", "..") for p in parts):
            raise DvrPathError(
                f"dvr: {vhost}/{app}/{stream}: refusing the {what} name {value!r}: it could name a file outside "
                f"the DVR directory {root}; not recorded"
            )
    path = os.path.normpath(os.path.abspath(expand(template_for(dvr_path), vhost, app, stream, now)))
    if os.path.commonpath((root, path)) != root or path == root:
        raise DvrPathError(
            f"dvr: {vhost}/{app}/{stream} would record to {path}, outside the DVR directory {root}; "
            "check dvr_path and the stream name; not recorded"
        )
    return path


def temp_path(final: str) -> str:
    """Where a file is written until it is reaped: a hidden name in the same directory (same filesystem, so
    the rename is atomic, and no `*.flv`/`*.mp4` glob of a cleanup job or web server matches it)."""
    directory, name = os.path.split(final)
    return os.path.join(directory, f".{name}.tmp")
