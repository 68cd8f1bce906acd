"""The build under test: pure Python, or the mypyc build of the per-message path (setup.py).

scripts/test.sh runs the suite against the compiled build with TIDECAST_EXPECT_COMPILED=1, then the
sans-I/O units again as pure Python. These tests make sure each run tests what it says it does.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import TidecastProcess, http_get

from tidecast.compiled import MODULES, compiled_modules, stale_extensions

EXPECT_COMPILED = os.environ.get("TIDECAST_EXPECT_COMPILED") == "1"


def _import_all() -> None:
    for name in MODULES:
        importlib.import_module(name)


def test_every_listed_module_is_of_the_build_asked_for() -> None:
    _import_all()
    assert compiled_modules() == (list(MODULES) if EXPECT_COMPILED else [])
    assert stale_extensions() == []


def test_the_server_says_which_build_it_runs(tidecast: Callable[..., TidecastProcess]) -> None:
    srv = tidecast()
    status, body, _ = http_get(f"{srv.api}/api/v1/summaries")
    assert status == 200
    assert json.loads(body)["data"]["self"]["compiled"] is EXPECT_COMPILED
    ready = next(ln for ln in srv.log_path.read_text().splitlines() if " ready: " in ln)
    assert (f"compiled ({len(MODULES)} modules)" if EXPECT_COMPILED else "pure Python") in ready


@pytest.mark.skipif(not EXPECT_COMPILED, reason="needs the compiled build")
def test_a_source_edited_after_the_build_is_named() -> None:
    _import_all()
    module = importlib.import_module("tidecast.rtmp.chunk")
    ext = Path(module.__file__ or "")
    source = ext.with_name("chunk.py")
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, ext.stat().st_mtime + 60))
        assert stale_extensions() == [f"{ext} (older than {source})"]
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert stale_extensions() == []
