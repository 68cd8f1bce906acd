"""exec, transcode and ingest managers run in-process against a real tidecast server, with real ffmpeg."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit.helpers import Publisher, TidecastProcess, ffprobe_json, wait_stream_live

from tidecast.config import Config, Engine, parse_text
from tidecast.relay import Relays
from tidecast.relay.exec import ExecManager, command_line
from tidecast.relay.ingest import IngestManager
from tidecast.relay.transcode import TranscodeManager, engine_argv
from tidecast.relay.vars import StreamInfo

Start = Callable[..., TidecastProcess]


def relay_config(server: TidecastProcess, vhost: str) -> Config:
    return parse_text(f"listen {server.rtmp_port};\nvhost __defaultVhost__ {{\n{vhost}\n}}\n")


def live_names(server: TidecastProcess) -> set[str]:
    streams = server.api_json("/api/v1/streams?count=100")["streams"]
    return {s["name"] for s in streams if s["publish"]["active"] and s["video"] is not None}


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def video_of(info: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


# ---------------------------------------------------------------- transcode


LD = """
transcode {
    enabled on;
    ffmpeg ffmpeg;
    engine ld {
        enabled on;
        vcodec libx264; vbitrate 150; vfps 15; vwidth 160; vheight 120; vthreads 1;
        vprofile baseline; vpreset ultrafast;
        vparams { g 15; }
        acodec aac; abitrate 32; asample_rate 44100; achannels 1;
        output rtmp://127.0.0.1:[port]/[app]?vhost=[vhost]/[stream]_[engine];
    }
}
"""


def test_engine_argv_is_built_in_srs_order() -> None:
    engine = Engine(
        name="ld",
        enabled=True,
        perfile=[("re", "")],
        vfilter=[("vf", "scale=iw/2:-2")],
        vcodec="libx264",
        vbitrate=300,
        vfps=20,
        vwidth=769,
        vheight=320,
        vthreads=2,
        vprofile="baseline",
        vpreset="superfast",
        vparams=[("bf", "0")],
        acodec="aac",
        abitrate=45,
        asample_rate=44100,
        achannels=2,
        aparams=[("profile:a", "aac_low")],
    )
    argv = engine_argv("ffmpeg", engine, "rtmp://127.0.0.1:1935/live?vhost=v/s", "rtmp://127.0.0.1:1935/live/s_ld")
    assert argv == [
        "ffmpeg",
        "-re",
        "-f",
        "flv",
        "-i",
        "rtmp://127.0.0.1:1935/live?vhost=v/s",
        "-vf",
        "scale=iw/2:-2",
        "-vcodec",
        "libx264",
        "-b:v",
        "300000",
        "-r",
        "20.00",
        "-s",
        "768x320",
        "-aspect",
        "768:320",
        "-threads",
        "2",
        "-profile:v",
        "baseline",
        "-preset",
        "superfast",
        "-bf",
        "0",
        "-acodec",
        "aac",
        "-b:a",
        "45000",
        "-ar",
        "44100",
        "-ac",
        "2",
        "-profile:a",
        "aac_low",
        "-f",
        "flv",
        "-y",
        "rtmp://127.0.0.1:1935/live/s_ld",
    ]
    copy = Engine(vcodec="copy", acodec="copy", aparams=[("bsf:a", "aac_adtstoasc"), ("profile:a", "x")])
    assert engine_argv("ff", copy, "rtmp://h/a?vhost=v/s", "out.flv") == (
        [
            "ff",
            "-f",
            "flv",
            "-i",
            "rtmp://h/a?vhost=v/s",
            "-vcodec",
            "copy",
            "-acodec",
            "copy",
            "-bsf:a",
            "aac_adtstoasc",
            "-f",
            "flv",
            "-y",
            "out.flv",
        ]
    )
    audio_only = Engine(vcodec="vn", acodec="aac", oformat="off")
    assert engine_argv("ff", audio_only, "udp://x", "o.aac") == [
        "ff",
        "-i",
        "udp://x",
        "-vn",
        "-acodec",
        "aac",
        "-y",
        "o.aac",
    ]
    with pytest.raises(ValueError, match="vn and acodec an"):
        engine_argv("ff", Engine(vcodec="vn", acodec="an"), "i", "o")
    with pytest.raises(ValueError, match="needs vprofile"):
        engine_argv("ff", Engine(vcodec="libx264", acodec="copy"), "i", "o")


def test_a_transcode_engine_makes_stream_ld_at_its_size_over_rtmp_and_hls(
    tidecast: Start, clip: Path, tmp_path: Path
) -> None:
    hls = "hls { enabled on; hls_fragment 1; hls_window 10; hls_path ./html; }"
    server = tidecast(vhost=hls)
    config = relay_config(server, LD)
    info = StreamInfo("__defaultVhost__", "live", "livestream", server.rtmp_port)
    manager = TranscodeManager(config)
    found: dict[str, Any] = {}

    async def main() -> None:
        try:
            await transcode()
        finally:
            await manager.close()

    async def transcode() -> None:
        manager.on_publish(info)
        [proc] = manager.processes(*info.key)
        found["argv"] = proc.argv
        await until(lambda: "livestream_ld" in live_names(server), 20, "livestream_ld to be live")
        found["rtmp"] = await asyncio.to_thread(ffprobe_json, f"{server.rtmp}/live/livestream_ld")
        m3u8 = server.html / "live" / "livestream_ld.m3u8"
        await until(lambda: m3u8.exists() and m3u8.read_text().count("#EXTINF") >= 2, 20, "the _ld playlist")
        found["hls"] = await asyncio.to_thread(ffprobe_json, f"{server.http}/live/livestream_ld.m3u8")
        # The output is a stream of its own: its publish is not transcoded again.
        manager.on_publish(StreamInfo("__defaultVhost__", "live", "livestream_ld", server.rtmp_port))
        found["loop"] = manager.processes("__defaultVhost__", "live", "livestream_ld")
        manager.on_unpublish(*info.key)
        await manager.drain()
        found["after"] = manager.processes(*info.key), proc.state, proc.last_exit
        await until(lambda: "livestream_ld" not in live_names(server), 10, "livestream_ld to stop")

    with Publisher(clip, f"{server.rtmp}/live/livestream"):
        wait_stream_live(server)
        asyncio.run(main())
    assert found["argv"][:4] == ["ffmpeg", "-f", "flv", "-i"]
    assert found["argv"][-1] == f"rtmp://127.0.0.1:{server.rtmp_port}/live?vhost=__defaultVhost__/livestream_ld"
    for kind in ("rtmp", "hls"):
        video = video_of(found[kind])
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 160, 120), kind
        assert video["profile"] == "Constrained Baseline"
        assert any(s["codec_type"] == "audio" and s["codec_name"] == "aac" for s in found[kind]["streams"])
    assert found["loop"] == []
    assert found["after"][0] == [] and found["after"][1] == "stopped"


# ---------------------------------------------------------------- exec


def test_exec_variables_and_redirects() -> None:
    info = StreamInfo(
        "v.example", "live", "s", 1935, param="?token=1", tc_url="rtmp://v.example/live", host="v.example"
    )
    argv, redirects = command_line(
        ["ffmpeg", "-i", "[url]", "-y", "[vhost]-[app]-[stream]-[port]-[2006].flv", "1", ">", "o.log", "2>e.log"], info
    )
    year = time.strftime("%Y")
    assert argv == ["ffmpeg", "-i", "rtmp://v.example:1935/live/s?token=1&vhost=v.example", "-y",
                    f"v.example-live-s-1935-{year}.flv"]  # fmt: skip
    assert (redirects.stdout, redirects.stderr) == ("o.log", "e.log")
    argv, redirects = command_line(["echo", "[tcUrl]", "[pageUrl]", ">out.txt"], info)
    assert argv == ["echo", "rtmp://v.example/live", ""] and redirects.stdout == "out.txt"


def test_exec_writes_its_file_while_the_stream_is_live_and_stops_with_it(
    tidecast: Start, clip: Path, tmp_path: Path
) -> None:
    server = tidecast()
    work = tmp_path / "exec"
    work.mkdir()
    config = relay_config(
        server,
        "exec { enabled on; publish ffmpeg -v error -i [url] -c copy -flush_packets 1 -y [stream].flv "
        "2>[stream].err; }",
    )
    info = StreamInfo("__defaultVhost__", "live", "livestream", server.rtmp_port, host="127.0.0.1")
    manager = ExecManager(config, cwd=str(work))
    out = work / "livestream.flv"
    sizes: list[int] = []

    async def main() -> None:
        try:
            await run_exec()
        finally:
            await manager.close()

    async def run_exec() -> None:
        manager.on_publish(info)
        [proc] = manager.processes(*info.key)
        await until(lambda: out.exists() and out.stat().st_size > 50_000, 15, "the exec to write its file")
        sizes.append(out.stat().st_size)
        await asyncio.sleep(1.5)
        sizes.append(out.stat().st_size)
        assert proc.state == "running" and proc.restarts == 0
        manager.on_unpublish(*info.key)
        await manager.drain()
        assert proc.state == "stopped" and not proc.alive
        sizes.append(out.stat().st_size)
        await asyncio.sleep(1.0)
        sizes.append(out.stat().st_size)

    with Publisher(clip, f"{server.rtmp}/live/livestream"):
        wait_stream_live(server)
        asyncio.run(main())
    assert sizes[1] > sizes[0], "the file grows while the stream is live"
    assert sizes[3] == sizes[2], "and stops growing when the exec is stopped"
    assert (work / "livestream.err").exists()  # the 2> redirect, relative to the working directory
    assert float(ffprobe_json(str(out))["format"]["duration"]) > 1.0


# ---------------------------------------------------------------- ingest


def test_an_ingested_file_becomes_a_live_stream_and_is_restarted_when_ffmpeg_dies(tidecast: Start, clip: Path) -> None:
    server = tidecast()
    config = relay_config(
        server,
        f"ingest clip {{ enabled on; input {{ type file; url {clip}; }} ffmpeg ffmpeg;"
        " engine { enabled off; output rtmp://127.0.0.1:[port]/live/ingested?vhost=[vhost]; } }",
    )
    relays = Relays(config)
    manager: IngestManager = relays.ingest
    found: dict[str, Any] = {}

    async def main() -> None:
        try:
            await ingest()
        finally:
            await relays.close()

    async def ingest() -> None:
        relays.start()
        [proc] = manager.processes("__defaultVhost__", "ingest", "clip")
        found["argv"] = list(proc.argv)
        await until(lambda: "ingested" in live_names(server), 15, "the ingest to be live")
        found["probe"] = await asyncio.to_thread(ffprobe_json, f"{server.rtmp}/live/ingested")
        first = proc.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: proc.pid not in (None, first) and proc.state == "running", 10, "the restart")
        await until(lambda: "ingested" in live_names(server), 15, "the ingest to be live again")
        found["restarts"] = proc.restarts
        found["api"] = relays.describe_all()["processes"]
        await relays.close()
        found["after"] = proc.state, proc.alive

    asyncio.run(main())
    assert found["argv"] == [
        "ffmpeg", "-re", "-stream_loop", "-1", "-i", str(clip), "-vcodec", "copy", "-acodec", "copy",
        "-f", "flv", "-y", f"rtmp://127.0.0.1:{server.rtmp_port}/live/ingested",
    ]  # fmt: skip
    video = video_of(found["probe"])
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
    assert found["restarts"] == 1
    [api] = found["api"]
    assert api["kind"] == "ingest" and api["state"] == "running" and api["restarts"] == 1 and api["ingest"] == "clip"
    assert found["after"] == ("stopped", False)


# ---------------------------------------------------------------- reload


def test_reload_restarts_changed_commands_and_stops_removed_ones(tmp_path: Path) -> None:
    def config(body: str) -> Config:
        return parse_text(f"listen 1935;\nvhost __defaultVhost__ {{ {body} }}\n")

    first = config("exec { enabled on; publish sleep 30; publish sleep 31; }")
    relays = Relays(first, cwd=str(tmp_path))
    info = StreamInfo("__defaultVhost__", "live", "s", 1935)
    seen: dict[str, Any] = {}

    async def main() -> None:
        try:
            relays.on_publish(info, lambda sink: None, lambda sink: None)
            a, b = relays.exec.processes(*info.key)
            relays.reload(config("exec { enabled on; publish sleep 30; publish sleep 32; }"))
            c, d = relays.exec.processes(*info.key)
            seen["kept"] = c is a
            seen["replaced"] = d is not b and d.argv == ["sleep", "32"]
            await relays.exec.drain()
            seen["old"] = b.state, b.alive
            seen["api"] = [p["command"] for p in relays.describe(*info.key)["processes"]]
            relays.reload(config("exec { enabled off; publish sleep 30; }"))
            await relays.exec.drain()
            seen["disabled"] = relays.exec.processes(*info.key), a.state, a.alive
        finally:
            await relays.close()

    asyncio.run(main())
    assert seen["kept"] and seen["replaced"]
    assert seen["old"] == ("stopped", False)
    assert seen["api"] == ["sleep 30", "sleep 32"]
    assert seen["disabled"] == ([], "stopped", False)


def test_stream_info_from_a_join_request_and_edges_do_not_relay() -> None:
    from dataclasses import dataclass

    from tidecast.relay import stream_info

    @dataclass
    class Request:  # the contract's JoinRequest fields
        action: str = "publish"
        client_id: str = "k2x9"
        ip: str = "10.0.0.7"
        vhost: str = "v.example"
        app: str = "live"
        stream: str = "s"
        param: str = "?token=1"
        tc_url: str = "rtmp://v.example:1935/live"
        page_url: str = "http://page"
        protocol: str = "rtmp"
        stream_id: str = "vid-3"
        server_id: str = "srv"

    info = stream_info(Request(), 1935)
    assert info == StreamInfo(
        "v.example", "live", "s", 1935, "?token=1", "rtmp://v.example:1935/live", "", "http://page", "v.example",
        "k2x9", "10.0.0.7",
    )  # fmt: skip
    edge = parse_text(
        "listen 1935;\nvhost v.example { cluster { mode remote; origin 127.0.0.1; }"
        " exec { enabled on; publish sleep 9; } }"
    )
    relays = Relays(edge)

    async def main() -> int:
        relays.on_publish(info, lambda s: None, lambda s: None)
        count = len(relays.exec.processes(*info.key))
        await relays.close()
        return count

    assert asyncio.run(main()) == 0
