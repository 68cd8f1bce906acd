"""Attacks on a running tidecast (issue 20), shared by tests/test_attack_campaign.py and bench/attacks.py.

* `HealthyMeter`: a real publisher (ffmpeg `-re` looping a ~1 Mbit/s H.264+AAC clip) and a real RTMP
  player in a process of its own (`python3 -m testkit.attacks view ...`, so nothing the attackers do
  in this process delays its reads) that stamps each media message's arrival. `window(start, end)`
  gives the worst stall: the largest growth of lateness over its earlier minimum, where
  lateness_i = (arrival_i - arrival_0) - (ts_i - ts_0). Merged writes (a batch every `mw_latency`
  of media) make it about one merge window on a healthy server; anything above that is a stall.
* `RssSampler`: the server's RSS from /proc every 50 ms.
* byte builders for hostile input (AMF reference bombs, commands, FLV tags, aggregates).
* `CLASSES`: one raw-socket attacker per class of the issue's findings, each returning an `Outcome`
  (what it observed and what went wrong), at the test's or the bench's `Scale`, with the RSS growth
  it may cost (`allowance`, derived from live/limits.py and rtmp/constants.py).
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.helpers import ROOT, Publisher, TidecastProcess, http_get, stop_process, wait_stream_live
from testkit.media import make_clip
from testkit.rtmpclient import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    RtmpTestClient,
    SyntheticPublisher,
    closed_within,
    stalled_player,
)
from tidecast.codec import amf0
from tidecast.hls.segmenter import WALL_CUT_MIN_S
from tidecast.live import limits as L
from tidecast.net.sockets import CLOSE_GRACE_S
from tidecast.rtmp import constants as C
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import encode_message

MiB = 1024 * 1024

# ---------------------------------------------------------------- hostile bytes


def amf_key(name: str) -> bytes:
    return struct.pack(">H", len(name)) + name.encode()


def amf_obj(*members: tuple[str, bytes]) -> bytes:
    return b"\x03" + b"".join(amf_key(k) + v for k, v in members) + b"\x00\x00\x09"


def amf_ref(index: int) -> bytes:
    return b"\x07" + struct.pack(">H", index)


def amf0_bomb(depth: int, first_ref: int) -> bytes:
    """A strict array of `depth + 1` objects, each made of two references to the one before.

    `first_ref` is the reference index the array itself gets (objects decoded
    earlier in the message count). About 16 bytes a level; 2**depth values once expanded.
    """
    levels = [amf_obj(("s", amf0.encode("x")))]
    for k in range(1, depth + 1):
        prev = first_ref + k  # the array is first_ref, level j is first_ref + 1 + j
        levels.append(amf_obj(("a", amf_ref(prev)), ("b", amf_ref(prev))))
    return b"\x0a" + struct.pack(">I", len(levels)) + b"".join(levels)


def amf3_bomb(depth: int) -> bytes:
    """The same shape in AMF3 (behind AMF0's AVM+ marker): a dense array of objects by reference."""
    out = bytearray(b"\x11\x09")
    out += bytes((((depth + 1) << 1) | 1,))  # dense count (depth < 63: one-byte u29)
    out += b"\x01"  # no associative part
    out += b"\x0a\x0b\x01" + b"\x03s" + b"\x06\x03x" + b"\x01"  # {s: "x"}, dynamic, anonymous
    for k in range(1, depth + 1):
        # The array is object 0, level j is object 1 + j: level k refers to object k.
        out += b"\x0a\x0b\x01" + b"\x03a" + bytes((0x0A, k << 1)) + b"\x03b" + bytes((0x0A, k << 1)) + b"\x01"
    return bytes(out)


def command(payload: bytes, stream_id: int = 0, type_id: int = C.COMMAND_AMF0) -> bytes:
    return encode_message(C.CSID_COMMAND, type_id, 0, stream_id, payload, C.DEFAULT_CHUNK_SIZE)


def connect_payload(tc_url: bytes, tid: float = 1.0, extra: bytes = b"") -> bytes:
    """connect(tid, {app: "live", tcUrl: <raw AMF0 value>}) with the command object as reference 0."""
    return amf0.encode("connect", tid) + amf_obj(("app", amf0.encode("live")), ("tcUrl", tc_url)) + extra


def data_message(payload: bytes, type_id: int = C.DATA_AMF0, chunk_size: int = C.DEFAULT_CHUNK_SIZE) -> bytes:
    return encode_message(C.CSID_DATA, type_id, 0, 1, payload, chunk_size)


def metadata_bomb(bomb: bytes) -> bytes:
    """@setDataFrame onMetaData {k: <bomb>}."""
    return amf0.encode("@setDataFrame", "onMetaData") + b"\x08\x00\x00\x00\x01" + amf_key("k") + bomb + b"\x00\x00\x09"


def set_chunk_size(size: int) -> bytes:
    return encode_message(C.CSID_PROTOCOL, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size), 128)


def flv_tag(type_id: int, ts: int, body: bytes) -> bytes:
    """One FLV tag as an Aggregate message carries it (header, body, back pointer)."""
    head = bytes((type_id,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes((ts >> 24,))
    return head + b"\x00\x00\x00" + body + struct.pack(">I", 11 + len(body))


def avc_sequence_header(sps: bytes, pps: bytes = b"\x68\xce\x38\x80") -> bytes:
    """An FLV video tag body carrying one SPS and one PPS of any size."""
    record = b"\x01" + sps[1:4] + b"\xff\xe1" + struct.pack(">H", len(sps)) + sps
    return b"\x17\x00\x00\x00\x00" + record + b"\x01" + struct.pack(">H", len(pps)) + pps


def bits_to_bytes(bits: str) -> bytes:
    bits += "1" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def crafted_sps(size: int) -> bytes:
    """Baseline profile, poc type 1 with a cycle of 2**32 - 2 entries, then all ones: every entry reads
    one bit, and each read used to shift an integer as long as the SPS (quadratic)."""
    head = "01000010" + "0" * 16 + "1" + "1" + "010" + "1" + "1" + "1" + "0" * 31 + "1" + "1" * 31
    sps = b"\x67" + bits_to_bytes(head)
    return sps + b"\xff" * (size - len(sps))


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """A mutation of a valid input: byte flips, inserted/deleted/duplicated runs, truncation, or noise."""
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 300))
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if not data:
            data += rng.randbytes(rng.randint(1, 8))
        elif op < 0.45:  # flip a byte to a random or boundary value
            data[rng.randrange(len(data))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op < 0.6:  # insert a run
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.75:  # delete a run
            i = rng.randrange(len(data))
            del data[i : i + rng.randint(1, 16)]
        elif op < 0.9:  # duplicate a slice elsewhere
            i = rng.randrange(len(data))
            part = data[i : i + rng.randint(1, 64)]
            j = rng.randrange(len(data) + 1)
            data[j:j] = part
        else:  # truncate
            del data[rng.randrange(len(data)) :]
    return bytes(data)


def publish_session(stream: str, tc_url: str, frames: int = 50, seed: int = 0) -> bytes:
    """What an encoder sends after the handshake: connect, releaseStream, FCPublish, createStream,
    publish, metadata, sequence headers and `frames` video frames with audio (pipelined)."""
    rng = random.Random(seed)
    cmd = {"app": "live", "tcUrl": tc_url, "flashVer": "FMLE/3.0", "type": "nonprivate"}
    out = [
        command(amf0.encode("connect", 1.0, cmd)),
        command(amf0.encode("releaseStream", 2.0, None, stream)),
        command(amf0.encode("FCPublish", 3.0, None, stream)),
        command(amf0.encode("createStream", 4.0, None)),
        command(amf0.encode("publish", 5.0, None, stream, "live"), stream_id=1),
        data_message(amf0.encode("@setDataFrame", "onMetaData", {"width": 320.0, "height": 240.0})),
        encode_message(C.CSID_VIDEO, C.VIDEO, 0, 1, AVC_SEQUENCE_HEADER, 128),
        encode_message(C.CSID_AUDIO, C.AUDIO, 0, 1, AAC_SEQUENCE_HEADER, 128),
    ]
    for i in range(frames):
        head = b"\x17\x01\x00\x00\x00" if i % 25 == 0 else b"\x27\x01\x00\x00\x00"
        out.append(encode_message(C.CSID_VIDEO, C.VIDEO, i * 40, 1, head + rng.randbytes(600), 128))
        out.append(encode_message(C.CSID_AUDIO, C.AUDIO, i * 40, 1, b"\xaf\x01" + rng.randbytes(100), 128))
    return b"".join(out)


# ---------------------------------------------------------------- the healthy meter

STALL_SLACK_MS = 150.0  # scheduling on a loaded 2-core CI machine, besides the merge window


@dataclass
class Health:
    """What the healthy player saw in one window."""

    messages: int
    worst_stall_ms: float  # the largest growth of lateness over its earlier minimum
    max_gap_ms: float  # the longest wall time between two arrivals
    media_s: float  # media time received in the window
    wall_s: float
    ended: str  # why the player's connection ended, "" while it plays

    @property
    def keeps_real_time(self) -> bool:
        return self.wall_s > 0 and self.media_s >= self.wall_s - 1.0


def stall_figures(
    samples: list[tuple[int, float]], since: float = -math.inf, until: float = math.inf
) -> tuple[float, float]:
    """(worst stall, max gap) in ms of (timestamp ms, arrival s) samples in arrival order.

    Only stalls and gaps that end at or after `since` count (earlier samples set the minimum lateness);
    `until` adds a last point where nothing more arrived, so silence at the end counts too.
    """
    if not samples:
        return 0.0, 0.0
    points = list(samples)
    if until < math.inf and until > points[-1][1]:
        points.append((points[-1][0], until))
    ts0, a0 = points[0]
    low = math.inf
    worst = gap = 0.0
    prev = a0
    for ts, arrival in points:
        late = (arrival - a0) - (ts - ts0) / 1000.0
        if arrival >= since:
            worst = max(worst, late - low)
            gap = max(gap, arrival - max(prev, since))
        low = min(low, late)
        prev = arrival
    return worst * 1000.0, gap * 1000.0


class Viewer:
    """The healthy player: an RTMP player in a process of its own, whose stamps come back on a pipe."""

    def __init__(self, host: str, port: int, stream: str, app: str = "live") -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testkit.attacks", "view", host, str(port), app, stream],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.samples: list[tuple[int, int, float]] = []  # type, timestamp, arrival
        self.ended = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.partition(" ")
            if kind == "m":
                t, ts, arrival = rest.split()
                self.samples.append((int(t), int(ts), float(arrival)))
            elif kind == "x":
                self.ended = rest.strip() or "closed"
        self.ended = self.ended or "viewer exited"

    def wait_media(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(s[0] == 9 for s in self.samples):
            if time.monotonic() > deadline or self.ended:
                raise AssertionError(f"the healthy player got no video within {timeout} s ({self.ended or 'no error'})")
            time.sleep(0.05)

    def window(self, start: float, end: float) -> Health:
        """The figures of [start, end], measured against the lateness of the 2 s before it too."""
        chosen = [(ts, a) for t, ts, a in list(self.samples) if t in (8, 9) and start - 2.0 <= a <= end]
        worst, gap = stall_figures(chosen, since=start, until=end)
        inside = [ts for ts, a in chosen if a >= start]
        media = (max(inside) - min(inside)) / 1000.0 if len(inside) > 1 else 0.0
        return Health(len(inside), worst, gap, media, end - start, self.ended)

    def close(self) -> None:
        stop_process(self.proc)
        self.thread.join(5)


def _view(host: str, port: int, app: str, stream: str) -> None:
    """The viewer process: play, then print `m TYPE TS ARRIVAL` per media message as it arrives."""
    out = sys.stdout
    try:
        client = RtmpTestClient(host, port, app)
        client.play(stream)
        session, sock = client.session, client.sock
        sock.settimeout(None)
        while True:
            data = sock.recv(256 * 1024)
            now = time.monotonic()
            if not data:
                raise ConnectionError("server closed the connection")
            lines = [
                f"m {ev.type_id} {ev.timestamp} {now:.6f}\n"
                for ev in session.receive_data(data)
                if isinstance(ev, S.Message) and ev.type_id in (8, 9)
            ]
            for pending in session.data_to_send():
                sock.sendall(pending)
            if lines:
                out.write("".join(lines))
                out.flush()
    except BrokenPipeError:
        return  # the meter went away
    except Exception as exc:
        with contextlib.suppress(BrokenPipeError):
            out.write(f"x {type(exc).__name__}: {exc}\n")
            out.flush()


def healthy_clip(kbps: int = 1000) -> Path:
    """20 s of 320x240 H.264 with temporal noise (so the bitrate is real), CBR, keyframe a second, + AAC;
    made once per machine (about 2 s) and cached in the temp dir."""
    path = Path(tempfile.gettempdir()) / "tidecast-attacks" / f"healthy-{kbps}k.flv"
    return make_clip(path, seconds=20, kbps=kbps, size="320x240" if kbps <= 2000 else "1280x720", noise=True, cbr=True)


class HealthyMeter:
    """A healthy publisher and player of `stream` on `server`, watching for as long as it lives."""

    def __init__(self, server: TidecastProcess, stream: str = "healthy", kbps: int = 1000) -> None:
        self.stream = stream
        self.publisher = Publisher(
            healthy_clip(kbps), f"{server.rtmp}/live/{stream}", log=server.workdir / f"{stream}-publisher.log"
        )
        try:
            wait_stream_live(server, stream, timeout=15)
            self.viewer = Viewer(server.host, server.rtmp_port, stream)
            self.viewer.wait_media()
        except BaseException:
            self.publisher.stop()
            raise

    def window(self, start: float, end: float) -> Health:
        health = self.viewer.window(start, end)
        if self.publisher.proc.poll() is not None and not health.ended:
            health.ended = f"the healthy publisher exited with {self.publisher.proc.returncode}"
        return health

    def close(self) -> None:
        self.viewer.close()
        self.publisher.stop()


class RssSampler:
    """A process's RSS every `interval` seconds, from /proc (what the kernel charges it, socket buffers aside)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def read(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.read()))
            self._stop.wait(self.interval)

    def peak(self, start: float, end: float) -> int:
        return max((rss for t, rss in list(self.samples) if start <= t <= end), default=self.read())

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)


# ---------------------------------------------------------------- attack classes


@dataclass(frozen=True)
class Scale:
    """How hard: counts are multiplied by `n`; sustained attacks last `seconds`; `timeouts` waits out the
    server's own bounds (the 30 s send timeout, the 10 s header timeout, the 5 s reload parse budget)
    and checks they hold."""

    n: int = 1
    seconds: float = 1.5
    timeouts: bool = False


TEST = Scale()


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: object, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return bool(ok)


@dataclass(frozen=True)
class AttackClass:
    name: str
    finding: str  # what issue 20 found
    run: Callable[[TidecastProcess, Scale], Outcome]
    allowance: Callable[[Scale, TidecastProcess], int]  # RSS growth it may cost, from the limits
    bound: str  # how that allowance is made of the limits


# A server's fixed costs that any attack may touch (a few connections' buffers, aiohttp request objects,
# log records, Python's arenas rounding up): what "no state to speak of" is allowed.
SMALL = 24 * MiB
SHM = "/dev/shm"


def _client(srv: TidecastProcess, app: str = "live", **kw: Any) -> RtmpTestClient:
    return RtmpTestClient(srv.host, srv.rtmp_port, app, timeout=5.0, **kw)


def next_status(client: RtmpTestClient, timeout: float = 3.0) -> str:
    """The code of the first onStatus, "closed" if the server closed first, "" if nothing came."""
    deadline = time.monotonic() + timeout
    try:
        while not client.received.statuses:
            if time.monotonic() > deadline:
                return ""
            client.read_for(0.1)
    except OSError:
        return "closed" if not client.received.statuses else str(client.received.statuses[0].get("code"))
    return str(client.received.statuses[0].get("code"))


def raw_http(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `path` as written (no normalization): (status, first KB of the body); status 0 if cut off."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(1024)
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def _streams(srv: TidecastProcess) -> list[dict[str, Any]]:
    return list(srv.api_json("/api/v1/streams?count=1000")["streams"])


def _closing(clients: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for c in clients:
            with contextlib.suppress(OSError):
                (c.close if hasattr(c, "close") else c.sock.close)()


closing_all = contextlib.contextmanager(_closing)


# ---- path escape through names


def attack_names(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    tag = f"{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    pwn = Path(tempfile.gettempdir()) / f"tidecast-pwn-{tag}"
    victims = {srv.workdir / "victim.m3u8": b"precious", srv.workdir / "victim-7.ts": b"precious"}
    for path, data in victims.items():
        path.write_bytes(data)
    outside = {p for p in srv.workdir.rglob("*") if "hls" not in p.relative_to(srv.workdir).parts}
    escape = "../" * 12 + str(pwn).lstrip("/")
    streams = ["../../victim", escape, "a/../../victim", "var/www/abs", "bad\nname", "bad\x00nul", "x" * 300, "/abs"]
    apps = ["../..", "live/../..", "a\nb", "/abs", "..", ""]
    for _ in range(scale.n):
        for name in streams:
            for verb in ("publish", "play"):
                client = _client(srv)
                with closing_all([client]):
                    getattr(client, verb)(name)
                    code = next_status(client)
                    out.check(not code.endswith(".Start"), f"RTMP {verb} of {name[:40]!r} answered {code}")
        for app in apps:
            tc_url = f"rtmp://{srv.host}:{srv.rtmp_port}/{app}"
            try:
                client = _client(srv, app=app, tc_url=tc_url)
            except (OSError, TimeoutError):
                continue  # refused at connect and closed: fine
            with closing_all([client]):
                if client.connect_result is not None and not client.connect_result.ok:
                    continue
                client.publish("var/www/abs" if not app else "victim")
                code = next_status(client)
                # A leading or trailing / is stripped ("/abs" is app "abs"): only what could escape must fail.
                hostile = not app or ".." in app.split("/") or not app.isprintable()
                out.check(not hostile or not code.endswith(".Start"), f"RTMP publish under app {app!r} answered {code}")
        paths = [
            "/..%2F..%2Fvictim.flv",
            "/live/..%2F..%2Fvictim.flv",
            "/live/bad%0Aname.flv",
            "//var/www/abs.flv",
            "/live/%2e%2e/%2e%2e/victim.flv",
            "/../../victim.flv",
            "/../victim.m3u8",
            "/live/../../victim.m3u8",
            "/%2e%2e/victim.m3u8",
        ]
        for path in paths:
            status, body = raw_http(srv.host, srv.http_port, path)
            out.check(status != 200 or b"precious" not in body, f"HTTP {path} answered {status} with a victim file")
            out.check(status != 500, f"HTTP {path} answered 500")
    time.sleep(0.5)
    for path, data in victims.items():
        out.check(path.read_bytes() == data, f"{path.name} outside hls_path was changed")
    now = {p for p in srv.workdir.rglob("*") if "hls" not in p.relative_to(srv.workdir).parts}
    new = sorted(str(p.relative_to(srv.workdir)) for p in now - outside if p.suffix in (".m3u8", ".ts", ".tmp"))
    out.check(not new, f"files written outside hls_path: {new}")
    out.check(not list(pwn.parent.glob(pwn.name + "*")), f"{pwn}* was written")
    for s in _streams(srv):
        name = f"{s['app']}/{s['name']}"
        out.check(".." not in name and name.isprintable(), f"a stream named {name!r} exists")
    out.check("bad\nname" not in srv.log(), "a newline in a name reached the log")
    for path in victims:
        path.unlink()
    return out


# ---- AMF0/AMF3 reference bombs


def attack_amf_bombs(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    tc = amf0.encode(f"{srv.rtmp}/live")
    connects = {
        "connect tcUrl AMF0 bomb": command(connect_payload(amf0_bomb(24, first_ref=1))),
        "connect argument AMF0 bomb": command(connect_payload(tc, extra=amf0_bomb(24, first_ref=1))),
        "connect AMF3 bomb": command(b"\x00" + connect_payload(amf3_bomb(24)), type_id=C.COMMAND_AMF3),
    }
    metadata = {
        "onMetaData AMF0 bomb": metadata_bomb(amf0_bomb(24, 1)),
        "onMetaData AMF3 bomb": metadata_bomb(amf3_bomb(24)),
    }
    started: list[tuple[str, RtmpTestClient, float]] = []
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for i in range(2 * scale.n):
            for what, data in connects.items():
                client = _client(srv, connect=False)
                opened.append(client)
                client.send(data)
                started.append((what, client, time.monotonic()))
            for what, data in metadata.items():
                client = _client(srv)
                opened.append(client)
                client.publish(f"bomb-{i}-{len(started)}")
                client.wait_status("NetStream.Publish.Start")
                client.send(data_message(data))
                started.append((what, client, time.monotonic()))
        for what, client, t0 in started:
            closed = client.closed_within(max(0.1, t0 + 3.0 - time.monotonic()))
            out.check(closed, f"{what}: the connection was still open 3 s later")
    out.notes["bombs"] = len(started)
    out.check("too large" in srv.log(), "no 'too large' refusal in the log")
    return out


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 1000}-{time.monotonic_ns() % 10**8}"


KEY_FRAME = b"\x17\x01\x00\x00\x00"
INTER_FRAME = b"\x27\x01\x00\x00\x00"


def _publisher(srv: TidecastProcess, name: str, chunk_size: int = 0) -> RtmpTestClient:
    pub = _client(srv)
    pub.publish(name)
    pub.wait_status("NetStream.Publish.Start")
    if chunk_size:
        pub.session.set_chunk_size(chunk_size)
    pub.send(pub.session.send_media(C.VIDEO, 0, AVC_SEQUENCE_HEADER))
    return pub


def wait_frames(srv: TidecastProcess, name: str, count: int, timeout: float) -> int:
    """Wait until stream `name` has taken `count` media messages (or is gone); how many it took."""
    deadline = time.monotonic() + timeout
    frames = 0
    while time.monotonic() < deadline:
        found = [s for s in _streams(srv) if s["name"] == name]
        if not found:
            return frames
        frames = int(found[0]["frames"])
        if frames >= count:
            return frames
        time.sleep(0.05)
    return frames


def drain(sock: socket.socket, seconds: float) -> tuple[int, bool]:
    """Read and drop what comes for up to `seconds`: (bytes read, whether the server closed)."""
    deadline = time.monotonic() + seconds
    received = 0
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(min(0.5, remaining))
        try:
            data = sock.recv(256 * 1024)
        except TimeoutError:
            continue
        except OSError:
            return received, True
        if not data:
            return received, True
        received += len(data)
    return received, False


class SlowReader:
    """Reads `rate` bytes a second from a socket, in a thread: a player on a bad link."""

    def __init__(self, sock: socket.socket, rate: int) -> None:
        self.sock = sock
        self.rate = rate
        self.received = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        step = max(1, self.rate // 10)
        with contextlib.suppress(OSError):
            while not self.stop_flag.wait(0.1):
                self.sock.settimeout(0.05)
                with contextlib.suppress(TimeoutError):
                    data = self.sock.recv(step)
                    if not data:
                        return
                    self.received += len(data)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(2)
        self.sock.close()


def largest_file(root: Path, pattern: str) -> int:
    sizes = [0]
    for path in root.rglob(pattern):
        with contextlib.suppress(FileNotFoundError):  # a segment renamed or disposed meanwhile
            sizes.append(path.stat().st_size)
    return max(sizes)


# ---- huge frames against the GOP cache, and join bursts of it


def attack_gop_flood(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    frames = min(400, 100 * scale.n)
    blob = os.urandom(MiB)
    name = _unique("gop-flood")
    opened: list[Any] = []
    with closing_all(opened):
        pub = _publisher(srv, name, chunk_size=65536)
        opened.append(pub)
        sent = 0
        try:
            for i in range(frames):
                pub.sock.sendall(pub.session.send_media(C.VIDEO, i * 40, (KEY_FRAME if i == 0 else INTER_FRAME) + blob))
                sent += 1
                if i in (50, 60):  # join bursts of a 50 and a 60 MB GOP, by players that never read
                    opened.append(stalled_player(srv.host, srv.rtmp_port, name))
        except OSError as exc:
            out.check(False, f"the server closed a publisher of 1 MB frames after {sent}: {exc}")
        time.sleep(0.5)
        out.check(any(s["name"] == name for s in _streams(srv)), "the flooded stream is gone")
    out.notes.update(frames=sent, frame_bytes=len(blob), joiners=len(opened) - 1)
    return out


# ---- many players that never read, of a big-GOP stream


def attack_big_gop_players(srv: TidecastProcess, scale: Scale) -> Outcome:
    """8 Mbit/s, a keyframe every 10 s, the first GOP sent at once; 100 players that never read."""
    out = Outcome()
    name = _unique("big-gop")
    pub = SyntheticPublisher(srv.host, srv.rtmp_port, name, kbps=8000, gop=250, prefill=249, chunk_size=65536)
    players: list[socket.socket] = []
    with closing_all(players):
        try:
            while pub.frames < 249 and pub.error is None:
                time.sleep(0.02)
            for _ in range(100):
                players.append(stalled_player(srv.host, srv.rtmp_port, name))
            # Kicked SEND_TIMEOUT_S after it last took something, on the 1 s tick, then reset CLOSE_GRACE_S on.
            hold = L.SEND_TIMEOUT_S + CLOSE_GRACE_S + 5.0 if scale.timeouts else scale.seconds
            time.sleep(hold)
            out.check(pub.error is None, f"the publisher was cut off: {pub.error}")
            if scale.timeouts:
                evicted = sum(closed_within(p, 1.0) for p in players)
                out.notes["evicted"] = evicted
                out.check(
                    evicted == len(players), f"{len(players) - evicted} non-reading players kept past the send timeout"
                )
        finally:
            pub.close()
    out.notes.update(players=len(players), gop_bytes=pub.frame_bytes * (249 + 4), frames=pub.frames)
    return out


# ---- constant timestamps with a slow player


def attack_constant_ts(srv: TidecastProcess, scale: Scale) -> Outcome:
    """40 Mbit/s stamped 0 throughout (100 frames at once first), one player reading 20 kB/s."""
    out = Outcome()
    name = _unique("const-ts")
    pub = SyntheticPublisher(srv.host, srv.rtmp_port, name, kbps=40000, prefill=100, constant_ts=True, chunk_size=65536)
    try:
        slow_client = _client(srv, rcvbuf=8192)
        slow_client.play(name)
        slow = SlowReader(slow_client.sock, 20_000)
        try:
            time.sleep(scale.seconds)
            out.check(pub.error is None, f"the publisher was cut off: {pub.error}")
        finally:
            slow.close()
    finally:
        pub.close()
    sent = pub.frames * pub.frame_bytes * 29 // 25
    out.notes.update(sent_mb=round(sent / MiB, 1), slow_player_read_kb=slow.received // 1024)
    out.notes["hls_largest_mb"] = round(largest_file(srv.workdir / "hls", f"{name}*") / MiB, 1)
    if scale.seconds > WALL_CUT_MIN_S + 3:
        cut = [p for p in (srv.workdir / "hls").rglob(f"{name}*.ts")]
        out.notes["hls_segments"] = len(cut)
        out.check(cut, f"no HLS segment was cut in {scale.seconds:.0f} s of constant timestamps")
    return out


# ---- the chunk layer: chunk size 1, 2-byte writes, unfinished messages


def attack_chunks(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for size in (1, 2, 127) * scale.n:
            client = _client(srv, connect=False)
            opened.append(client)
            client.send(set_chunk_size(size))
            out.check(client.closed_within(3.0), f"chunk size {size} was accepted")
        # One unfinished message fed two bytes a write.
        client = _client(srv, connect=False)
        opened.append(client)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = encode_message(3, C.VIDEO, 0, 1, bytes(4 * MiB), 128)
        sent = 0
        deadline = time.monotonic() + scale.seconds / 3
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                client.sock.send(wire[sent : sent + 2])
                sent += 2
        out.notes["two_byte_writes"] = sent // 2
        # Unfinished messages on 200 chunk streams, 64 kB each: over the per-connection budget.
        client = _client(srv, connect=False)
        opened.append(client)
        client.send(set_chunk_size(65536))
        spread = 0
        with contextlib.suppress(OSError):
            for csid in range(3, 203):
                first = encode_message(csid, C.VIDEO, 0, 1, bytes(MiB), 65536)[: 1 + (csid >= 64) + 11 + 65536]
                client.sock.sendall(first)
                spread += len(first)
        out.check(client.closed_within(3.0), f"{spread // MiB} MiB of unfinished messages were kept")
        # A publisher's read of 2-byte messages (a type-3 header and one byte each): 250,000 in 500 kB.
        name = _unique("tiny")
        pub = _publisher(srv, name)
        opened.append(pub)
        tiny = 250_000 * scale.n
        pub.sock.settimeout(60)
        with contextlib.suppress(OSError):
            pub.sock.sendall(encode_message(4, C.AUDIO, 0, 1, b"\xaf", 128) + b"\xc4\xaf" * tiny)
        t0 = time.monotonic()
        taken = wait_frames(srv, name, tiny, 30.0)
        out.notes.update(tiny_messages=taken, tiny_seconds=round(time.monotonic() - t0, 1))
        # Connections that never connect, each holding an unfinished maximal message.
        holders = _holders(scale)
        held = 0
        for _ in range(holders):
            client = _client(srv, connect=False)
            opened.append(client)
            client.send(set_chunk_size(65536))
            with contextlib.suppress(OSError):
                client.sock.sendall(encode_message(3, C.VIDEO, 0, 1, bytes(C.MAX_MESSAGE_SIZE), 65536)[:-1])
                held += 1
        time.sleep(scale.seconds / 3)
        out.notes.update(holders=holders, holders_accepted=held)
    return out


def _holders(scale: Scale) -> int:
    return min(40, 4 * scale.n)  # 9 MiB each: at most 360 MiB


# ---- nested and flat Aggregate messages


def attack_aggregates(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    deep = flv_tag(C.VIDEO, 0, b"\x17" + bytes(2000))
    for _ in range(2000):
        deep = flv_tag(C.AGGREGATE, 0, deep)
    big = flv_tag(C.AGGREGATE, 0, flv_tag(C.VIDEO, 0, b"\x17" + bytes(2 * MiB)))
    flat = b"".join(flv_tag(C.AUDIO, i // 50, b"\xaf\x01\x00") for i in range(50_000))
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for _ in range(scale.n):
            for what, body in (("depth 2,000", deep), ("2 MB nested", big)):
                pub = _publisher(srv, _unique("agg"), chunk_size=65536)
                opened.append(pub)
                with contextlib.suppress(OSError):
                    pub.send(encode_message(C.CSID_VIDEO, C.AGGREGATE, 0, 1, body, 65536))
                out.check(pub.closed_within(3.0), f"a {what} aggregate was accepted")
            name = _unique("agg-flat")
            pub = _publisher(srv, name, chunk_size=65536)
            opened.append(pub)
            pub.sock.settimeout(60)
            with contextlib.suppress(OSError):
                for k in range(4):
                    pub.send(encode_message(C.CSID_VIDEO, C.AGGREGATE, k * 1000, 1, flat, 65536))
            wait_frames(srv, name, 4 * 50_000 + 1, 30.0)
    out.notes.update(flat_tags=4 * 50_000 * scale.n, flat_bytes=len(flat))
    return out


# ---- repeated connect from a client that never reads


def attack_repeated_connect(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    one = command(amf0.encode("connect", 1.0, {"app": "live", "tcUrl": f"{srv.rtmp}/live"}))
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for _ in range(3 * scale.n):
            client = _client(srv, connect=False)
            opened.append(client)
            with contextlib.suppress(OSError):
                client.sock.sendall(one * 200)
        for client in opened:
            received, closed = drain(client.sock, 3.0)
            out.check(closed, "a client repeating connect was not closed")
            out.check(received < 20 * len(one), f"{received} bytes answered to 200 connects of {len(one)} bytes")
    return out


# ---- idle and slowloris HTTP connections, up to the limits


def max_connections(srv: TidecastProcess) -> int:
    for line in srv.conf.read_text().splitlines():
        words = line.replace(";", " ").split()
        if words[:1] == ["max_connections"]:
            return int(words[1])
    return 1000


def attack_slowloris(srv: TidecastProcess, scale: Scale) -> Outcome:
    """The HTTP server port filled to max_connections: half silent, half a header byte a second."""
    from tidecast.net.counted import HEADER_TIMEOUT_S

    out = Outcome()
    limit = max_connections(srv)
    socks: list[socket.socket] = []
    with closing_all(socks):
        for _ in range(limit):
            socks.append(socket.create_connection((srv.host, srv.http_port), timeout=5))
        over = [socket.create_connection((srv.host, srv.http_port), timeout=5) for _ in range(10)]
        socks.extend(over)
        # A full port gives each newcomer the place of its oldest silent connection: never more than the limit.
        evicted = sum(closed_within(s, 2.0) for s in socks[: len(over)])
        out.check(evicted == len(over), f"{len(over) - evicted} connections over max_connections {limit} were kept")
        out.check(not any(closed_within(s, 0.05) for s in over), "a newcomer to a full port was refused")
        slow = socks[: limit // 2]
        request = b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
        hold = HEADER_TIMEOUT_S + 3.0 if scale.timeouts else scale.seconds
        started = time.monotonic()
        sent = 0
        probes: list[tuple[str, int]] = []
        while time.monotonic() - started < hold:
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(request[sent % len(request) : sent % len(request) + 1])
            sent += 1
            for what, url in (("api", f"{srv.api}/healthz"), ("http", f"{srv.http}/healthz")):
                try:
                    probes.append((what, http_get(url, timeout=1.0)[0]))
                except OSError:
                    probes.append((what, 0))
            time.sleep(max(0.0, started + sent - time.monotonic()))
        api = [code for what, code in probes if what == "api"]
        out.check(
            all(code == 200 for code in api), f"/healthz on the API port failed while the HTTP port was full: {api}"
        )
        http_probe = [code for what, code in probes if what == "http"]
        out.notes["http_port_healthz"] = f"{sum(c == 200 for c in http_probe)}/{len(http_probe)} answered"
        out.check(all(c == 200 for c in http_probe), f"/healthz on the full HTTP port failed: {http_probe}")
        if hold > HEADER_TIMEOUT_S:
            idle_closed = sum(closed_within(s, 0.05) for s in socks[limit // 2 : limit])
            slow_closed = sum(closed_within(s, 0.05) for s in slow)
            out.notes.update(idle_closed=idle_closed, slow_closed=slow_closed)
            out.check(
                idle_closed + slow_closed == limit,
                f"{limit - idle_closed - slow_closed} sockets outlived the header timeout",
            )
    out.notes["sockets"] = limit
    return out


# ---- a crafted SPS, then /api/v1/streams hammered


def attack_sps_api(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for size in (16_000, 65_000):
            pub = _client(srv)
            opened.append(pub)
            pub.publish(_unique(f"sps{size}"))
            pub.wait_status("NetStream.Publish.Start")
            pub.session.set_chunk_size(65536)
            with contextlib.suppress(OSError):
                pub.send(pub.session.send_media(C.VIDEO, 0, avc_sequence_header(crafted_sps(size))))
                pub.send(pub.session.send_media(C.VIDEO, 0, KEY_FRAME + bytes(1000)))
        time.sleep(0.2)
        latencies: list[float] = []
        errors: list[str] = []
        stop = time.monotonic() + scale.seconds

        def hammer() -> None:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                try:
                    status = http_get(f"{srv.api}/api/v1/streams?count=100", timeout=5.0)[0]
                    if status != 200:
                        errors.append(f"HTTP {status}")
                except OSError as exc:
                    errors.append(str(exc))
                latencies.append(time.monotonic() - t0)

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(hammer)
        out.check(not errors, f"/api/v1/streams failed: {errors[:3]}")
        worst = max(latencies, default=0.0)
        out.check(worst < 1.0, f"an /api/v1/streams call took {worst:.2f} s")
        out.notes.update(api_calls=len(latencies), api_worst_ms=round(worst * 1000))
    return out


# ---- plays of thousands of distinct missing names


def attack_missing_names(srv: TidecastProcess, scale: Scale) -> Outcome:
    """RTMP plays of distinct names nobody publishes (100 held open at a time), and HTTP-FLV ones."""
    out = Outcome()
    before = len(srv.api_json("/api/v1/streams?count=10000")["streams"])
    count = 300 * scale.n
    tag = _unique("missing")
    held: list[RtmpTestClient] = []
    lock = threading.Lock()
    failures: list[str] = []

    def rtmp_play(i: int) -> None:
        try:
            client = _client(srv)
            client.play(f"{tag}-{i}")
        except OSError as exc:
            failures.append(f"play {i}: {exc}")
            return
        with lock:
            held.append(client)
            old = held.pop(0) if len(held) > 100 else None
        if old is not None:
            old.close()

    def flv_play(i: int) -> None:
        status, _ = raw_http(srv.host, srv.http_port, f"/live/{tag}-flv-{i}.flv", timeout=2.0)
        if status not in (200, 404):
            failures.append(f"HTTP-FLV {i}: {status}")

    with closing_all(held), ThreadPoolExecutor(4) as pool:
        list(pool.map(rtmp_play, range(count)))
        peak = len(srv.api_json("/api/v1/streams?count=10000")["streams"])
        list(pool.map(flv_play, range(count)))
    out.check(not failures, f"{len(failures)} plays failed: {failures[:3]}")
    deadline = time.monotonic() + 5.0
    while (
        after := len(srv.api_json("/api/v1/streams?count=10000")["streams"])
    ) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    out.check(after <= before, f"{after - before} streams of missing names left behind")
    out.notes.update(rtmp_plays=count, flv_plays=count, streams_while_held=peak - before)
    return out


# ---- NaN transaction ids, %00 in URLs, JSONP callback injection


def attack_bad_input(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    log_from = len(srv.log())
    tc = f"{srv.rtmp}/live"
    opened: list[RtmpTestClient] = []
    with closing_all(opened):
        for _ in range(scale.n):
            for tid in (math.nan, math.inf, -math.inf):
                client = _client(srv, connect=False)
                opened.append(client)
                client.send(command(amf0.encode("connect", tid, {"app": "live", "tcUrl": tc})))
                out.check(client.closed_within(3.0), f"connect with transaction id {tid} was kept")
                for name in ("createStream", "publish", "play", "_checkbw"):
                    client = _client(srv)
                    opened.append(client)
                    client.send(
                        command(amf0.encode(name, tid, None, "x"), stream_id=1 if name in ("publish", "play") else 0)
                    )
                    out.check(client.closed_within(3.0), f"{name} with transaction id {tid} was kept")
            client = _client(srv, connect=False)
            opened.append(client)
            client.send(command(amf0.encode("connect", 1.0, {"app": "live", "tcUrl": tc, "objectEncoding": math.nan})))
            next_status(client, 0.5)
    paths = [
        (srv.http_port, "/%00"),
        (srv.http_port, "/live/a%00b.flv"),
        (srv.http_port, "/live/ab.flv%00"),
        (srv.http_port, "/live/a%00b.m3u8"),
        (srv.http_port, "/%00/../index.html"),
        (srv.http_port, "/index.html%00.txt"),
        (srv.api_port, "/api/v1/streams/%00"),
        (srv.api_port, "/api/v1/clients/%00"),
        (srv.api_port, "/api/v1/streams?start=%00&count=%00"),
        (srv.api_port, "/api/v1/vhosts/%00"),
        (srv.api_port, "/api/v1/raw?rpc=%00"),
        (srv.api_port, "/api/v1/clusters?vhost=%00&app=%00&stream=%00"),
    ]
    callbacks = [
        "alert(1)//",
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "a;b",
        "x%0Ay",
        "a" * 5000,
        "cb%00",
        "a[0]",
        "a%20b",
    ]
    paths += [(srv.api_port, f"/api/v1/versions?callback={cb}") for cb in callbacks]
    for _ in range(scale.n):
        for port, path in paths:
            status, body = raw_http(srv.host, port, path)
            out.check(status not in (0, 500), f"{path[:60]} answered {status or 'nothing'}")
            if "callback=" in path:
                out.check(status == 400, f"{path[:60]}: a JSONP callback that is no identifier answered {status}")
                out.check(b"<script" not in body, f"{path[:60]}: the callback was reflected")
    time.sleep(0.2)
    logged = srv.log()[log_from:]
    out.check("Traceback" not in logged, "a traceback in the log: " + logged[logged.find("Traceback") :][:300])
    return out


# ---- a reload whose include names a FIFO, by the API and by SIGHUP


def _release_fifo(path: Path, quiet: float = 0.3) -> int:
    """Open the FIFO for writing while readers wait (each then reads EOF); the readers released."""
    released = 0
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is reading
            time.sleep(0.02)
            continue
        os.close(fd)
        released += 1
        last = time.monotonic()
    return released


def attack_fifo_reload(srv: TidecastProcess, scale: Scale) -> Outcome:
    """`include` of a FIFO, reloaded by the API and by SIGHUP; the loop must keep serving meanwhile."""
    out = Outcome()
    fifo = srv.workdir / f"{_unique('pipe')}.conf"
    os.mkfifo(fifo)
    original = srv.conf.read_text()
    answers: list[tuple[int, bytes, float]] = []

    def api_reload() -> None:
        t0 = time.monotonic()
        try:
            status, body, _ = http_get(f"{srv.api}/api/v1/raw?rpc=reload", timeout=20.0)
        except OSError as exc:
            status, body = 0, str(exc).encode()
        answers.append((status, body, time.monotonic() - t0))

    try:
        srv.conf.write_text(f"include {fifo.name};\n{original}")
        for _ in range(3 if scale.timeouts else 1):
            thread = threading.Thread(target=api_reload, daemon=True)
            thread.start()
            srv.signal(signal.SIGHUP)
            worst = 0.0
            until = time.monotonic() + (6.5 if scale.timeouts else 1.0)
            while time.monotonic() < until and (thread.is_alive() or not scale.timeouts):
                t0 = time.monotonic()
                status = http_get(f"{srv.api}/api/v1/versions", timeout=2.0)[0]
                worst = max(worst, time.monotonic() - t0)
                out.check(status == 200, f"/api/v1/versions answered {status} during the reload")
                time.sleep(0.1)
            out.check(worst < 0.5, f"the API took {worst:.2f} s to answer during the reload")
            if scale.timeouts:
                thread.join(10)
                state = srv.api_json("/api/v1/raw?rpc=reload-fetch")["data"]
                out.check(state.get("err") == 1, f"a reload stuck on a FIFO was not refused: {state}")
                out.notes["refusal"] = state.get("msg", "")
                out.check("not a regular file" in state.get("msg", ""), f"the refusal does not say why: {state}")
            out.check(not _release_fifo(fifo), "a reload's parse was left blocked on the FIFO")
            thread.join(10)
        for status, body, elapsed in answers:
            out.check(status == 200, f"the reload by API answered {status}: {body[:200]!r}")
            out.notes["api_answer_s"] = round(elapsed, 2)
        if scale.timeouts:
            # Refused reloads once left their parse blocked in open() of the FIFO in an executor thread:
            # with eight of them a good reload was refused too.
            stuck = [threading.Thread(target=api_reload, daemon=True) for _ in range(4)]
            for thread in stuck:
                thread.start()
                srv.signal(signal.SIGHUP)
            for thread in stuck:
                thread.join(10)
            srv.conf.write_text(original)
            answer = srv.api_json("/api/v1/raw?rpc=reload")
            out.notes["good_reload_after_8_refused"] = answer.get("code")
            state = srv.api_json("/api/v1/raw?rpc=reload-fetch")["data"]
            out.check(answer.get("code") == 0, f"a good reload was refused after 8 FIFO reloads: {state}")
    finally:
        srv.conf.write_text(original)
        _release_fifo(fifo, quiet=0.1)
        fifo.unlink()
    answer = srv.api_json("/api/v1/raw?rpc=reload")
    out.check(answer.get("code") == 0, f"a good reload afterwards failed: {answer}")
    return out


# ---- a connection that stays after FCUnpublish


def attack_linger(srv: TidecastProcess, scale: Scale) -> Outcome:
    from tidecast.net.rtmp_server import AFTER_UNPUBLISH_TIMEOUT

    out = Outcome()
    opened: list[tuple[RtmpTestClient, float, str]] = []
    with contextlib.ExitStack() as stack:
        for i in range(3 * scale.n):
            name = _unique("linger")
            pub = _publisher(srv, name)
            stack.callback(pub.close)
            pub.send(pub.session.send_media(C.VIDEO, 0, KEY_FRAME + bytes(500)))
            how = ("FCUnpublish", "closeStream", "deleteStream")[i % 3]
            if how == "FCUnpublish":
                pub.send(command(amf0.encode("FCUnpublish", 6.0, None, name)))
            else:
                pub.send(command(amf0.encode(how, 0.0, None, 1.0), stream_id=1))
            opened.append((pub, time.monotonic(), how))
        bound = AFTER_UNPUBLISH_TIMEOUT + 2.5  # the check runs on the 1 s tick
        for pub, t0, how in opened:
            closed = pub.closed_within(max(0.1, t0 + bound - time.monotonic()))
            out.check(closed, f"a connection stayed {bound:.1f} s after {how}")
    out.notes["connections"] = len(opened)
    return out


# ---- fuzzed publish sessions


def attack_fuzz(srv: TidecastProcess, scale: Scale) -> Outcome:
    out = Outcome()
    sessions = 40 * scale.n
    tc = f"{srv.rtmp}/live"
    errors: list[str] = []

    def one(i: int) -> None:
        rng = random.Random(i)
        data = mutate(rng, publish_session(f"fuzz{i}", tc, frames=30, seed=i))
        try:
            client = _client(srv, connect=False)
        except OSError as exc:
            errors.append(f"session {i}: no handshake: {exc}")
            return
        with contextlib.suppress(OSError):
            client.sock.sendall(data)
            drain(client.sock, 0.2)
        if rng.random() < 0.5:  # half end with a reset
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(sessions)))
    out.check(not errors, f"{len(errors)} handshakes failed: {errors[:3]}")
    out.notes["sessions"] = sessions
    return out


# ---------------------------------------------------------------- the classes and their memory bounds


def _per_player() -> int:
    """What one player that stopped reading may make the server hold: its catch-up write (a batch of
    at most CATCH_UP_BYTES, plus the cached RTMP encoding of those packets) and a transport buffer
    up to CONGESTED_BYTES, which is where writing stops."""
    return 2 * L.CATCH_UP_BYTES + L.CONGESTED_BYTES


CLASSES: dict[str, AttackClass] = {
    c.name: c
    for c in (
        AttackClass(
            "names",
            "path escape through stream/app names (HLS wrote and deleted files anywhere), newline names forged logs",
            attack_names,
            lambda s, srv: SMALL,
            "no state: refused before any stream exists",
        ),
        AttackClass(
            "amf_bombs",
            "AMF0/AMF3 reference expansion in connect and onMetaData (depth 22: 15 s frozen, 680 MB)",
            attack_amf_bombs,
            lambda s, srv: SMALL,
            "references shared, 10,000 values a command; refused on arrival",
        ),
        AttackClass(
            "gop_flood",
            "one keyframe + 400 x 1 MB frames held 436 MB in the GOP cache; a join burst doubled it",
            attack_gop_flood,
            lambda s, srv: L.GOP_CACHE_BYTES + C.MAX_UNFINISHED_BYTES + 2 * _per_player() + SMALL,
            "GOP_CACHE_BYTES + MAX_UNFINISHED_BYTES + 2 joiners x (2 CATCH_UP_BYTES + CONGESTED_BYTES)",
        ),
        AttackClass(
            "big_gop_players",
            "100 non-reading players of a 10 s-GOP 8 Mbit/s stream: 1 GB, never evicted",
            attack_big_gop_players,
            lambda s, srv: 2 * 11 * MiB + 100 * _per_player() + SMALL,
            "2 x the 10 MB GOP (payloads, RTMP encodings) + 100 players x (2 CATCH_UP_BYTES + CONGESTED_BYTES)",
        ),
        AttackClass(
            "constant_ts",
            "constant timestamps defeated the media-time queue bound (+1 MB/s a slow player), an endless HLS segment",
            attack_constant_ts,
            lambda s, srv: L.PLAYER_QUEUE_BYTES + 2 * 6 * MiB + _per_player() + SMALL,
            "PLAYER_QUEUE_BYTES + 2 x a 25-frame GOP of 200 kB frames + one player's writes",
        ),
        AttackClass(
            "chunks",
            "20 MB in 2-byte chunks of unfinished messages cost 400 MB; chunk size 1 accepted",
            attack_chunks,
            lambda s, srv: (_holders(s) + 2) * C.MAX_UNFINISHED_BYTES + SMALL,
            "(holders + 2) x MAX_UNFINISHED_BYTES",
        ),
        AttackClass(
            "aggregates",
            "nested Aggregates copied per level (2 MB peaked at 1.8 GB; depth 2,000 raised RecursionError)",
            attack_aggregates,
            lambda s, srv: C.MAX_UNFINISHED_BYTES + 2 * 2 * MiB + SMALL,
            "MAX_UNFINISHED_BYTES + the 2 MB message twice",
        ),
        AttackClass(
            "repeated_connect",
            "repeated connect from a client that never reads amplified ~19x into the write buffer",
            attack_repeated_connect,
            lambda s, srv: SMALL,
            "closed at the second connect",
        ),
        AttackClass(
            "slowloris",
            "idle HTTP sockets kept ~1 h and shared max_connections with RTMP: 60 locked RTMP and /healthz out",
            attack_slowloris,
            lambda s, srv: max_connections(srv) * 96 * 1024 + SMALL,
            "max_connections x (MAX_HEADER_BYTES + 32 kB of aiohttp state)",
        ),
        AttackClass(
            "sps_api",
            "a crafted 65 KB SPS made every /api/v1/streams call take 6 s (quadratic bit reads)",
            attack_sps_api,
            lambda s, srv: SMALL,
            "SPS/PPS at most 16 KiB per sequence header, 4 KiB parsed",
        ),
        AttackClass(
            "missing_names",
            "every play of a distinct missing name left an HLS muxer behind (20,000 plays: 20,000 muxers)",
            attack_missing_names,
            lambda s, srv: 100 * 64 * 1024 + SMALL,
            "100 waiting plays held x 64 kB (connection, session, player, stream)",
        ),
        AttackClass(
            "bad_input",
            "NaN transaction ids, %00 in URLs raised uncaught exceptions; JSONP callback reflected verbatim",
            attack_bad_input,
            lambda s, srv: SMALL,
            "refused on arrival",
        ),
        AttackClass(
            "fifo_reload",
            "a reload whose include names a FIFO froze the event loop",
            attack_fifo_reload,
            lambda s, srv: SMALL,
            "a parsed config",
        ),
        AttackClass(
            "linger",
            "a connection stayed forever after FCUnpublish",
            attack_linger,
            lambda s, srv: SMALL,
            "closed AFTER_UNPUBLISH_TIMEOUT (5 s) after it",
        ),
        AttackClass(
            "fuzz",
            "fuzzed publish sessions (2,600 survived; kept as a regression)",
            attack_fuzz,
            lambda s, srv: 2 * C.MAX_UNFINISHED_BYTES + SMALL,
            "2 sessions at a time x MAX_UNFINISHED_BYTES",
        ),
    )
}

# The campaign's order: by the RSS each class costs alone (bench/attacks.py), the heavy ones last.
ORDER = [
    "names",
    "bad_input",
    "amf_bombs",
    "repeated_connect",
    "sps_api",
    "fuzz",
    "missing_names",
    "slowloris",
    "fifo_reload",
    "linger",
    "aggregates",
    "constant_ts",
    "chunks",
    "big_gop_players",
    "gop_flood",
]


# ---------------------------------------------------------------- one class, measured


@dataclass
class Result:
    name: str
    outcome: Outcome
    health: dict[str, Health]  # per healthy stream
    rss_before: int
    rss_peak: int
    allowance: int
    seconds: float
    alive: bool
    healthz: int
    replay: bool  # a new play of the first healthy stream got video

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before

    @property
    def worst_stall_ms(self) -> float:
        return max(h.worst_stall_ms for h in self.health.values())

    @property
    def max_gap_ms(self) -> float:
        return max(h.max_gap_ms for h in self.health.values())

    @property
    def survived(self) -> bool:
        return self.alive and self.healthz == 200 and self.replay

    def problems(self, stall_limit_ms: float) -> list[str]:
        """Everything that went wrong, empty when the class passed."""
        found = list(self.outcome.failures)
        if not self.survived:
            found.append(f"server: alive {self.alive}, /healthz {self.healthz}, new play got video {self.replay}")
        for stream, h in self.health.items():
            if h.ended:
                found.append(f"{stream}: the healthy player was cut off: {h.ended}")
            elif not h.keeps_real_time:
                found.append(
                    f"{stream}: the healthy player fell behind: {h.media_s:.1f} s of media in {h.wall_s:.1f} s"
                )
            if h.worst_stall_ms > stall_limit_ms:
                found.append(f"{stream}: the healthy player stalled {h.worst_stall_ms:.0f} ms > {stall_limit_ms:.0f}")
        if self.growth > self.allowance:
            found.append(f"RSS grew {self.growth / MiB:.0f} MiB > the {self.allowance / MiB:.0f} MiB allowed")
        return found

    def line(self) -> str:
        return (
            f"{self.name}: worst stall {self.worst_stall_ms:.0f} ms, max gap {self.max_gap_ms:.0f} ms, "
            f"RSS {self.rss_before / MiB:.0f} -> peak {self.rss_peak / MiB:.0f} MiB (+{self.growth / MiB:.0f}, "
            f"allowed +{self.allowance / MiB:.0f}), {self.seconds:.1f} s, {self.outcome.notes}"
        )

    def as_json(self, stall_limit_ms: float) -> dict[str, Any]:
        return {
            "class": self.name,
            "finding": CLASSES[self.name].finding,
            "worst_stall_ms": round(self.worst_stall_ms, 1),
            "max_gap_ms": round(self.max_gap_ms, 1),
            "health": {k: vars(v) for k, v in self.health.items()},
            "rss_before_mib": round(self.rss_before / MiB, 1),
            "rss_peak_mib": round(self.rss_peak / MiB, 1),
            "rss_growth_mib": round(self.growth / MiB, 1),
            "rss_allowed_mib": round(self.allowance / MiB, 1),
            "bound": CLASSES[self.name].bound,
            "survived": self.survived,
            "problems": self.problems(stall_limit_ms),
            "seconds": round(self.seconds, 1),
            "notes": self.outcome.notes,
        }


def replay_gets_video(srv: TidecastProcess, stream: str, timeout: float = 3.0) -> bool:
    try:
        player = _client(srv)
    except OSError:
        return False
    with closing_all([player]):
        try:
            player.play(stream)
            deadline = time.monotonic() + timeout
            while player.received.first_video() is None and time.monotonic() < deadline:
                player.read_for(0.05)
        except OSError:
            return False
        return player.received.first_video() is not None


class Bed:
    """A tidecast as the campaign runs it (HLS and HTTP-FLV on, `max_connections`), its RSS sampled,
    a healthy 1 Mbit/s publisher and player watching (and an 8 Mbit/s pair with `heavy`)."""

    def __init__(self, name: str, max_connections: int = 1000, heavy: bool = False) -> None:
        # The server's directory (its HLS, the names class's victims) is in memory: with a loaded disk
        # (CI's other test workers) the segments waiting for it are held by the server, up to
        # MAX_FILE_BACKLOG, and would count as the attack's growth. A slow disk is its own bound
        # (docs/security.md), not what these classes test.
        self.root = Path(tempfile.mkdtemp(prefix="tidecast-attack-", dir=SHM if os.path.isdir(SHM) else None))
        self.server = TidecastProcess(
            self.root / name,
            globals_=f"max_connections {max_connections};",
            vhost="hls { enabled on; hls_path ./hls; hls_fragment 1; hls_window 4; }\nhttp_remux { enabled on; }",
        )
        self.server.start()
        assert self.server.proc is not None
        self.rss = RssSampler(self.server.proc.pid)
        self.meters: list[HealthyMeter] = []
        try:
            self.meters.append(HealthyMeter(self.server))
            if heavy:
                self.meters.append(HealthyMeter(self.server, "healthy-8m", kbps=8000))
        except BaseException:
            self.close()
            raise
        time.sleep(1.0)  # the healthy streams settle (a viewer's first GOP arrives as a burst)

    def close(self) -> None:
        for meter in self.meters:
            meter.close()
        self.rss.close()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def measure(bed: Bed, name: str, scale: Scale, settle: float = 0.5) -> Result:
    """Run one class while the healthy players watch; the figures of its window (and `settle` after it)."""
    attack = CLASSES[name]
    srv, meters, rss = bed.server, bed.meters, bed.rss
    start = time.monotonic()
    rss_before = rss.read()
    outcome = attack.run(srv, scale)
    time.sleep(settle)
    end = time.monotonic()
    health = {m.stream: m.window(start, end) for m in meters}
    alive = srv.proc is not None and srv.proc.poll() is None
    try:
        healthz = http_get(f"{srv.api}/healthz", timeout=2.0)[0] if alive else 0
    except OSError:
        healthz = 0
    replay = alive and replay_gets_video(srv, meters[0].stream)
    return Result(
        name,
        outcome,
        health,
        rss_before,
        rss.peak(start, end),
        attack.allowance(scale, srv),
        end - start,
        alive,
        healthz,
        replay,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["view"] and len(sys.argv) == 6:
        _view(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        raise SystemExit("usage: python3 -m testkit.attacks view HOST PORT APP STREAM")
