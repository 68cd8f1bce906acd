"""The file worker: order, errors heard on the loop, the backlog, draining; and a muxer that stops
opening segments while its disk is too far behind."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from pathlib import Path

import pytest

from tidecast import config
from tidecast.codec.flv import FlvReader
from tidecast.filework import INLINE, FileWorker
from tidecast.hls import segmenter
from tidecast.hls.fmp4 import Fmp4Muxer
from tidecast.hls.segmenter import HlsMuxer
from tidecast.hls.store import HlsStore


@pytest.mark.parametrize("batched", [False, True])
def test_operations_run_in_order_and_errors_come_back_on_the_loop(batched: bool) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        files = FileWorker(loop.call_soon_threadsafe, defer=loop.call_soon if batched else None)
        ran: list[int] = []
        heard: list[tuple[int, object, bool]] = []
        main = threading.get_ident()

        def op(i: int) -> None:
            assert threading.get_ident() != main
            ran.append(i)
            if i == 3:
                raise PermissionError(13, "refused", f"/x/{i}")

        for i in range(6):
            files.submit(
                lambda i=i: op(i),  # type: ignore[misc]
                size=100,
                done=lambda error, i=i: heard.append((i, error, threading.get_ident() == main)),  # type: ignore[misc]
                errors_only=i != 5,
            )
        assert await files.drain(5.0)
        assert ran == list(range(6))
        # Only the failure (errors_only) and the one that asked for every outcome, on the loop's thread.
        assert [(i, type(e).__name__, on_loop) for i, e, on_loop in heard] == [
            (3, "PermissionError", True),
            (5, "NoneType", True),
        ]
        assert files.backlog() == 0 and files.pending() == 0
        assert files.close(1.0)

    asyncio.run(scenario())


def test_a_stuck_operation_holds_the_backlog_and_bounds_the_quit(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        files = FileWorker(asyncio.get_running_loop().call_soon_threadsafe)
        release = threading.Event()
        files.submit(lambda: (_ for _ in ()).throw(RuntimeError("a bug")))  # logged; later ones still run
        files.submit(release.wait, size=1000)
        files.submit(lambda: None, size=500)
        await asyncio.sleep(0.1)
        assert files.backlog() == 1500 and files.pending() == 2
        assert not await files.drain(0.2)
        release.set()
        assert await files.drain(5.0)
        assert files.backlog() == 0
        assert files.close(1.0)

    with caplog.at_level(logging.ERROR, "tidecast.files"):
        asyncio.run(scenario())
    assert "file operation failed" in caplog.text and "a bug" in caplog.text


def test_inline_raises_where_it_runs() -> None:
    heard: list[object] = []
    INLINE.submit(lambda: None, done=heard.append)
    INLINE.submit(lambda: None, done=heard.append, errors_only=True)
    assert heard == [None]
    with pytest.raises(OSError):
        INLINE.submit(lambda: open("/nonexistent-dir/x", "rb").close())


def _blocked_muxer(
    tmp_path: Path, variant: str, name: str, fragment: float
) -> tuple[FileWorker, HlsMuxer, threading.Event]:
    """A publishing muxer of `variant` writing through a file worker whose disk has stopped answering
    (until the event is set)."""
    files = FileWorker(asyncio.get_running_loop().call_soon_threadsafe)
    settings = dataclasses.replace(
        config.Hls(enabled=True, hls_dispose=0.0, hls_variant=variant), hls_path=str(tmp_path), hls_fragment=fragment
    )
    muxer = (
        HlsMuxer(settings, "v", "live", name, files)
        if variant == "mpegts"
        else Fmp4Muxer(settings, "v", "live", name, HlsStore(), files)
    )
    muxer.on_publish()
    release = threading.Event()
    files.submit(release.wait)  # the disk stops answering
    return files, muxer, release


@pytest.mark.parametrize("variant", ["mpegts", "lowlatency"])
def test_muxer_skips_segments_while_the_disk_is_behind(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    tags = [t for t in FlvReader().feed(clip.read_bytes()) if t[0] in (8, 9)]
    limit = 60_000
    monkeypatch.setattr(segmenter, "MAX_FILE_BACKLOG", limit)
    keyframes = sum(1 for t, _, p in tags if t == 9 and p[:2] == b"\x17\x01")

    async def scenario() -> None:
        files, muxer, release = _blocked_muxer(tmp_path, variant, "behind", 1.0)
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts, payload)
        # Past the limit no segment opens (and the open one is dropped): the backlog stops near it.
        assert muxer.file is None and muxer.sequence < keyframes - 1
        held = files.backlog()
        assert limit < held < 3 * limit
        assert caplog.text.count("behind; skipping segments") == 1  # once, not per skipped keyframe
        made = muxer.sequence
        release.set()
        assert await files.drain(10.0)
        # The disk caught up: the next keyframe opens a segment again, and it is written.
        offset = tags[-1][1] + 40
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts + offset, payload)
        muxer.on_unpublish()
        assert await files.drain(10.0)
        assert files.close(1.0)
        listed = muxer.playlist.segments
        assert len(listed) > muxer.sequence // 2
        assert all((tmp_path / "live" / seg.uri).is_file() for seg in listed)
        # The skipped media is in no segment: the first one after it starts a new timeline. (Later ones
        # may too: with a limit this small, the worker can be a hand-over behind again for a moment.)
        new_timelines = [seg.sequence for seg in listed if seg.discontinuity]
        assert new_timelines[:1] == [made], [(seg.sequence, seg.discontinuity) for seg in listed]

    with caplog.at_level(logging.WARNING, "tidecast.hls"):
        asyncio.run(scenario())


@pytest.mark.parametrize("variant", ["mpegts", "lowlatency"])
def test_a_segment_the_disk_falls_behind_on_is_dropped_not_held(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    """One long segment (18 s of media, `hls_fragment` 60) while the disk stops answering: past the
    limit the rest of it is not queued (before, all of it waited in memory for the disk); once the disk
    is back the segment is not renamed into place but listed as a gap, and its temporary file is gone."""
    clip_tags = [t for t in FlvReader().feed(clip.read_bytes()) if t[0] in (8, 9)]
    span = clip_tags[-1][1] + 40
    tags = [(t, ts + loop * span, p) for loop in range(3) for t, ts, p in clip_tags]
    total = sum(len(p) for _, _, p in tags)
    limit = 60_000
    monkeypatch.setattr(segmenter, "MAX_FILE_BACKLOG", limit)

    async def scenario() -> None:
        files, muxer, release = _blocked_muxer(tmp_path, variant, "long", 60.0)
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts, payload)
        assert muxer.file is not None and muxer.sequence == 0  # still the first segment
        held = files.backlog()
        biggest = max(len(p) for _, _, p in tags)
        # At most what was queued before the limit was crossed: one hand-over of FILE_BUFFER (or an
        # LL-HLS part) over it. Holding the segment would be all of the media, in TS or fMP4.
        assert held <= limit + segmenter.FILE_BUFFER + 2 * biggest < total // 2, (held, total)
        release.set()
        muxer.on_unpublish()
        assert await files.drain(10.0)
        assert files.close(1.0)
        (gap,) = muxer.playlist.segments
        assert gap.gap and not (tmp_path / "live" / gap.uri).exists()
        assert not list((tmp_path / "live").glob("*.tmp")), "the dropped segment's temporary file was left"

    with caplog.at_level(logging.WARNING, "tidecast.hls"):
        asyncio.run(scenario())
    assert "MiB behind, so the segment was dropped" in caplog.text and "v/live/long" in caplog.text
