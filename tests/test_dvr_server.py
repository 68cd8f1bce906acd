"""DVR in a real tidecast process: ffmpeg publishes over RTMP, the files are read back with ffprobe."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import Publisher, TidecastProcess, decode_errors, ffprobe_json, wait_for, wait_stream_live

Factory = Callable[..., TidecastProcess]


def finals(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def temps(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_a_publish_is_recorded_and_reaped_on_unpublish(ext: str, tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=f"dvr {{ enabled on; dvr_path ./rec/[app]/[stream].[timestamp].{ext}; }}")
    with Publisher(clip, f"{srv.rtmp}/live/cam", loops=0) as pub:
        wait_stream_live(srv, "cam")
        wait_for(lambda: temps(srv.workdir / "rec"), what="a temporary recording")
        assert finals(srv.workdir / "rec") == []
        pub.proc.wait(30)  # the 6 s clip, once, in real time
    (path,) = wait_for(lambda: finals(srv.workdir / "rec"), what="the reaped recording")
    assert path.parent == srv.workdir / "rec" / "live" and path.suffix == f".{ext}"
    info = ffprobe_json(str(path))
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=1.0)
    assert decode_errors(path) == ""
    assert temps(srv.workdir / "rec") == []


def test_a_graceful_drain_reaps_the_recording_before_exit(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(
        globals_="grace_start_wait 100; grace_final_wait 100; grace_drain_timeout 2000;",
        vhost="dvr { enabled on; dvr_path ./rec/[stream].mp4; }",
    )
    with Publisher(clip, f"{srv.rtmp}/live/cam", loops=-1):
        wait_stream_live(srv, "cam")
        time.sleep(2)
        srv.signal(signal.SIGQUIT)
        assert srv.proc is not None
        srv.proc.wait(20)
    assert temps(srv.workdir / "rec") == []
    path = srv.workdir / "rec" / "cam.mp4"
    assert decode_errors(path) == ""
    assert float(ffprobe_json(str(path))["format"]["duration"]) >= 1.5


def test_kill_9_of_the_server_leaves_only_a_temporary_file(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost="dvr { enabled on; dvr_path ./rec/[stream].mp4; }")
    with Publisher(clip, f"{srv.rtmp}/live/cam", loops=-1):
        wait_stream_live(srv, "cam")
        wait_for(lambda: temps(srv.workdir / "rec"), what="a temporary recording")
        srv.signal(signal.SIGKILL)
        assert srv.proc is not None
        srv.proc.wait(10)
    assert finals(srv.workdir / "rec") == []
    assert [p.name for p in temps(srv.workdir / "rec")] == [".cam.mp4.tmp"]


def test_a_reload_that_turns_dvr_off_reaps_the_file(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost="dvr { enabled on; dvr_path ./rec/[stream].flv; }")
    with Publisher(clip, f"{srv.rtmp}/live/cam", loops=-1):
        wait_stream_live(srv, "cam")
        wait_for(lambda: temps(srv.workdir / "rec"), what="a temporary recording")
        time.sleep(1.5)
        srv.conf.write_text(srv.conf.read_text().replace("dvr { enabled on;", "dvr { enabled off;"))
        srv.signal(signal.SIGHUP)
        (path,) = wait_for(lambda: finals(srv.workdir / "rec"), what="the file reaped by the reload")
        assert temps(srv.workdir / "rec") == []
    assert decode_errors(path) == "" and path.name == "cam.flv"
