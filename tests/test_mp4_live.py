"""The live fragmented-MP4 endpoint (`/app/stream.mp4`) against a real tidecast, read by ffprobe/ffmpeg."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit import ff9
from testkit.ff9 import FFMPEG9, needs_ffmpeg9
from testkit.helpers import (
    Publisher,
    TidecastProcess,
    decode_errors,
    ffprobe_json,
    http_get,
    record,
    wait_for,
    wait_stream_live,
)

Factory = Callable[..., TidecastProcess]
REMUX = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }"


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level (type, whole box) pairs of complete boxes; a trailing partial box is left out."""
    out = []
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        if size < 8 or pos + size > len(data):
            break
        out.append((kind, data[pos : pos + size]))
        pos += size
    return out


def _child(box: bytes, path: list[bytes]) -> bytes | None:
    """The first box along `path` inside a container box (header skipped)."""
    body = box[8:]
    for kind in path:
        found = None
        for k, b in _boxes(body):
            if k == kind:
                found = b
                break
        if found is None:
            return None
        body = found[8:]
        box = found
    return box


def _first_video_flags(chunks: list[bytes]) -> int | None:
    for chunk in chunks:
        for kind, data in _boxes(chunk):
            if kind != b"moof":
                continue
            for traf_kind, traf in _boxes(data[8:]):
                tfhd = _child(traf, [b"tfhd"])
                trun = _child(traf, [b"trun"])
                if traf_kind != b"traf" or tfhd is None or trun is None:
                    continue
                if struct.unpack_from(">I", tfhd, 12)[0] == 1:
                    # trun: header, version/flags, count, data offset, then duration, size, flags...
                    return int(struct.unpack_from(">I", trun, 8 + 4 + 8 + 4 + 4)[0])
    return None


class RawPlayer:
    """A raw HTTP/1.1 reader of the MP4 endpoint that de-chunks the body as it comes."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.raw = b""
        self.headers = b""
        self.body = bytearray()
        self.chunks: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            if not self.headers:
                if b"\r\n\r\n" not in buf:
                    continue
                self.headers, buf = buf.split(b"\r\n\r\n", 1)
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(buf[:line_end], 16)
                if len(buf) < line_end + 2 + size + 2:
                    break
                chunk = buf[line_end + 2 : line_end + 2 + size]
                self.chunks.append(chunk)
                self.body += chunk
                buf = buf[line_end + 2 + size + 2 :]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)


def test_ffprobe_reads_codecs_and_ffmpeg_decodes_cleanly(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/mp4"):
        wait_stream_live(srv, "mp4")
        info = ffprobe_json(f"{srv.http}/live/mp4.mp4")
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
        assert streams["audio"]["codec_name"] == "aac"
        assert int(streams["audio"]["sample_rate"]) == 44100
        out = tmp_path / "out.mp4"
        proc = record(f"{srv.http}/live/mp4.mp4", out, 5)
        _, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err.decode(errors="replace")
        assert decode_errors(out) == ""
        got = ffprobe_json(str(out))
        assert float(got["format"]["duration"]) >= 4.5
        assert sorted(s["codec_name"] for s in got["streams"]) == ["aac", "h264"]
        # The API counts the MP4 players as clients of their own kind.
        status, _, headers = http_get(f"{srv.http}/live/mp4.mp4", method="HEAD")
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        assert headers["Access-Control-Allow-Origin"] == "*"


def test_join_starts_with_init_then_keyframe_fragment_shared_by_players(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/share"):
        wait_stream_live(srv, "share")
        players = [RawPlayer(srv.http_port, "/live/share.mp4") for _ in range(2)]
        try:
            wait_for(lambda: all(len(p.chunks) >= 8 for p in players), 15, what="fragments at both players")
            for p in players:
                assert b"200 OK" in p.headers.split(b"\r\n")[0]
                assert b"content-type: video/mp4" in p.headers.lower()
                boxes = _boxes(p.chunks[0])
                kinds = [k for k, _ in boxes]
                assert kinds[:2] == [b"ftyp", b"moov"], kinds
                moov = boxes[1][1]
                stsd = _child(moov, [b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
                assert stsd is not None and stsd[16 + 4 : 16 + 8] == b"avc1"
                # The first video a player gets is a sync sample (a player joins on a keyframe).
                assert _first_video_flags(p.chunks) == 0x02000000
            # After the join, both receive the same fragments: bytes built once per flush.
            second = set(players[1].chunks[1:])
            common = [c for c in players[0].chunks[1:] if c in second]
            assert len(common) >= 4, (len(players[0].chunks), len(second))
            for c in common:
                assert [k for k, _ in _boxes(c)] == [b"moof", b"mdat"]
            # Each track's decode times only go forward across the fragments one player receives.
            times: dict[int, list[int]] = {}
            for chunk in players[0].chunks:
                for kind, data in _boxes(chunk):
                    if kind != b"moof":
                        continue
                    for traf_kind, traf in _boxes(data[8:]):
                        if traf_kind != b"traf":
                            continue
                        tfhd = _child(traf, [b"tfhd"])
                        tfdt = _child(traf, [b"tfdt"])
                        assert tfhd is not None and tfdt is not None
                        track = struct.unpack_from(">I", tfhd, 12)[0]
                        times.setdefault(track, []).append(struct.unpack_from(">Q", tfdt, 12)[0])
            assert set(times) == {1, 2}
            for track_times in times.values():
                assert track_times == sorted(track_times) and len(set(track_times)) >= 4
            clients = srv.api_json("/api/v1/clients?count=100")["clients"]
            assert sum(1 for c in clients if c["type"] == "mp4-play") == 2
        finally:
            for p in players:
                p.close()
        wait_for(
            lambda: not any(c["type"] == "mp4-play" for c in srv.api_json("/api/v1/clients")["clients"]),
            10,
            what="MP4 players to leave",
        )


def test_missing_stream_is_404_with_cors_and_options_answers(tidecast: Factory) -> None:
    srv = tidecast(vhost=REMUX)
    status, body, headers = http_get(f"{srv.http}/live/nothing.mp4")
    assert status == 404 and b"not published" in body
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, _, headers = http_get(f"{srv.http}/live/nothing.mp4", method="OPTIONS")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"


def test_a_file_of_that_name_is_served_as_a_file(tidecast: Factory) -> None:
    srv = tidecast(vhost=REMUX)
    (srv.html / "live").mkdir()
    (srv.html / "live" / "rec.mp4").write_bytes(b"\x00\x00\x00\x08free")
    status, body, headers = http_get(f"{srv.http}/live/rec.mp4")
    assert status == 200 and body == b"\x00\x00\x00\x08free"
    assert headers["Content-Type"] == "video/mp4"


def test_http_remux_off_is_404(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost="")
    with Publisher(clip, f"{srv.rtmp}/live/off"):
        wait_stream_live(srv, "off")
        status, body, _ = http_get(f"{srv.http}/live/off.mp4")
        assert status == 404 and b"http_remux is off" in body


E_RTMP = {"hevc": ("hevc", "aac"), "av1": ("av1", "aac"), "vp9": ("vp9", "opus")}


@pytest.fixture(scope="module")
def ertmp_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if FFMPEG9 is None:
        pytest.skip("needs the imageio-ffmpeg wheel: pip install -e '.[test]'")
    d = tmp_path_factory.mktemp("mp4-ertmp")
    return {name: ff9.make_clip(d / f"{name}.flv", v, a, seconds=3) for name, (v, a) in E_RTMP.items()}


@needs_ffmpeg9
@pytest.mark.parametrize("name", list(E_RTMP))
def test_enhanced_rtmp_codecs_over_live_mp4(
    name: str, tidecast: Factory, ertmp_clips: dict[str, Path], tmp_path: Path
) -> None:
    """HEVC, AV1 (with AAC) and VP9 (with Opus) published over E-RTMP come out as a clean live MP4."""
    assert FFMPEG9 is not None
    srv = tidecast(vhost=REMUX)
    log = tmp_path / "publisher.log"
    with open(log, "wb") as out:
        pub = subprocess.Popen(
            [FFMPEG9, "-v", "error", "-re", "-stream_loop", "-1", "-i", str(ertmp_clips[name]), "-c", "copy",
             "-f", "flv", f"{srv.rtmp}/live/{name}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
        try:
            wait_stream_live(srv, name, timeout=15)
            # The sample entry carries the picture size (VP9's comes from a keyframe): MSE refuses 0x0.
            raw = RawPlayer(srv.http_port, f"/live/{name}.mp4")
            try:
                wait_for(lambda: raw.chunks, 10, what="the init segment")
                init = raw.chunks[0]
            finally:
                raw.close()
            fourcc = {"hevc": b"hvc1", "av1": b"av01", "vp9": b"vp09"}[name]
            entry = init.find(fourcc)
            assert entry > 0 and struct.unpack_from(">HH", init, entry + 4 + 24) == (320, 240)
            got = tmp_path / f"{name}.mp4"
            subprocess.run(
                [FFMPEG9, "-v", "error", "-y", "-i", f"{srv.http}/live/{name}.mp4", "-t", "3", "-c", "copy", str(got)],
                check=True, capture_output=True, timeout=40,
            )  # fmt: skip
            video, audio = E_RTMP[name]
            found = {s["type"]: s for s in ff9.streams(str(got))}
            assert found["video"]["codec"] == video
            assert (found["video"]["width"], found["video"]["height"]) == (320, 240)
            assert found["audio"]["codec"] == audio
            assert ff9.decode_errors(str(got)) == ""
        finally:
            pub.terminate()
            pub.wait(10)
