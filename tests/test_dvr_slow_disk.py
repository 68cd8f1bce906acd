"""A disk that blocks DVR writes delays the recording only: players, the publisher and the API go on.

As in test_hls_slow_disk.py, the stand-in for a volume that stops answering (an NFS server away, an
EBS volume out of burst credits) is a named pipe at the temporary name of the recording: opening it for
writing blocks in the kernel until someone reads it. While the DVR wrote on the event loop, that open
froze every connection of the server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from testkit.helpers import Publisher, TidecastProcess, wait_stream_live
from testkit.players import RtmpPlayer, keeps_up

from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, iter_flv_tags

Factory = Callable[..., TidecastProcess]

DVR = "dvr {{ enabled on; dvr_plan session; dvr_path {path}/[app]/[stream].flv; }}"
BLOCKED_S = 4.0


def _drain(fifo: Path, got: list[bytes]) -> None:
    with open(fifo, "rb") as reader:  # unblocks the worker's open
        got.append(reader.read())


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
        player = RtmpPlayer.on(srv, "nas")
        try:
            start = time.monotonic()
            api_waits = []
            while time.monotonic() - start < BLOCKED_S:
                asked = time.monotonic()
                streams = srv.api_json("/api/v1/streams")["streams"]
                api_waits.append(time.monotonic() - asked)
                assert any(s["name"] == "nas" and s["publish"]["active"] for s in streams)
                time.sleep(0.25)
            end = time.monotonic()
            assert max(api_waits) < 1.0, f"the API took {max(api_waits):.2f}s while the DVR disk was blocked"
            assert keeps_up(player, start + 1.0, end), "a player starved while the DVR disk was blocked"
        finally:
            player.close()
        got: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(fifo, got), daemon=True)
        reader.start()
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
