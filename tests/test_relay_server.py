"""The relays inside a real `tidecast serve`: the issue's acceptance checks, end to end."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.helpers import Publisher, TidecastProcess, ffprobe_json, http_get, wait_for, wait_stream_live

Start = Callable[..., TidecastProcess]


def live(server: TidecastProcess, name: str) -> bool:
    try:
        streams = server.api_json("/api/v1/streams?count=100")["streams"]
    except OSError:
        return False
    return any(s["name"] == name and s["publish"]["active"] and s["video"] is not None for s in streams)


def processes(server: TidecastProcess) -> list[dict[str, Any]]:
    return list(server.api_json("/api/v1/relays")["processes"])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def size_of(url: str) -> tuple[int, int]:
    video = next(s for s in ffprobe_json(url)["streams"] if s["codec_type"] == "video")
    return int(video["width"]), int(video["height"])


def test_forward_from_a_to_b_plays_on_b_and_resumes_after_b_restarts(tidecast: Start, clip: Path) -> None:
    b = tidecast("b")
    a = tidecast("a", vhost=f"forward {{ enabled on; destination {b.rtmp[7:]}; }}")
    with Publisher(clip, f"{a.rtmp}/live/livestream"):
        wait_stream_live(a)
        wait_for(lambda: live(b, "livestream"), 15, what="the forward on B")
        assert size_of(f"{b.rtmp}/live/livestream") == (320, 240)
        assert b.proc is not None
        b.proc.kill()
        b.proc.wait()
        time.sleep(1.0)
        b.start()
        wait_for(lambda: live(b, "livestream"), 20, what="the forward to resume on the restarted B")
        assert size_of(f"{b.rtmp}/live/livestream") == (320, 240)
        _, metrics, _ = http_get(f"{a.api}/metrics")
        assert b"tidecast_forward_reconnects" in metrics


def test_exec_transcode_and_their_processes_in_the_api_and_after_kill_9(
    tidecast: Start, clip: Path, tmp_path: Path
) -> None:
    vhost = (
        "hls { enabled on; hls_fragment 1; hls_window 10; hls_path ./html; }\n"
        "exec { enabled on; publish ffmpeg -v error -i [url] -c copy -flush_packets 1 -y ./[stream].flv; }\n"
        "transcode { enabled on; ffmpeg ffmpeg; engine ld { enabled on; vcodec libx264; vbitrate 150; vfps 15;"
        " vwidth 160; vheight 120; vprofile baseline; vpreset ultrafast; vparams { g 15; } acodec aac; abitrate 32;"
        " output rtmp://127.0.0.1:[port]/[app]?vhost=[vhost]/[stream]_[engine]; } }\n"
    )
    a = tidecast("a", vhost=vhost)
    recorded = a.workdir / "livestream.flv"
    with Publisher(clip, f"{a.rtmp}/live/livestream") as publisher:
        wait_stream_live(a)
        wait_for(lambda: live(a, "livestream_ld"), 20, what="livestream_ld")
        assert size_of(f"{a.rtmp}/live/livestream_ld") == (160, 120)
        m3u8 = a.html / "live" / "livestream_ld.m3u8"
        wait_for(lambda: m3u8.exists() and m3u8.read_text().count("#EXTINF") >= 2, 20, what="the _ld playlist")
        assert size_of(f"{a.http}/live/livestream_ld.m3u8") == (160, 120)
        wait_for(lambda: recorded.exists() and recorded.stat().st_size > 50_000, 15, what="the exec's file")
        running = {p["kind"]: p for p in processes(a) if p["state"] == "running"}
        assert {"exec", "transcode"} <= set(running)
        publisher.stop()
        wait_for(lambda: not any(p["stream"] == "livestream" for p in processes(a)), 10, what="the stops")
        size = recorded.stat().st_size
        time.sleep(1.0)
        assert recorded.stat().st_size == size
    # Publish again, then kill -9 the server: nothing it started survives it.
    with Publisher(clip, f"{a.rtmp}/live/livestream"):
        wait_stream_live(a)
        wait_for(lambda: len([p for p in processes(a) if p["state"] == "running"]) >= 2, 15, what="the processes")
        pids = [int(p["pid"]) for p in processes(a) if p["pid"]]
        assert pids and all(alive(pid) for pid in pids)
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), 5, what="every ffmpeg to die with tidecast")


def test_an_ingest_of_the_clip_becomes_a_live_stream(tidecast: Start, clip: Path) -> None:
    vhost = (
        f"ingest clip {{ enabled on; input {{ type file; url {clip}; }} ffmpeg ffmpeg;"
        " engine { enabled off; output rtmp://127.0.0.1:[port]/live/ingested; } }"
    )
    a = tidecast("a", vhost=vhost)
    wait_for(lambda: live(a, "ingested"), 20, what="the ingest")
    assert size_of(f"{a.rtmp}/live/ingested") == (320, 240)
    [proc] = processes(a)
    assert proc["kind"] == "ingest" and proc["state"] == "running"
