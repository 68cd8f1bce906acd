"""DVR recorders with real files: FLV and MP4 read back by ffprobe, plans, names, crashes and disk errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from testkit.helpers import child_python_path, decode_errors, ffprobe_json, make_clip

from tidecast.codec import amf0
from tidecast.codec.flv import TAG_SCRIPT, TAG_VIDEO, iter_flv_tags
from tidecast.config import Cluster, ConfigError, Dvr, Vhost, parse_text
from tidecast.dvr import Reaped, Recorder, applies, dvr_recorder_for
from tidecast.dvr import paths as dvr_paths
from tidecast.dvr.manager import DvrManager


@pytest.fixture(scope="module")
def clip8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip8.flv", seconds=8)


@pytest.fixture(scope="module")
def clip12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip12.flv", seconds=12)


def settings(root: Path, name: str = "[app]/[stream].[timestamp].flv", **kw: object) -> Dvr:
    return replace(Dvr(enabled=True, dvr_path=str(root / name)), **kw)  # type: ignore[arg-type]


def feed(recorder: Recorder, clip: Path, pace: float = 0.0, start: int = 0) -> None:
    """The clip's tags as a live stream hands them to a sink: on_publish, metadata, messages, on_unpublish."""
    recorder.on_publish()
    for i, (type_id, ts, payload) in enumerate(iter_flv_tags(clip.read_bytes())):
        if i < start:
            continue
        if type_id == TAG_SCRIPT:
            recorder.on_metadata(payload)
        else:
            recorder.on_message(type_id, ts, payload)
        if pace:
            time.sleep(pace)
    recorder.on_unpublish()


def step_clock(recorder: Recorder) -> None:
    """A wall clock one second later at each reading: a distinct [timestamp] for each file."""
    clock = iter(range(1_000_000))
    recorder.clock = lambda: 1_700_000_000 + next(clock)


def finals(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def temps(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp"))


def probe(path: Path) -> tuple[list[str], float]:
    info = ffprobe_json(str(path))
    return [s["codec_name"] for s in info["streams"]], float(info["format"]["duration"])


# ---------------------------------------------------------------- session plan


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_session_recording_of_8s_reads_back_as_h264_aac(ext: str, clip8: Path, tmp_path: Path) -> None:
    reaped: list[Reaped] = []
    recorder = dvr_recorder_for(
        settings(tmp_path, f"[vhost]/[app]/[stream].[timestamp].{ext}"),
        "__defaultVhost__",
        "live",
        "cam",
        reaped.append,
    )
    assert recorder is not None
    feed(recorder, clip8)
    files = finals(tmp_path)
    assert len(files) == 1 and files[0].suffix == f".{ext}"
    assert files[0].parent == tmp_path / "__defaultVhost__" / "live"
    codecs, duration = probe(files[0])
    assert sorted(codecs) == ["aac", "h264"]
    assert duration == pytest.approx(8.0, abs=1.0)
    assert decode_errors(files[0]) == ""
    assert temps(tmp_path) == []
    assert [r.path for r in reaped] == [str(files[0])]
    assert reaped[0].size == files[0].stat().st_size and reaped[0].duration_ms == pytest.approx(8000, abs=1000)


def test_flv_metadata_gets_the_recorded_duration_and_size(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(settings(tmp_path), "v", "live", "cam")
    assert recorder is not None
    feed(recorder, clip8)
    (path,) = finals(tmp_path)
    tags = list(iter_flv_tags(path.read_bytes()))
    assert tags[0][0] == TAG_SCRIPT
    name, meta = amf0.decode_all(tags[0][2])
    assert name == "onMetaData" and meta["width"] == 320
    assert meta["duration"] == pytest.approx(8.0, abs=0.5)
    assert meta["filesize"] == path.stat().st_size
    # Sequence headers first, then media from time 0.
    assert tags[1][0] == TAG_VIDEO and tags[1][2][1] == 0 and tags[1][1] == 0


def test_mp4_fast_start_puts_the_moov_first(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(settings(tmp_path, "[stream].mp4", dvr_mp4_faststart=True), "v", "live", "cam")
    assert recorder is not None
    feed(recorder, clip8)
    (path,) = finals(tmp_path)
    data = path.read_bytes()
    assert data[4:8] == b"ftyp" and data[data.index(b"moov") - 4 : data.index(b"moov")] != b""
    assert data.index(b"moov") < data.index(b"mdat")
    codecs, duration = probe(path)
    assert sorted(codecs) == ["aac", "h264"] and duration == pytest.approx(8.0, abs=1.0)
    assert decode_errors(path) == ""


def test_directory_only_dvr_path_is_srs_1_form(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(Dvr(enabled=True, dvr_path=str(tmp_path / "html")), "v", "live", "cam")
    assert recorder is not None
    feed(recorder, clip8)
    (path,) = finals(tmp_path)
    assert path.parent == tmp_path / "html"  # [stream].[timestamp].flv in the directory, as SRS 1
    stem, stamp, ext = path.name.split(".")
    assert stem == "cam" and ext == "flv" and abs(int(stamp) / 1000 - time.time()) < 60


# ---------------------------------------------------------------- segment plan


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_segment_plan_cuts_12s_into_3s_files(ext: str, clip12: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(
        settings(tmp_path, f"[stream]-[timestamp].{ext}", dvr_plan="segment", dvr_duration=3), "v", "live", "cam"
    )
    assert recorder is not None
    step_clock(recorder)
    feed(recorder, clip12)
    files = finals(tmp_path)
    assert len(files) >= 3
    total = 0.0
    for f in files:
        codecs, duration = probe(f)
        assert sorted(codecs) == ["aac", "h264"]
        assert decode_errors(f) == ""
        total += duration
        # Each file starts at 0 with a keyframe, as a file of its own.
        first_video = next(t for t in iter_flv_tags(f.read_bytes()) if t[0] == TAG_VIDEO) if ext == "flv" else None
        if first_video is not None:
            assert first_video[1] == 0 and first_video[2][1] == 0
    assert [probe(f)[1] for f in files[:-1]] == pytest.approx([3.0] * (len(files) - 1), abs=0.2)
    assert total == pytest.approx(12.0, abs=1.0)
    assert temps(tmp_path) == []


def test_a_shorter_dvr_duration_set_by_a_reload_cuts_the_file_in_progress(clip12: Path, tmp_path: Path) -> None:
    """Frames go straight to an FLV file until the cut is due; a reload that shortens dvr_duration moves the
    cut of the file being written, as it did before (the due time is worked out again)."""
    recorder = dvr_recorder_for(
        settings(tmp_path, "[stream]-[timestamp].flv", dvr_plan="segment", dvr_duration=10), "v", "live", "cam"
    )
    assert recorder is not None
    step_clock(recorder)
    recorder.on_publish()
    for type_id, ts, payload in iter_flv_tags(clip12.read_bytes()):
        if ts >= 1000 and recorder.settings.dvr_duration == 10:
            recorder.settings = replace(recorder.settings, dvr_duration=2)
        if type_id == TAG_SCRIPT:
            recorder.on_metadata(payload)
        else:
            recorder.on_message(type_id, ts, payload)
    recorder.on_unpublish()
    durations = [probe(f)[1] for f in finals(tmp_path)]
    assert durations[0] == pytest.approx(2.0, abs=0.2), durations
    assert sum(durations) == pytest.approx(12.0, abs=1.0)


def test_segment_plan_without_video_cuts_audio_only_streams(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(
        settings(tmp_path, "[timestamp].flv", dvr_plan="segment", dvr_duration=2), "v", "a", "s"
    )
    assert recorder is not None
    step_clock(recorder)
    recorder.on_publish()
    for type_id, ts, payload in iter_flv_tags(clip8.read_bytes()):
        if type_id == 8:
            recorder.on_message(type_id, ts, payload)
    recorder.on_unpublish()
    files = finals(tmp_path)
    assert len(files) >= 3
    assert probe(files[0])[0] == ["aac"]


def test_wait_keyframe_starts_a_file_on_a_keyframe(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(settings(tmp_path, "[stream].flv"), "v", "live", "cam")
    assert recorder is not None
    tags = list(iter_flv_tags(clip8.read_bytes()))
    recorder.on_publish()
    for type_id, ts, payload in tags[:3]:  # metadata and sequence headers
        recorder.on_message(type_id, ts, payload)
    for type_id, ts, payload in tags[40:]:  # joined mid-GOP
        recorder.on_message(type_id, ts, payload)
    recorder.on_unpublish()
    (path,) = finals(tmp_path)
    frames = [t for t in iter_flv_tags(path.read_bytes()) if t[0] == TAG_VIDEO and t[2][1] == 1]
    assert frames[0][2][0] >> 4 == 1
    assert decode_errors(path) == ""


# ---------------------------------------------------------------- names, filters, config


def test_path_variables_and_the_dvr_root() -> None:
    now = time.mktime((2015, 1, 3, 10, 57, 30, 0, 0, -1)) + 0.776
    template = "/data/[vhost]/[app]/[stream]/[2006]/[01]/[02]/[15].[04].[05].[999].flv"
    assert dvr_paths.file_path(template, "ossrs.net", "live", "livestream", now) == (
        "/data/ossrs.net/live/livestream/2015/01/03/10.57.30.776.flv"
    )
    assert dvr_paths.expand("[timestamp]", "v", "a", "s", now) == str(int(now * 1000))
    assert dvr_paths.root_of(template) == "/data"
    assert dvr_paths.root_of("./objs/nginx/html") == os.path.abspath("./objs/nginx/html")
    for app, stream in (("live", "../../x"), ("..", "s"), ("live", "a/../../b"), ("/etc", "s"), ("live", "x\x00")):
        with pytest.raises(dvr_paths.DvrPathError, match=r"outside the DVR directory /data\b"):
            dvr_paths.file_path(template, "v", app, stream, now)
    with pytest.raises(dvr_paths.DvrPathError, match="empty stream name"):
        dvr_paths.file_path("/data/[stream].flv", "v", "live", "", now)


def test_factory_refuses_escaping_names_and_applies_the_filter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tidecast.dvr"):
        assert dvr_recorder_for(settings(tmp_path), "v", "live", "../../../etc/cron.d/x") is None
    assert "outside the DVR directory" in caplog.text and str(tmp_path) in caplog.text
    assert dvr_recorder_for(replace(settings(tmp_path), enabled=False), "v", "live", "s") is None
    only = settings(tmp_path, dvr_apply=["live/a", "other/b"])
    assert dvr_recorder_for(only, "v", "live", "a") is not None
    assert dvr_recorder_for(only, "v", "live", "b") is None
    assert applies(["all"], "x", "y") and applies([], "x", "y") and not applies(["none"], "x", "y")


def test_dvr_block_reads_srs_defaults_and_values(tmp_path: Path) -> None:
    config = parse_text("listen 1935;\nvhost d { dvr { enabled on; } }\n")
    dvr = config.vhost("d").dvr
    assert dvr == Dvr(enabled=True)
    assert (dvr.dvr_plan, dvr.dvr_path, dvr.dvr_duration, dvr.dvr_wait_keyframe, dvr.time_jitter, dvr.dvr_apply) == (
        "session",
        "./objs/nginx/html/[app]/[stream].[timestamp].flv",
        30.0,
        True,
        "full",
        ["all"],
    )
    assert config.unsupported == []
    text = (
        "listen 1935;\nvhost d { dvr { enabled on; dvr_apply live/a live/b; dvr_plan segment; "
        "dvr_path /data/[app]/[stream].mp4; dvr_duration 60; dvr_wait_keyframe off; time_jitter zero; } }\n"
    )
    dvr = parse_text(text).vhost("d").dvr
    assert dvr == Dvr(True, ["live/a", "live/b"], "segment", "/data/[app]/[stream].mp4", 60.0, False, "zero")
    env = parse_text("listen 1935;\n", env={"SRS_VHOST_DVR_ENABLED": "on", "SRS_VHOST_DVR_DVR_PLAN": "segment"})
    assert env.vhost("x").dvr.enabled and env.vhost("x").dvr.dvr_plan == "segment"
    assert "dvr {" in config.dump() and "dvr_path ./objs/nginx/html/[app]/[stream].[timestamp].flv;" in config.dump()
    with pytest.raises(ConfigError, match=r"dvr_plan \(in vhost d dvr\): expected session or segment or append"):
        parse_text("listen 1935;\nvhost d { dvr { dvr_plan weekly; } }\n")


# ---------------------------------------------------------------- crash safety and disk errors


def test_a_reader_polling_the_directory_never_sees_a_partial_file(clip12: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(
        settings(tmp_path, "[stream]-[timestamp].mp4", dvr_plan="segment", dvr_duration=2), "v", "live", "cam"
    )
    assert recorder is not None
    step_clock(recorder)
    seen: dict[str, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for p in finals(tmp_path):
                seen.setdefault(p.name, p.stat().st_size)
            time.sleep(0.001)

    reader = threading.Thread(target=poll)
    reader.start()
    feed(recorder, clip12, pace=0.002)  # ~1100 messages over ~3 s: the reader sees files as they land
    done.set()
    reader.join()
    files = finals(tmp_path)
    sizes = {f.name: f.stat().st_size for f in files}
    assert len(files) >= 5 and len(seen) >= 4 and set(seen) <= set(sizes)
    # Every file the reader saw under its final name already had its final size: never partial.
    assert seen == {name: sizes[name] for name in seen}
    assert all(decode_errors(f) == "" for f in files)


RECORD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dataclasses import replace
    from tidecast.codec.flv import iter_flv_tags
    from tidecast.config import Dvr
    from tidecast.dvr import dvr_recorder_for
    root, ext, clip = sys.argv[1:4]
    r = dvr_recorder_for(Dvr(enabled=True, dvr_path=root + "/[app]/[stream]." + ext), "v", "live", "cam")
    r.on_publish()
    for i, (t, ts, p) in enumerate(iter_flv_tags(open(clip, "rb").read())):
        r.on_message(t, ts, p) if t != 18 else r.on_metadata(p)
        r.tick(time.time())
        if i == 200:
            print("recording", flush=True)
        time.sleep(0.005)
    r.on_unpublish()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_kill_9_while_recording_leaves_only_a_temp_file(ext: str, clip12: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORD_SCRIPT, str(tmp_path), ext, str(clip12)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": child_python_path()},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"recording"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert finals(tmp_path) == []
    (temp,) = temps(tmp_path)
    assert temp.name == f".cam.{ext}.tmp" and temp.stat().st_size > 10_000


def test_unwritable_directory_is_logged_once_and_never_raises(
    clip8: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the DVR directory should be")
    recorder = dvr_recorder_for(settings(blocker, "[app]/[stream].flv"), "v", "live", "cam")
    assert recorder is not None
    with caplog.at_level(logging.ERROR, logger="tidecast.dvr"):
        feed(recorder, clip8)
        feed(recorder, clip8)  # a second publish still does not log again
    errors = [r.getMessage() for r in caplog.records if r.name == "tidecast.dvr" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "v/live/cam" in errors[0] and str(blocker) in errors[0]
    assert finals(tmp_path) == [blocker]


DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import logging, resource, signal, sys
    from tidecast.codec.flv import iter_flv_tags
    from tidecast.config import Dvr
    from tidecast.dvr import dvr_recorder_for
    logging.basicConfig(level=logging.ERROR, format="%(name)s %(message)s")
    # Writes past 200 kB fail with EFBIG, as a full disk fails them with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    root, ext, clip = sys.argv[1:4]
    r = dvr_recorder_for(Dvr(enabled=True, dvr_path=root + "/[stream]." + ext), "v", "live", "cam")
    r.on_publish()
    for t, ts, p in iter_flv_tags(open(clip, "rb").read()):
        r.on_message(t, ts, p) if t != 18 else r.on_metadata(p)
    r.on_unpublish()
    print("fed every message", flush=True)
    """
)


@pytest.mark.parametrize("ext", ["flv", "mp4"])
def test_a_full_disk_mid_recording_is_logged_once_and_leaves_no_final_file(
    ext: str, clip8: Path, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path), ext, str(clip8)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": child_python_path()},
        timeout=30,
    )
    assert out.stdout.strip() == b"fed every message", out.stderr
    lines = [x for x in out.stderr.decode().splitlines() if x.startswith("tidecast.dvr")]
    assert len(lines) == 1 and "cannot write" in lines[0] and str(tmp_path) in lines[0]
    assert finals(tmp_path) == [] and temps(tmp_path) == []


# ---------------------------------------------------------------- lifecycle and other codecs


def test_close_reaps_now_and_ignores_the_rest_until_the_next_publish(clip8: Path, tmp_path: Path) -> None:
    reaped: list[Reaped] = []
    recorder = dvr_recorder_for(settings(tmp_path, "[stream]-[timestamp].mp4"), "v", "live", "cam", reaped.append)
    assert recorder is not None
    tags = list(iter_flv_tags(clip8.read_bytes()))
    recorder.on_publish()
    for type_id, ts, payload in tags[:300]:
        recorder.on_message(type_id, ts, payload)
    recorder.tick(time.time() + 10)  # buffered data reaches the temp file
    (temp,) = temps(tmp_path)
    assert temp.stat().st_size > 50_000
    recorder.close()  # e.g. a reload that turned DVR off, or a drain
    for type_id, ts, payload in tags[300:]:
        recorder.on_message(type_id, ts, payload)
    assert temps(tmp_path) == [] and len(finals(tmp_path)) == 1 and len(reaped) == 1
    assert decode_errors(finals(tmp_path)[0]) == ""
    # SRS's on_dvr `file`: dvr_path as written, expanded.
    assert reaped[0].file == reaped[0].path and reaped[0].path.startswith(str(tmp_path))
    relative = dvr_recorder_for(Dvr(enabled=True, dvr_path="./rec/[stream].flv"), "v", "live", "cam", reaped.append)
    assert relative is not None
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        feed(relative, clip8)
    finally:
        os.chdir(cwd)
    assert reaped[1].file == "./rec/cam.flv" and reaped[1].path == str(tmp_path / "rec" / "cam.flv")


def test_a_reload_to_mp4_applies_from_the_next_segment(clip12: Path, tmp_path: Path) -> None:
    flv = settings(tmp_path, "[timestamp].flv", dvr_plan="segment", dvr_duration=4)
    recorder = dvr_recorder_for(flv, "v", "live", "cam")
    assert recorder is not None
    step_clock(recorder)
    tags = list(iter_flv_tags(clip12.read_bytes()))
    recorder.on_publish()
    for i, (type_id, ts, payload) in enumerate(tags):
        if i == 100:
            recorder.settings = replace(flv, dvr_path=str(tmp_path / "[timestamp].mp4"))
        recorder.on_message(type_id, ts, payload)
    recorder.on_unpublish()
    suffixes = [f.suffix for f in finals(tmp_path)]
    assert suffixes[0] == ".flv" and set(suffixes[1:]) == {".mp4"} and len(suffixes) == 3
    for f in finals(tmp_path):
        assert sorted(probe(f)[0]) == ["aac", "h264"] and decode_errors(f) == ""


def test_time_jitter_off_keeps_the_stream_timestamps(clip8: Path, tmp_path: Path) -> None:
    recorder = dvr_recorder_for(settings(tmp_path, "[stream].flv", time_jitter="off"), "v", "live", "cam")
    assert recorder is not None
    recorder.on_publish()
    for type_id, ts, payload in iter_flv_tags(clip8.read_bytes()):
        recorder.on_message(type_id, ts + 60_000, payload)
    recorder.on_unpublish()
    (path,) = finals(tmp_path)
    media = [t for t in iter_flv_tags(path.read_bytes()) if t[0] != TAG_SCRIPT and t[2][1] != 0]
    assert media[0][1] >= 60_000


def test_enhanced_rtmp_hevc_and_opus_record_to_mp4(tmp_path: Path) -> None:
    from test_codec_mp4 import read_mp4_track

    source = tmp_path / "src.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=192x108:rate=25", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:v", "libx265", "-x265-params",
         "log-level=error:keyint=25", "-tag:v", "hvc1", "-pix_fmt", "yuv420p", "-c:a", "libopus", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    data = source.read_bytes()
    _, hvcc, video, vscale = read_mp4_track(data, 0)
    _, dops, audio, _ = read_mp4_track(data, 1)
    # As an enhanced-RTMP publisher sends them: ExHeader, FourCC, packet type; frames with SI24 offsets.
    messages: list[tuple[int, int, bytes]] = [
        (9, 0, bytes((0x80 | 0x10 | 0,)) + b"hvc1" + hvcc),
        (8, 0, bytes((0x90 | 0,)) + b"Opus" + dops),
    ]
    for dts, cts, sample, sync in video:
        ms, cts_ms = dts * 1000 // vscale, cts * 1000 // vscale
        header = bytes((0x80 | (0x10 if sync else 0x20) | 1,)) + b"hvc1" + cts_ms.to_bytes(3, "big", signed=True)
        messages.append((9, ms, header + sample))
    for dts, _, sample, _ in audio:
        messages.append((8, dts * 1000 // 48000, bytes((0x90 | 1,)) + b"Opus" + sample))
    messages.sort(key=lambda m: m[1])
    recorder = dvr_recorder_for(settings(tmp_path, "rec/[stream].mp4"), "v", "live", "cam")
    assert recorder is not None
    recorder.on_publish()
    for type_id, ts, payload in messages:
        recorder.on_message(type_id, ts, payload)
    recorder.on_unpublish()
    path = tmp_path / "rec" / "cam.mp4"
    codecs, duration = probe(path)
    assert sorted(codecs) == ["hevc", "opus"] and duration == pytest.approx(3.0, abs=0.3)
    assert decode_errors(path) == ""


# ---------------------------------------------------------------- the manager


@dataclasses.dataclass
class CachedPacket:
    type_id: int
    timestamp: int
    payload: bytes


@dataclasses.dataclass
class StandInStream:
    """The parts of a LiveStream the manager reads, with its sink fan-out (a hub is not started here)."""

    vhost: str
    app: str
    name: str
    settings: Vhost
    sinks: list[Any] = dataclasses.field(default_factory=list)
    active: bool = False
    metadata: CachedPacket | None = None
    video_sh: CachedPacket | None = None
    audio_sh: CachedPacket | None = None

    def publish(self) -> None:
        self.active = True
        for sink in self.sinks:
            sink.on_publish()

    def media(self, type_id: int, ts: int, payload: bytes) -> None:
        if type_id == TAG_SCRIPT:
            self.metadata = CachedPacket(type_id, ts, payload)
            for sink in self.sinks:
                sink.on_metadata(payload)
            return
        if len(payload) > 1 and payload[1] == 0:
            setattr(self, "video_sh" if type_id == TAG_VIDEO else "audio_sh", CachedPacket(type_id, ts, payload))
        for sink in self.sinks:
            sink.on_message(type_id, ts, payload)

    def unpublish(self) -> None:
        self.active = False
        for sink in self.sinks:
            sink.on_unpublish()


def test_manager_records_published_streams_and_follows_reloads(clip8: Path, tmp_path: Path) -> None:
    def vhost(**dvr: Any) -> Vhost:
        return Vhost(dvr=settings(tmp_path, "[app]/[stream]-[timestamp].flv", **dvr))

    calls: list[tuple[Reaped, Any]] = []
    a = StandInStream("v", "live", "a", vhost())
    b = StandInStream("v", "live", "b", vhost(dvr_apply=["live/a"]))
    edge = StandInStream("v", "live", "e", Vhost(dvr=a.settings.dvr, cluster=Cluster(mode="remote")))
    streams = [a, b, edge]
    manager = DvrManager(lambda: streams, lambda reaped, client: calls.append((reaped, client)))
    tags = list(iter_flv_tags(clip8.read_bytes()))
    for s in streams:
        s.publish()
        manager.on_publish(s, f"client-{s.name}")
    assert set(manager.recorders) == {("v", "live", "a")}  # b is not in dvr_apply, e is an edge
    for t in tags[:200]:
        for s in streams:
            s.media(*t)
    # A reload records b from its next keyframe (its cached headers first) and stops a.
    a.settings, b.settings = vhost(enabled=False), vhost()
    manager.reload()
    assert set(manager.recorders) == {("v", "live", "b")}
    for t in tags[200:]:
        for s in streams:
            s.media(*t)
    for s in streams:
        s.unpublish()
        manager.on_unpublish(s, f"client-{s.name}")
    assert manager.recorders == {}
    files = finals(tmp_path)
    assert [f.name.split("-")[0] for f in files] == ["a", "b"] and temps(tmp_path) == []
    assert [(r.stream, client) for r, client in calls] == [("a", "client-a"), ("b", "client-b")]
    for f in files:
        assert sorted(probe(f)[0]) == ["aac", "h264"] and decode_errors(f) == ""
    assert probe(files[1])[1] == pytest.approx((tags[-1][1] - tags[200][1]) / 1000, abs=1.1)


def test_manager_close_reaps_every_recording(clip8: Path, tmp_path: Path) -> None:
    stream = StandInStream("v", "live", "a", Vhost(dvr=settings(tmp_path, "[stream].mp4")))
    manager = DvrManager(lambda: [stream])
    stream.publish()
    manager.on_publish(stream)
    for t in list(iter_flv_tags(clip8.read_bytes()))[:150]:
        stream.media(*t)
    manager.tick(0)
    assert len(temps(tmp_path)) == 1
    manager.close()  # a drain: the publisher may still be connected
    assert temps(tmp_path) == [] and [f.name for f in finals(tmp_path)] == ["a.mp4"]
    assert decode_errors(tmp_path / "a.mp4") == ""
