"""A disk that blocks HLS writes delays the HLS files only: players, publishers and the API go on.

The stand-in for an NFS server that stops answering is a named pipe at the
temporary name of a segment not written yet: opening it for writing blocks
(in the kernel, as a hung mount does) until someone reads it. Before the file
worker, that open ran on the event loop and froze every connection of the
server.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import m3u8
import pytest
from testkit.helpers import Publisher, TidecastProcess, http_get, wait_for, wait_stream_live
from testkit.players import read_fifo, serving_while

from tidecast.hls.segmenter import FILE_BUFFER

Factory = Callable[..., TidecastProcess]

HLS = "hls {{ enabled on; hls_fragment 1; hls_window 20; hls_path {path}; }}"
# Served by tidecast's own HTTP server (its root is ./html), which low-latency HLS needs.
FMP4 = "hls {{ enabled on; hls_variant {variant}; hls_part 0.2; hls_fragment 1; hls_window 20; hls_path ./html; }}"
BLOCKED_S = 4.0
BACKLOG_HLS = 'tidecast_file_backlog_bytes{writer="hls"}'
BACKLOG_DVR = 'tidecast_file_backlog_bytes{writer="dvr"}'


def _listed(playlist: Path, suffix: str = ".ts") -> list[int]:
    try:
        text = playlist.read_text()
    except FileNotFoundError:
        return []
    names = [seg.uri for seg in m3u8.loads(text).segments]
    return [int(m.group(1)) for name in names if (m := re.search(rf"-(\d+){re.escape(suffix)}$", name))]


@contextlib.contextmanager
def _publishing(tidecast: Factory, clip: Path, hls_dir: Path, name: str) -> Iterator[TidecastProcess]:
    """A server writing HLS into `hls_dir`, `name` published to it and its first segment listed."""
    hls_dir.mkdir()
    srv = tidecast(vhost=HLS.format(path=hls_dir))
    with Publisher(clip, f"{srv.rtmp}/live/{name}"):
        wait_stream_live(srv, name)
        wait_for(lambda: _listed(hls_dir / "live" / f"{name}.m3u8"), timeout=10, what="a first segment")
        yield srv


def test_blocked_segment_write_stalls_hls_but_not_players_or_api(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    hls_dir = tmp_path / "hls"
    playlist = hls_dir / "live" / "nas.m3u8"
    with _publishing(tidecast, clip, hls_dir, "nas") as srv:
        # Two segments ahead of the newest listed one (the next may be open already).
        blocked = max(_listed(playlist)) + 2
        fifo = hls_dir / "live" / f"nas-{blocked}.ts.tmp"
        os.mkfifo(fifo)
        # The segment before it renamed into place: the next thing the worker does is open the pipe,
        # and everything queued behind that (this segment's playlist too) waits, in order.
        before = hls_dir / "live" / f"nas-{blocked - 1}.ts"
        wait_for(before.exists, timeout=10, what="the segment before the blocked one")
        time.sleep(1.5)
        stuck = max(_listed(playlist))
        assert stuck < blocked, "the segment behind the named pipe was listed: nothing blocked"

        api_waits, kept_up = serving_while(srv, "nas", BLOCKED_S)
        assert max(_listed(playlist)) == stuck, "HLS went on while its disk was blocked"
        assert max(api_waits) < 1.0, f"the API took {max(api_waits):.2f}s while HLS was blocked"
        assert kept_up, "a player starved while HLS was blocked"
        # What waits for the disk is on /metrics: BLOCKED_S of a ~1 Mbit/s clip, at least 100 kB.
        waiting = srv.metrics()
        assert waiting[BACKLOG_HLS] > 100_000 and waiting[BACKLOG_DVR] == 0, waiting

        reader, got = read_fifo(fifo)
        # Once the disk answers, the backlog is written in order and the playlist moves on past it.
        wait_for(lambda: max(_listed(playlist)) > blocked + 1, timeout=15, what="HLS to catch up")
        wait_for(lambda: srv.metrics()[BACKLOG_HLS] < FILE_BUFFER, timeout=5, what="the backlog gauge to fall")
        reader.join(10)
        assert got and len(got[0]) % 188 == 0 and len(got[0]) > 0, (
            f"the blocked segment's bytes: {len(got[0]) if got else got}"
        )
        listed = _listed(playlist)
        assert listed == list(range(listed[0], listed[-1] + 1)), f"sequence numbers with holes: {listed}"


def test_a_segment_the_disk_refuses_is_listed_as_a_gap(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    """The rename of one segment fails (a directory squats its name): the playlist lists it as an
    EXT-X-GAP, so the sequence numbers of the segments after it still name the right media."""
    hls_dir = tmp_path / "hls"
    playlist = hls_dir / "live" / "gap.m3u8"
    with _publishing(tidecast, clip, hls_dir, "gap") as srv:
        refused = max(_listed(playlist)) + 2
        (hls_dir / "live" / f"gap-{refused}.ts").mkdir()
        wait_for(lambda: max(_listed(playlist)) >= refused + 2, timeout=15, what="segments after the refused one")
        parsed = m3u8.loads(playlist.read_text())
    by_number = {parsed.media_sequence + i: seg for i, seg in enumerate(parsed.segments)}
    assert by_number[refused].uri == f"gap-{refused}.ts" and by_number[refused].gap_tag
    for number, seg in by_number.items():
        assert seg.uri == f"gap-{number}.ts", f"media sequence {number} names {seg.uri}"
        if number != refused:
            assert not seg.gap_tag and (hls_dir / "live" / seg.uri).is_file()
    assert f"gap-{refused}.ts" in srv.log() and "file error" in srv.log()


@pytest.mark.parametrize("variant", ["fmp4", "lowlatency"])
def test_blocked_fmp4_segment_write_stalls_the_disk_playlist_only(tidecast: Factory, clip: Path, variant: str) -> None:
    """fMP4 segments, init segments and playlists go through the same file worker. With low latency the
    in-memory playlist goes on past the blocked segment, and every segment it names is served from memory."""
    srv = tidecast(vhost=FMP4.format(variant=variant))
    folder = srv.html / "live"
    disk = folder / "cmaf.m3u8"
    with Publisher(clip, f"{srv.rtmp}/live/cmaf"):
        wait_stream_live(srv, "cmaf")
        wait_for(lambda: _listed(disk, ".m4s"), timeout=10, what="a first segment")
        blocked = max(_listed(disk, ".m4s")) + 2
        fifo = folder / f"cmaf-{blocked}.m4s.tmp"
        os.mkfifo(fifo)
        wait_for((folder / f"cmaf-{blocked - 1}.m4s").exists, timeout=10, what="the segment before the blocked one")
        time.sleep(1.5)
        stuck = max(_listed(disk, ".m4s"))
        assert stuck < blocked, "the segment behind the named pipe was listed: nothing blocked"

        api_waits, kept_up = serving_while(srv, "cmaf", BLOCKED_S)
        assert max(_listed(disk, ".m4s")) == stuck, "the disk playlist went on while its disk was blocked"
        assert max(api_waits) < 1.0, f"the API took {max(api_waits):.2f}s while HLS was blocked"
        assert kept_up, "a player starved while HLS was blocked"
        if variant == "lowlatency":
            status, body, _ = http_get(f"{srv.http}/live/cmaf.m3u8")
            assert status == 200
            named = [int(n) for n in re.findall(r"#EXTINF:[\d.]+,\s*\ncmaf-(\d+)\.m4s", body.decode())]
            assert named == list(range(named[0], named[-1] + 1)), f"the in-memory playlist has holes: {named}"
            assert named[-1] > blocked + 1, f"the in-memory playlist stopped at {named[-1]} (blocked {blocked})"
            for number in (blocked, named[-1]):
                status, data, _ = http_get(f"{srv.http}/live/cmaf-{number}.m4s")
                assert status == 200 and data[4:8] == b"moof", f"segment {number}: HTTP {status} {data[:8]!r}"
            status, data, _ = http_get(f"{srv.http}/live/cmaf-init-0.mp4")
            assert status == 200 and data[4:8] == b"ftyp", f"the init segment: HTTP {status}"

        reader, got = read_fifo(fifo)
        wait_for(lambda: max(_listed(disk, ".m4s")) > blocked + 1, timeout=15, what="the disk playlist to catch up")
        reader.join(10)
        assert got and got[0][4:8] == b"moof", f"the blocked segment's bytes: {got[0][:8] if got else got!r}"
        listed = _listed(disk, ".m4s")
        assert listed == list(range(listed[0], listed[-1] + 1)), f"sequence numbers with holes: {listed}"
