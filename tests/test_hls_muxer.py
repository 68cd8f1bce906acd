"""The HLS muxer fed a real ffmpeg clip's FLV tags (B-frames, keyframe every second), no server, no mocks.

Segments and playlists are checked with the m3u8 library, ffprobe and ffmpeg.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import m3u8
import pytest

from test_codec_flv import make_bframes_clip
from test_codec_mpegts import parse_ts, split_pes
from tidecast import config
from tidecast.codec.flv import TAG_AUDIO, TAG_VIDEO, FlvReader
from tidecast.codec.mpegts import AUDIO_PID, PMT_PID, VIDEO_PID
from tidecast.hls.segmenter import HlsMuxer

Tags = list[tuple[int, int, bytes]]


def Hls(**overrides: Any) -> config.Hls:
    """The real settings, with this module's test defaults (2 s fragments, no dispose)."""
    return dataclasses.replace(config.Hls(enabled=True, hls_fragment=2.0, hls_dispose=0.0), **overrides)


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> Tags:
    return FlvReader().feed(make_bframes_clip(tmp_path_factory).read_bytes())


CLIP_MS = 6000  # the clip's length; a republish continues the clock after it


def mux(tags: Tags, hls: Hls, publishes: int = 1, speed: float = 0.0, stream: str = "s") -> HlsMuxer:
    """Publish the clip `publishes` times; `speed` > 0 paces it at that multiple of real time."""
    muxer = HlsMuxer(hls, "__defaultVhost__", "live", stream)
    for n in range(publishes):
        muxer.on_publish()
        started = time.monotonic()
        for type_id, ts, payload in tags:
            if speed:
                time.sleep(max(0.0, started + ts / 1000.0 / speed - time.monotonic()))
            # A republish restarts at 0 under jitter correction; shift some so both cases run.
            muxer.on_message(type_id, ts + (CLIP_MS * n if n % 2 else 0), payload)
        muxer.on_unpublish()
    return muxer


def probe_frames(path: Path, stream: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_frames", "-show_entries",
         "frame=key_frame,pts_time,pict_type", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return list(json.loads(out.stdout)["frames"])


def decode_errors(target: Path | str, *args: str) -> str:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", *args, "-i", str(target), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


def ended_copy(playlist: Path) -> Path:
    """The playlist as VOD (with ENDLIST), so ffmpeg reads it to the end instead of waiting for more."""
    vod = playlist.with_name("vod.m3u8")
    vod.write_text(playlist.read_text() + "#EXT-X-ENDLIST\n")
    return vod


@pytest.fixture(scope="module")
def two_second_segments(tags: Tags, tmp_path_factory: pytest.TempPathFactory) -> HlsMuxer:
    return mux(tags, Hls(hls_path=str(tmp_path_factory.mktemp("hls2"))))


def test_playlist_shape(two_second_segments: HlsMuxer) -> None:
    text = Path(two_second_segments.m3u8_path).read_text()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXTINF:2.000,\ns-0.ts\n" in text and "#EXT-X-ENDLIST" not in text
    playlist = m3u8.loads(text)
    assert [s.uri for s in playlist.segments] == ["s-0.ts", "s-1.ts", "s-2.ts"]
    assert playlist.target_duration == 2 and playlist.media_sequence == 0 and playlist.version == 3
    assert all(seg.duration <= playlist.target_duration for seg in playlist.segments)
    assert abs(sum(seg.duration for seg in playlist.segments) - 6.0) < 0.05
    assert sorted(p.name for p in Path(two_second_segments.m3u8_path).parent.iterdir()) == [
        "s-0.ts", "s-1.ts", "s-2.ts", "s.m3u8"
    ]  # fmt: skip


def test_segments_decode_start_on_keyframes_and_continue(two_second_segments: HlsMuxer) -> None:
    folder = Path(two_second_segments.m3u8_path).parent
    previous: tuple[float, float] | None = None
    for name in ("s-0.ts", "s-1.ts", "s-2.ts"):
        path = folder / name
        assert decode_errors(path) == ""
        video = probe_frames(path, "v")
        assert video[0]["key_frame"] == 1 and video[0]["pict_type"] == "I", f"{name} starts on a non-keyframe"
        audio = probe_frames(path, "a")
        assert len(video) >= 50 and len(audio) >= 80
        video_pts = [float(f["pts_time"]) for f in video]
        audio_pts = [float(f["pts_time"]) for f in audio]
        if previous is not None:
            # No gap and no overlap at the cut: the next frame is one frame duration later.
            assert abs(min(video_pts) - (previous[0] + 0.04)) < 0.002, (name, min(video_pts), previous)
            assert abs(min(audio_pts) - (previous[1] + 1024 / 44100)) < 0.002, (name, min(audio_pts), previous)
        previous = (max(video_pts), max(audio_pts))


def test_segment_structure_pat_pmt_pcr(two_second_segments: HlsMuxer) -> None:
    for path in sorted(Path(two_second_segments.m3u8_path).parent.glob("*.ts")):
        data = path.read_bytes()
        assert data[1:3] == b"\x40\x00" and (data[189] & 0x1F, data[190]) == (PMT_PID >> 8, PMT_PID & 0xFF)
        pes, _ = parse_ts(data)
        assert pes[0].pid == VIDEO_PID and pes[0].random_access and pes[0].pcr is not None
        pcrs = []
        for p in pes:
            _, pts, dts, _ = split_pes(bytes(p.data))
            if p.pcr is not None:
                assert p.pid == VIDEO_PID and p.pcr < (dts if dts is not None else pts)
                pcrs.append(p.pcr)
        assert max(b - a for a, b in itertools.pairwise(pcrs)) <= 9000  # ISO 13818-1: 100 ms at most
        assert sum(p.pid == AUDIO_PID for p in pes) < 0.5 * 87  # AAC frames gathered (87 frames in 2 s)


def test_playlist_plays_through(two_second_segments: HlsMuxer) -> None:
    playlist = Path(two_second_segments.m3u8_path)
    # Live as it is (no ENDLIST: ffmpeg would wait for more, so read 5.5 of the 6 s).
    assert decode_errors(playlist, "-t", "5.5") == ""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_type,nb_read_frames",
         "-of", "json", str(ended_copy(playlist))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    frames = {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(out.stdout)["streams"]}
    assert frames["video"] == 150  # 6 s at 25 fps
    assert abs(frames["audio"] - 6 * 44100 / 1024) < 3


def test_window_is_a_duration(tags: Tags, tmp_path: Path) -> None:
    muxer = mux(tags, Hls(hls_path=str(tmp_path), hls_fragment=1.0, hls_window=4.0))
    playlist = m3u8.load(muxer.m3u8_path)
    total = sum(s.duration for s in playlist.segments)
    assert 3.0 < total <= 4.0 and len(playlist.segments) == 4
    assert playlist.media_sequence == 6 - len(playlist.segments)
    assert playlist.target_duration == 1


def test_cleanup_deletes_what_slid_out_and_keeps_what_is_named(tags: Tags, tmp_path: Path) -> None:
    muxer = mux(tags, Hls(hls_path=str(tmp_path), hls_fragment=1.0, hls_window=2.0), publishes=3)
    playlist = m3u8.load(muxer.m3u8_path)
    named = {s.uri for s in playlist.segments}
    on_disk = {p.name for p in (tmp_path / "live").glob("*.ts")}
    assert named <= on_disk
    seq = {name: int(name[2:-3]) for name in on_disk}
    # What is not named any more lingers one segment + one playlist duration (RFC 8216 6.2.2), then goes.
    lingering = on_disk - named
    assert all(seq[name] < min(seq[n] for n in named) for name in lingering)
    assert "s-0.ts" not in on_disk and len(lingering) <= 4, sorted(on_disk)
    assert not list((tmp_path / "live").glob("*.tmp"))
    # Players have had their time once the stream is idle long enough: the stragglers go too.
    assert not muxer.maybe_dispose(muxer.last_message + 10)
    assert {p.name for p in (tmp_path / "live").glob("*.ts")} == named


def test_without_cleanup_every_segment_stays(tags: Tags, tmp_path: Path) -> None:
    mux(tags, Hls(hls_path=str(tmp_path), hls_fragment=1.0, hls_window=2.0, hls_cleanup=False), publishes=2)
    assert len(list((tmp_path / "live").glob("s-*.ts"))) == 12


def test_republish_continues_with_a_discontinuity(tags: Tags, tmp_path: Path) -> None:
    hls = Hls(hls_path=str(tmp_path))
    muxer = mux(tags, hls, publishes=3)
    text = Path(muxer.m3u8_path).read_text()
    playlist = m3u8.loads(text)
    assert [s.uri for s in playlist.segments] == [f"s-{n}.ts" for n in range(9)]
    assert [n for n, s in enumerate(playlist.segments) if s.discontinuity] == [3, 6]
    assert text.count("#EXT-X-DISCONTINUITY\n") == 2
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_type,nb_read_frames",
         "-of", "json", str(ended_copy(Path(muxer.m3u8_path)))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stderr == "" and {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(out.stdout)["streams"]}[
        "video"
    ] == 3 * 150  # fmt: skip
    # Once a discontinuity slides out of the window the discontinuity sequence counts it (RFC 8216 6.2.2).
    muxer.settings = replace(hls, hls_window=4.0)
    muxer.on_publish()
    for type_id, ts, payload in tags:
        muxer.on_message(type_id, ts, payload)
    muxer.on_unpublish()
    playlist = m3u8.load(muxer.m3u8_path)
    assert playlist.discontinuity_sequence == 3 and playlist.segments[0].uri == "s-10.ts"


def test_dispose_removes_only_this_streams_files(tags: Tags, tmp_path: Path) -> None:
    hls = Hls(hls_path=str(tmp_path), hls_dispose=5.0)
    other = mux(tags, hls, stream="s-2")  # its files match "s-*" too
    muxer = HlsMuxer(hls, "__defaultVhost__", "live", "s")
    muxer.on_publish()
    for message in tags:
        muxer.on_message(*message)
    assert not muxer.maybe_dispose(time.time() + 60)  # still publishing
    muxer.on_unpublish()
    (tmp_path / "live" / "keep.txt").write_text("not ours")
    assert not muxer.maybe_dispose(muxer.last_message + 4)
    assert muxer.maybe_dispose(muxer.last_message + 6)
    assert not muxer.maybe_dispose(muxer.last_message + 7)  # once
    left = sorted(p.name for p in (tmp_path / "live").iterdir())
    assert left == ["keep.txt", "s-2-0.ts", "s-2-1.ts", "s-2-2.ts", "s-2.m3u8"]
    assert other.maybe_dispose(other.last_message + 6)
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["keep.txt"]
    # Disposal is off with hls_dispose 0.
    idle = mux(tags, Hls(hls_path=str(tmp_path)), stream="idle")
    assert not idle.maybe_dispose(idle.last_message + 1e6) and Path(idle.m3u8_path).exists()


def test_leftovers_of_a_crashed_run_are_cleaned_on_first_publish(tags: Tags, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    stale = ["s-77.ts", "s-78.ts.tmp", "s.m3u8.tmp"]
    others = ["s-2-0.ts", "s-2.m3u8", "sx-1.ts", "s-1.ts.bak", "notes.txt"]
    for name in [*stale, *others, "s.m3u8"]:
        (live / name).write_bytes(b"old")
    mux(tags, Hls(hls_path=str(tmp_path)))
    names = {p.name for p in live.iterdir()}
    assert not names & set(stale) and set(others) <= names
    assert (live / "s.m3u8").read_text().startswith("#EXTM3U") and "s-77.ts" not in (live / "s.m3u8").read_text()


_PREVIOUS_OWNER = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-TARGETDURATION:2\n" + "".join(
    f"#EXTINF:2.000,\ns-{n}.ts\n" for n in (40, 41, 42)
)


def _previous_owner(live: Path, age_s: float = 0.0) -> None:
    live.mkdir()
    (live / "s.m3u8").write_text(_PREVIOUS_OWNER)
    if age_s:
        then = time.time() - age_s
        os.utime(live / "s.m3u8", (then, then))
    for n in (40, 41, 42):
        (live / f"s-{n}.ts").write_bytes(b"old")
    (live / "s-43.ts.tmp").write_bytes(b"half")


def _first_playlist(muxer: HlsMuxer, tags: Tags) -> tuple[m3u8.M3U8, Any]:
    rest = iter(tags)
    for message in rest:
        muxer.on_message(*message)
        segments = muxer.playlist.segments
        if segments and segments[-1].sequence >= 43:  # our first segment is listed
            break
    return m3u8.load(muxer.m3u8_path), rest


def test_a_previous_owners_files_stay_until_no_playlist_can_name_them(tags: Tags, tmp_path: Path) -> None:
    """On a shared hls_path the stream moved here from another node: its playlist stays until ours
    replaces it, and ours goes on from it (its segments, then ours behind a discontinuity), so players
    (and edges, and an nginx) holding its playlist read on without a jump; its segments leave with our
    window."""
    live = tmp_path / "live"
    _previous_owner(live)
    muxer = HlsMuxer(Hls(hls_path=str(tmp_path), hls_window=10), "__defaultVhost__", "live", "s")
    muxer.on_publish()
    assert (live / "s.m3u8").read_text() == _PREVIOUS_OWNER and not (live / "s-43.ts.tmp").exists()
    playlist, rest = _first_playlist(muxer, tags)
    assert playlist.media_sequence == 40
    assert [seg.uri for seg in playlist.segments] == ["s-40.ts", "s-41.ts", "s-42.ts", "s-43.ts"]
    assert [seg.discontinuity for seg in playlist.segments] == [False, False, False, True]
    assert all((live / f"s-{n}.ts").exists() for n in (40, 41, 42))
    for message in rest:
        muxer.on_message(*message)
    muxer.on_unpublish()
    for round_ in (1, 2, 3):
        muxer.on_publish()
        for type_id, ts, payload in tags:
            muxer.on_message(type_id, ts + round_ * CLIP_MS, payload)
        muxer.on_unpublish()
    # Out of our 10 s window, then gone once no player can hold a playlist naming them.
    assert not any((live / f"s-{n}.ts").exists() for n in (40, 41, 42))
    final = m3u8.load(muxer.m3u8_path)
    assert final.media_sequence > 43 and final.discontinuity_sequence >= 1  # the tag at 43 slid out too


def test_a_stale_leftover_playlist_is_not_continued(tags: Tags, tmp_path: Path) -> None:
    """A playlist unchanged for an hour is a dead run's: numbered on (caches never see a name come back
    with other media), but not listed, and its segments go once no player can hold it."""
    live = tmp_path / "live"
    _previous_owner(live, age_s=3600)
    muxer = HlsMuxer(Hls(hls_path=str(tmp_path)), "__defaultVhost__", "live", "s")
    muxer.on_publish()
    playlist, _ = _first_playlist(muxer, tags)
    assert playlist.media_sequence == 43 and playlist.segments[0].discontinuity
    assert [seg.uri for seg in playlist.segments] == ["s-43.ts"]


def test_dispose_leaves_the_playlist_a_new_owner_writes(tags: Tags, tmp_path: Path) -> None:
    """The stream moved to another node on the same hls_path: the old owner's dispose deletes its own
    segments, never the playlist the new owner writes now."""
    hls = Hls(hls_path=str(tmp_path), hls_dispose=5.0)
    first = mux(tags, hls)
    second = mux(tags, hls)
    assert first.maybe_dispose(first.last_message + 6)
    assert Path(second.m3u8_path).exists()
    assert all(Path(seg.path).exists() for seg in second.playlist.segments)
    assert second.maybe_dispose(second.last_message + 6) and not Path(second.m3u8_path).exists()


def test_a_reader_never_sees_a_dangling_or_partial_file(tags: Tags, tmp_path: Path) -> None:
    hls = Hls(hls_path=str(tmp_path), hls_fragment=0.5, hls_window=1.5)
    playlist = tmp_path / "live" / "s.m3u8"
    problems: list[str] = []
    checks = [0, 0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                text = playlist.read_text()
            except FileNotFoundError:
                continue
            if not text.startswith("#EXTM3U"):
                problems.append(f"partial playlist {text[:30]!r}")
            for seg in m3u8.loads(text).segments:
                try:
                    data = (playlist.parent / seg.uri).read_bytes()
                except FileNotFoundError:
                    problems.append(f"missing {seg.uri}")
                    continue
                if not data or len(data) % 188 or data[::188] != b"\x47" * (len(data) // 188):
                    problems.append(f"partial {seg.uri} ({len(data)} bytes)")
                checks[1] += 1
            checks[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        mux(tags, hls, publishes=2, speed=8.0)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:5]
    assert checks[0] > 20 and checks[1] > 20, checks


def test_file_errors_are_logged_once_and_never_raise(
    tags: Tags, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    hls = Hls(hls_path=str(blocker / "hls"), hls_fragment=1.0, hls_dispose=1.0)
    with caplog.at_level(logging.WARNING, logger="tidecast.hls"):
        muxer = mux(tags, hls)
        assert muxer.maybe_dispose(muxer.last_message + 2)
    records = [r for r in caplog.records if r.name == "tidecast.hls"]
    assert len(records) == 1 and "file error" in records[0].getMessage()
    # The server reassigns `settings` on reload; a fixed path works from the next keyframe on.
    muxer.settings = replace(hls, hls_path=str(tmp_path / "ok"))
    muxer.on_publish()
    for message in tags:
        muxer.on_message(*message)
    muxer.on_unpublish()
    assert len(m3u8.load(str(tmp_path / "ok" / "live" / "s.m3u8")).segments) == 6


def test_malformed_frames_are_skipped(tags: Tags, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    muxer = HlsMuxer(Hls(hls_path=str(tmp_path)), "v", "live", "s")
    muxer.on_publish()
    with caplog.at_level(logging.WARNING, logger="tidecast.hls"):
        muxer.on_message(TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00\x02")  # a broken AVC sequence header
        muxer.on_message(TAG_AUDIO, 0, b"\xaf\x00\x00")  # a broken AAC one
        muxer.on_message(TAG_VIDEO, 0, b"\x17")
        for message in tags:
            muxer.on_message(*message)
        muxer.on_message(TAG_AUDIO, 6100, b"\xaf\x01" + b"\x00" * 9000)  # too long for ADTS
    muxer.on_unpublish()
    assert len(m3u8.load(muxer.m3u8_path).segments) == 3
    assert len([r for r in caplog.records if r.name == "tidecast.hls"]) == 1


def test_audio_only_streams_cut_at_the_audio_fragment(tags: Tags, tmp_path: Path) -> None:
    audio = [t for t in tags if t[0] != TAG_VIDEO]
    muxer = mux(audio, Hls(hls_path=str(tmp_path), hls_fragment=1.0, hls_aof_ratio=2.0))
    playlist = m3u8.load(muxer.m3u8_path)
    durations = [s.duration for s in playlist.segments]
    assert len(durations) == 3 and all(abs(d - 2.0) < 0.05 for d in durations), durations
    first = tmp_path / "live" / "s-0.ts"
    assert decode_errors(first) == ""
    pes, _ = parse_ts(first.read_bytes())
    assert {p.pid for p in pes} == {AUDIO_PID}
    pcrs = [p.pcr for p in pes if p.pcr is not None]
    assert len(pcrs) == len(pes) and max(b - a for a, b in itertools.pairwise(pcrs)) <= 9000


def test_video_only_and_late_audio(tags: Tags, tmp_path: Path) -> None:
    video = [t for t in tags if t[0] != TAG_AUDIO]
    muxer = mux(video, Hls(hls_path=str(tmp_path / "v"), hls_fragment=2.0))
    assert len(m3u8.load(muxer.m3u8_path).segments) == 3
    assert decode_errors(Path(muxer.m3u8_path).parent / "s-1.ts") == ""
    # Audio whose sequence header comes after the first keyframe joins at the next segment.
    audio_header = next(t for t in tags if t[0] == TAG_AUDIO)
    late = [t for t in tags if t is not audio_header and not (t[0] == TAG_AUDIO and t[1] < 1500)]
    late.insert(next(i for i, t in enumerate(late) if t[1] >= 1500), (TAG_AUDIO, 1500, audio_header[2]))
    muxer = mux(late, Hls(hls_path=str(tmp_path / "late"), hls_fragment=3.0))
    folder = Path(muxer.m3u8_path).parent
    assert {p.pid for p in parse_ts((folder / "s-0.ts").read_bytes())[0]} == {VIDEO_PID}
    assert {p.pid for p in parse_ts((folder / "s-1.ts").read_bytes())[0]} == {VIDEO_PID, AUDIO_PID}
    # Cut early, at the first keyframe after the audio appeared, so its PMT can announce it.
    assert [s.duration for s in m3u8.load(muxer.m3u8_path).segments] == [2.0, 3.0, 1.0]


def test_paths_prefix_and_reload(tags: Tags, tmp_path: Path) -> None:
    hls = Hls(
        hls_path=str(tmp_path),
        hls_m3u8_file="[vhost]/[app]/[stream]/index.m3u8",
        hls_ts_file="[vhost]/[app]/[stream]/[2006][01][02]/[15][04][05]-[999]-[seq].ts",
    )
    muxer = mux(tags, hls)
    playlist = m3u8.load(muxer.m3u8_path)
    assert muxer.m3u8_path == str(tmp_path / "__defaultVhost__" / "live" / "s" / "index.m3u8")
    day = time.strftime("%Y%m%d")
    assert all(s.uri.startswith(f"{day}/") and s.uri.endswith(f"-{n}.ts") for n, s in enumerate(playlist.segments))
    assert all((Path(muxer.m3u8_path).parent / s.uri).exists() for s in playlist.segments)
    # A prefix is the base URL of hls_path (as SRS documents it).
    prefixed = mux(tags, Hls(hls_path=str(tmp_path / "p"), hls_entry_prefix="http://cdn.example/hls"))
    assert m3u8.load(prefixed.m3u8_path).segments[0].uri == "http://cdn.example/hls/live/s-0.ts"
    # The settings object is replaced on reload and read at each decision.
    muxer = HlsMuxer(Hls(hls_path=str(tmp_path / "r"), hls_fragment=3.0), "v", "live", "s")
    muxer.on_publish()
    for type_id, ts, payload in tags:
        if ts >= 3500 and muxer.settings.hls_fragment == 3.0:
            muxer.settings = Hls(hls_path=str(tmp_path / "r"), hls_fragment=1.0)
        muxer.on_message(type_id, ts, payload)
    muxer.on_unpublish()
    assert [s.duration for s in m3u8.load(muxer.m3u8_path).segments] == [3.0, 1.0, 1.0, 1.0]


def test_cutting_without_waiting_for_keyframes(tags: Tags, tmp_path: Path) -> None:
    muxer = mux(tags, Hls(hls_path=str(tmp_path), hls_fragment=0.5, hls_wait_keyframe=False))
    playlist = m3u8.load(muxer.m3u8_path)
    assert all(abs(s.duration - 0.52) < 0.05 for s in playlist.segments[:-1])
    assert playlist.target_duration == 1 == math.ceil(max(s.duration for s in playlist.segments))
    assert decode_errors(ended_copy(Path(muxer.m3u8_path))) == ""


def test_a_restart_after_kill_9_numbers_on_after_the_old_playlist(tags: Tags, tmp_path: Path) -> None:
    """A crashed run's playlist said MEDIA-SEQUENCE 40 with 3 segments: the next run starts at 43 behind a
    discontinuity, so no cached segment name or sequence number comes back with other media."""
    live = tmp_path / "live"
    live.mkdir()
    (live / "s.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-TARGETDURATION:2\n"
        + "".join(f"#EXTINF:2.000,\ns-{n}.ts\n" for n in (40, 41, 42))
    )
    mux(tags, Hls(hls_path=str(tmp_path)))
    playlist = m3u8.load(str(live / "s.m3u8"))
    assert playlist.media_sequence == 43
    assert playlist.segments[0].uri == "s-43.ts" and playlist.segments[0].discontinuity
    assert not (live / "s-40.ts").exists()


def test_timestamps_that_stop_advancing_never_grow_one_segment_for_ever(tmp_path: Path, tags: Tags) -> None:
    muxer = HlsMuxer(Hls(hls_path=str(tmp_path), hls_fragment=1.0), "__defaultVhost__", "live", "s")
    muxer.on_publish()
    video = [(t, ts, p) for t, ts, p in tags if t == TAG_VIDEO]
    fed = 0
    while muxer.file is None:  # the sequence header, then the keyframe that opens a segment
        muxer.on_message(*video[fed])
        fed += 1
    stuck_ts = video[fed - 1][1]
    muxer.on_message(TAG_VIDEO, stuck_ts, video[fed][2])
    muxer.cut_if_stalled(time.time() + 9.0)  # what the manager's tick does every second
    assert muxer.file is not None, "not open long enough yet (hls_fragment 1: the 10 s minimum)"
    muxer.cut_if_stalled(time.time() + 11.0)  # as if it had been open 11 s of wall time
    assert muxer.file is None, "cut on wall time"
    assert not list((tmp_path / "live").glob("*.tmp")), "a segment whose timestamps never moved is dropped"
    muxer.on_unpublish()


def test_a_directory_removed_under_a_live_stream_is_made_again(tags: Tags, tmp_path: Path) -> None:
    """Directories are made once, not before every file; one that an operator (or a cleanup job) removes
    while the stream runs is made again at the next file, and the stream's HLS goes on."""
    import shutil

    muxer = HlsMuxer(Hls(hls_path=str(tmp_path)), "__defaultVhost__", "live", "s")
    muxer.on_publish()
    half = len(tags) // 2
    for message in tags[:half]:
        muxer.on_message(*message)
    assert muxer.playlist.segments
    muxer._abandon_segment()  # the open file goes with its directory
    shutil.rmtree(tmp_path / "live")
    for message in tags[half:]:
        muxer.on_message(*message)
    muxer.on_unpublish()
    playlist = m3u8.load(str(tmp_path / "live" / "s.m3u8"))
    assert playlist.segments and all((tmp_path / "live" / seg.uri).exists() for seg in playlist.segments[-1:])


def test_the_manager_tick_cuts_a_stalled_segment_of_a_published_stream(tmp_path: Path, tags: Tags) -> None:
    """The wall-time cut runs from HlsManager.tick (once a second in the server), not per message: a stream
    published through the hub whose timestamps stop still gets its segment cut, and a stream that is
    fine is left alone."""
    import asyncio

    from test_live_core import FakeClock
    from tidecast.config import parse_text
    from tidecast.hls.manager import HlsManager
    from tidecast.live.client import Client
    from tidecast.live.hub import Hub, Publication, Target

    async def main() -> None:
        hls = f"hls {{ enabled on; hls_path {tmp_path}; hls_fragment 1; }}"
        conf = parse_text(f"listen 1935;\nvhost __defaultVhost__ {{\n{hls}\n}}\n")
        hub = Hub(conf, FakeClock(), server_id="vid-test")
        manager = HlsManager(hub)
        hub.observers.append(manager)
        pub = await hub.publish(Target("__defaultVhost__", "live", "s"), Client("c1", "", "fmle-publish", lambda: None))
        assert isinstance(pub, Publication)
        muxer = manager.muxers[("__defaultVhost__", "live", "s")]
        video = [(t, ts, p) for t, ts, p in tags if t == TAG_VIDEO]
        fed = 0
        while muxer.file is None:
            pub.stream.on_media(*video[fed])
            fed += 1
        manager.tick(0.0)
        assert muxer.file is not None, "open for a moment only: left alone"
        muxer._wall_deadline -= 11.0  # as if it had been open 11 s of wall time
        manager.tick(0.0)
        assert muxer.file is None, "cut on wall time by the tick"
        pub.close()
        await manager.close()

    asyncio.run(main())
