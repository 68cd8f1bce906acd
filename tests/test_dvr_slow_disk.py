"""A disk that blocks DVR writes delays the recording only: players, the publisher and the API go on.

As in test_hls_slow_disk.py, the stand-in for a volume that stops answering (an NFS server away, an
EBS volume out of burst credits) is a named pipe at the temporary name of the recording: opening it for
writing blocks in the kernel until someone reads it. While the DVR wrote on the event loop, that open
froze every connection of the server.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import Publisher, TidecastProcess, wait_stream_live
from testkit.players import read_fifo, serving_while

from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags

Factory = Callable[..., TidecastProcess]

DVR = "dvr {{ enabled on; dvr_plan session; dvr_path {path}/[app]/[stream].flv; }}"
BLOCKED_S = 4.0


def test_blocked_recording_stalls_the_file_but_not_players_or_api(
    tidecast: Factory, clip: Path, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    (rec / "live").mkdir(parents=True)
    fifo = rec / "live" / ".nas.flv.tmp"  # the recording's temporary name (dvr/paths.py temp_path)
    os.mkfifo(fifo)
    srv = tidecast(vhost=DVR.format(path=rec))
    with Publisher(clip, f"{srv.rtmp}/live/nas"):
        wait_stream_live(srv, "nas")
        api_waits, kept_up = serving_while(srv, "nas", BLOCKED_S)
        assert max(api_waits) < 1.0, f"the API took {max(api_waits):.2f}s while the DVR disk was blocked"
        assert kept_up, "a player starved while the DVR disk was blocked"
        reader, got = read_fifo(fifo)
        # Once the disk answers, what was gathered meanwhile is written, in order, from the FLV header on.
        time.sleep(2.0)
    # The publisher has gone: the recording is closed, so the pipe's reader sees its end. (Its metadata
    # cannot be patched in place on a pipe: that last step fails, and is logged, as it would on a disk
    # that failed then.)
    reader.join(15)
    assert not reader.is_alive(), "the recording was never closed"
    assert got and got[0].startswith(b"FLV\x01") and len(got[0]) > 100_000, f"{len(got[0]) if got else 0} bytes"
    tags = list(iter_flv_tags(got[0]))
    assert {t for t, _, _ in tags} >= {TAG_AUDIO, TAG_VIDEO}, "audio and video recorded"
    media = [ts for t, ts, _ in tags if t in (TAG_AUDIO, TAG_VIDEO)]
    assert media[-1] - media[0] > (BLOCKED_S + 1) * 1000, "the media of the blocked time were kept and written"


def test_a_disk_far_behind_drops_the_recording_instead_of_holding_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clip: Path
) -> None:
    """The worker holds what a blocked disk has not taken; past MAX_FILE_BACKLOG (made small here) the
    recording in progress is dropped, logged once, and no new file is opened while the disk is behind."""
    import asyncio

    from tidecast.config import Dvr
    from tidecast.dvr import dvr_recorder_for
    from tidecast.dvr import recorder as recorder_module
    from tidecast.filework import FileWorker

    monkeypatch.setattr(recorder_module, "MAX_FILE_BACKLOG", 16 * 1024)
    (tmp_path / "live").mkdir()
    fifo = tmp_path / "live" / ".cam.flv.tmp"
    os.mkfifo(fifo)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = FileWorker(loop.call_soon_threadsafe, name="test-dvr-files", defer=loop.call_soon)
        settings = Dvr(enabled=True, dvr_path=str(tmp_path / "[app]/[stream].flv"))
        recorder = dvr_recorder_for(settings, "v", "live", "cam", files=worker)
        assert recorder is not None
        recorder.on_publish()
        now = time.time()
        for type_id, ts, payload in iter_flv_tags(clip.read_bytes()):
            if type_id in (TAG_AUDIO, TAG_VIDEO):
                recorder.on_message(type_id, ts, payload)
                recorder.tick(now + ts / 1000.0)
            await asyncio.sleep(0)
        assert recorder.file is None, "the recording was dropped"
        assert worker.backlog() > 16 * 1024, "the worker still waits for the blocked disk"
        reader, _ = read_fifo(fifo)  # the disk answers: what was queued is written, then the dropped file goes
        assert await worker.drain(10.0)
        worker.close(1.0)
        reader.join(5)
        recorder.on_unpublish()

    with caplog.at_level(logging.ERROR, logger="tidecast.dvr"):
        asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.name == "tidecast.dvr" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "MiB behind" in errors[0] and "v/live/cam" in errors[0], errors
    assert not list((tmp_path / "live").glob("*.flv")), "no final file of a dropped recording"
