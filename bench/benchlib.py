"""Shared parts of the bench tools: the clip, servers under test, cheap RTMP/HTTP-FLV clients, /proc readings.

Everything here is loopback only and bounded: servers listen on 127.0.0.1,
clients connect to 127.0.0.1 (or the address given on the command line, which
the tools refuse unless it is a loopback address).

The clients are asyncio Protocols on uvloop, not streams, so the load tool
itself stays cheap:

* players that only count use `BufferedProtocol` with one shared receive
  buffer: after set-up, a read costs one callback and an integer add;
* "probe" players (a small subset) parse every message (tidecast's own
  `ChunkDecoder` for RTMP, a chunked-HTTP + `FlvReader` parser for HTTP-FLV)
  and stamp the arrival time of each video frame, for latency;
* publishers replay the clip's FLV tags at real time from one timer, with the
  RTMP messages encoded once per clip loop and shared by all publishers.

Latency is matched by content, not by timestamp, so it survives servers that
rebase timestamps (an edge does; so may nginx-rtmp): the clip's video frames
are all distinct (the clip has noise in it), the publisher logs the send time
of every frame, and a probe looks up the CRC-32 of each frame it receives.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tidecast
from tidecast.codec.flv import FlvReader, iter_flv_tags
from tidecast.compiled import compiled_modules
from tidecast.rtmp import constants as C
from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message, encode_message

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # testkit: what bench/ shares with tests/

from testkit.helpers import free_port, http_json  # noqa: E402
from testkit.media import make_clip as testkit_clip  # noqa: E402

__all__ = ["free_port", "http_json"]
CACHE = Path(tempfile.gettempdir()) / "tidecast-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The light publishers' outgoing chunk size, as ffmpeg picks it: it mirrors the server's Set Chunk Size
# (60000 from tidecast and SRS, 4096 from nginx-rtmp). OBS sends 4096 whatever the server says; a
# chunk size of 128 (the protocol's default) is what a client that never raises it sends. ingest.py --chunk.
PUBLISH_CHUNK = 60000
ACK_EVERY = 1_000_000
# A counting player's socket wakes this tool only once this much is buffered: a
# server that writes every message separately (nginx-rtmp) would otherwise cost
# the load one callback per message per player. Set by `Ramp(rcvlowat=...)`.
RCVLOWAT = 32 * 1024
# A counting player's receive buffer in bytes (0: the kernel's autotuning). Linux clamps the TCP window
# to SO_RCVLOWAT when raising the low-water mark grows an autotuned buffer, so a mark of 128 KB with
# autotuning stalls the sender at every wake-up; a fixed buffer of several marks does not. `--rcvbuf`.
RCVBUF = 0
_SO_RCVBUFFORCE = 33  # not in Python's socket module
# Counting players take their bytes with recv(MSG_TRUNC): Linux's TCP drops them
# from the socket without copying them out, so the load does not pay the copy
# the server already paid once per player (about an eighth of the load's CPU).
# --copy-reads in fanout.py and multicore.py turns it off, to compare.
DISCARD = hasattr(socket, "MSG_TRUNC") and sys.platform == "linux"
FD_RESERVE = 1000  # descriptors a discarding player leaves free: /proc readings, the API, probes, logs
# A discarding player holds two descriptors. So that the players of the run's last step still get a
# socket, only so many duplicates are made: players past them copy their reads. fanout.py and
# multicore.py set this to the run's largest step, as they set RCVLOWAT.
PLANNED_PLAYERS = 0
_duplicates = 0  # discarding players' duplicate descriptors now open


_U32 = struct.Struct(">I")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# timeout(1) and CI stop a bench with SIGTERM, whose default action skips every `with` block: the
# temporary directories were left behind (killed `hls_mux.py --dir /dev/shm/x` runs once held 13 GB of
# segments in RAM). As SystemExit the clean-up runs, servers stopped and directories removed.
signal.signal(signal.SIGTERM, _exit_on_sigterm)


# ---------------------------------------------------------------- machine set-up


def pin_load(core: int) -> str:
    """Pin this process (the load) to one core; a note when the machine has only one."""
    if (os.cpu_count() or 1) <= core:
        return f"only {os.cpu_count()} core(s): load not pinned"
    os.sched_setaffinity(0, {core})
    return f"load pinned to core {core}"


def fd_limit_target(want: int = 65536) -> int:
    """`want`, or the hard limit when this sandbox forbids raising it (even root may be denied)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


def raise_fd_limit(want: int = 65536) -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if hard != resource.RLIM_INFINITY else hard))
        return want
    except (ValueError, OSError):
        target = fd_limit_target(want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target


def use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio (uvloop missing)"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {getattr(uvloop, '__version__', '?')}"


def require_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise SystemExit(f"refusing {host}: the bench tools only load servers on this machine (loopback)")


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "mem_mb": mem,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        # The servers this tool starts import tidecast from the same path (they inherit PYTHONPATH).
        "tidecast": str(Path(tidecast.__file__).parent),
        "tidecast_build": "compiled" if compiled_modules() else "pure Python",
    }


# ---------------------------------------------------------------- /proc readings


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(root: int) -> list[int]:
    """The process and its descendants (nginx: master and worker)."""
    kids = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def cpu_split(pids: Iterable[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_split(pids))


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class CpuMeter:
    """CPU% of a process tree, or of one process with tree=False (100% = one core), between two readings."""

    def __init__(self, root: int, tree: bool = True) -> None:
        self.root = root
        self.tree = tree
        self.pids = process_tree(root) if tree else [root]
        self.reset(same_pids=True)

    def reset(self, same_pids: bool = False) -> None:
        if not same_pids:
            self.pids = process_tree(self.root) if self.tree else [self.root]
        self.t0 = time.monotonic()
        self.u0, self.s0 = cpu_split(self.pids)

    def percent(self) -> float:
        user, system = self.split()
        return user + system

    def split(self) -> tuple[float, float]:
        """User and system CPU% since the start (or reset)."""
        span = max(1e-6, time.monotonic() - self.t0)
        u, s = cpu_split(self.pids)
        return 100.0 * (u - self.u0) / span, 100.0 * (s - self.s0) / span


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy, total) jiffies from /proc/stat; busy counts user, system, irq, softirq, steal."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            idle = v[3] + v[4]
            out[int(name[3:])] = (float(sum(v) - idle), float(sum(v)))
    return out


class CoreMeter:
    """Busy % of each core between two readings: a cross-check of the per-process figures."""

    def __init__(self) -> None:
        self.t0 = core_times()

    def percent(self) -> dict[int, float]:
        t1 = core_times()
        out = {}
        for core, (busy, total) in t1.items():
            b0, tot0 = self.t0.get(core, (0.0, 0.0))
            out[core] = round(100.0 * (busy - b0) / max(1.0, total - tot0), 1)
        return out


# The kernel's own account of connections and packets it dropped or resent: on loopback a saturated core
# drops SYNs when a listen queue is full and packets when its backlog queue is, and either shows up as
# set-ups that time out. These are machine-wide counters, so a row's deltas include every process's.
KERNEL_COUNTERS = ("ListenOverflows", "TCPSynRetrans", "TCPTimeouts")


def kernel_counters() -> dict[str, int]:
    """TcpExt counters from /proc/net/netstat and softnet_stat's dropped packets, summed over cores."""
    out: dict[str, int] = {}
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                out.update({k: int(table[k]) for k in KERNEL_COUNTERS if k in table})
        with open("/proc/net/softnet_stat") as f:
            out["softnet_dropped"] = sum(int(line.split()[1], 16) for line in f if line.strip())
    except OSError:
        pass  # not Linux: the rows simply lack these
    return out


class KernelMeter:
    """Deltas of `kernel_counters` between its creation and `deltas()`."""

    def __init__(self) -> None:
        self.t0 = kernel_counters()

    def deltas(self) -> dict[str, int]:
        t1 = kernel_counters()
        return {k: v - self.t0.get(k, 0) for k, v in t1.items()}


class LoopLag:
    """How late a 10 ms timer fires in this process: a busy load tool delays what it timestamps."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.interval)
            self.lags.append(time.monotonic() - t - self.interval)
            if len(self.lags) > 100_000:
                del self.lags[:50_000]

    def take(self) -> list[float]:
        out, self.lags = self.lags, []
        return out

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class StateSampler:
    """Samples a process's scheduler state (R running, S sleeping, D disk wait) every `interval` s.

    A server that falls behind with its CPU below 100% is waiting for something:
    D says it blocks on the disk inside the event loop."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        path = f"/proc/{self.pid}/stat"
        while True:
            with contextlib.suppress(OSError, IndexError), open(path) as f:
                self.counts[f.read().rsplit(")", 1)[1].split()[0]] += 1
            await asyncio.sleep(self.interval)

    def take(self) -> dict[str, float]:
        total = sum(self.counts.values()) or 1
        out = {k: round(100.0 * v / total, 1) for k, v in sorted(self.counts.items())}
        self.counts.clear()
        return out

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[k]


# ---------------------------------------------------------------- the clip


def make_clip(path: Path, seconds: int = 30, kbps: int = 900) -> Path:
    """A ~1 Mbps H.264+AAC FLV clip (640x360, temporal noise, CBR), made once and cached."""
    return testkit_clip(path, seconds=seconds, kbps=kbps, size="640x360", noise=True, cbr=True)


def _is_sequence_header(type_id: int, payload: bytes) -> bool:
    if type_id == 9:
        return len(payload) >= 2 and payload[1] == 0 and payload[0] & 0x0F in (7, 12)
    if type_id == 8:
        return len(payload) >= 2 and payload[0] >> 4 == 10 and payload[1] == 0
    return False


class Clip:
    """The clip's tags: a head sent once (metadata, sequence headers), a body replayed in loops."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tags = list(iter_flv_tags(path.read_bytes()))
        if not self.tags:
            raise SystemExit(f"{path}: no FLV tags")
        self.head = [i for i, (t, _, p) in enumerate(self.tags) if t == 18 or _is_sequence_header(t, p)]
        head = set(self.head)
        self.body = [i for i in range(len(self.tags)) if i not in head and self.tags[i][0] in (8, 9)]
        last = max(ts for _, ts, _ in self.tags)
        self.period_ms = last + 40
        self.media_bytes = sum(len(self.tags[i][2]) for i in self.body)
        self.kbps = self.media_bytes * 8 / self.period_ms
        self.frames: dict[int, int] = {}  # crc32 of a video payload -> tag index
        for i in self.body:
            t, _, p = self.tags[i]
            if t == 9:
                self.frames.setdefault(zlib.crc32(p), i)
                self.frames.setdefault(zlib.crc32(p[5:]), i)  # the MP4 sample: the body after the AVC tag header
        self._loops: dict[int, list[tuple[float, bytes, int, int]]] = {}

    def head_bytes(self) -> list[bytes]:
        out = []
        for i in self.head:
            t, _, p = self.tags[i]
            csid = C.CSID_DATA if t == 18 else C.CSID_AUDIO if t == 8 else C.CSID_VIDEO
            out.append(encode_message(csid, t, 0, S.STREAM_ID, p, PUBLISH_CHUNK))
        return out

    def loop(self, k: int) -> list[tuple[float, bytes, int, int]]:
        """Loop k of the body: (due seconds from the start, encoded message, payload size, tag index)."""
        cached = self._loops.get(k)
        if cached is None:
            offset = k * self.period_ms
            cached = []
            for i in self.body:
                t, ts, p = self.tags[i]
                csid = C.CSID_AUDIO if t == 8 else C.CSID_VIDEO
                data = encode_message(csid, t, ts + offset, S.STREAM_ID, p, PUBLISH_CHUNK)
                cached.append(((ts + offset) / 1000.0, data, len(p), i))
            self._loops[k] = cached
            for old in [j for j in self._loops if j < k - 2]:
                del self._loops[old]
        return cached


# ---------------------------------------------------------------- stream addresses


@dataclass
class Target:
    host: str
    rtmp_port: int
    http_port: int | None
    app: str
    stream: str

    @property
    def tc_url(self) -> str:
        return f"rtmp://{self.host}:{self.rtmp_port}/{self.app}"

    def rtmp_url(self, stream: str | None = None) -> str:
        return f"{self.tc_url}/{stream or self.stream}"

    def flv_path(self, stream: str | None = None) -> str:
        return f"/{self.app}/{stream or self.stream}.flv"

    def mp4_path(self, stream: str | None = None) -> str:
        return f"/{self.app}/{stream or self.stream}.mp4"

    def named(self, stream: str) -> Target:
        return Target(self.host, self.rtmp_port, self.http_port, self.app, stream)


def parse_rtmp_url(url: str, http_port: int | None = None) -> Target:
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise SystemExit(f"--url must be rtmp://HOST[:PORT]/APP/STREAM, not {url}")
    require_loopback(parts.hostname)
    path = [p for p in parts.path.split("/") if p]
    if len(path) < 2:
        raise SystemExit(f"--url {url}: give both the app and the stream name")
    return Target(parts.hostname, parts.port or 1935, http_port, "/".join(path[:-1]), path[-1])


# ---------------------------------------------------------------- RTMP publisher


class RtmpPublisher(asyncio.Protocol):
    """Publishes the clip at real time; `pump()` is called by a shared ticker."""

    def __init__(self, clip: Clip, target: Target, on_send: Callable[[int, int, float], None] | None = None) -> None:
        self.clip = clip
        self.target = target
        self.session = S.RtmpSession(client=True)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_send = on_send
        self.start = 0.0
        self.loop_index = 0
        self.pos = 0
        self.sent_media = 0  # payload bytes of audio/video written
        self.max_backlog = 0  # largest write buffer seen: the server not reading fast enough
        self.lost = False
        self._current: list[tuple[float, bytes, int, int]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._flush()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.writelines(out)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.session.receive_data(data)
        except Exception as exc:
            self._fail(exc)
            return
        for ev in events:
            if isinstance(ev, S.HandshakeDone):
                self.session.connect(self.target.app, self.target.tc_url)
                self.session.set_chunk_size(PUBLISH_CHUNK)
            elif isinstance(ev, S.CommandResult):
                if not ev.ok:
                    self._fail(RuntimeError(f"{ev.command} refused: {ev.values}"))
                elif ev.command == "connect":
                    self.session.create_stream()
                elif ev.command == "createStream":
                    self.session.publish(self.target.stream)
            elif isinstance(ev, S.Status):
                if ev.code == "NetStream.Publish.Start" and not self.ready.done():
                    self._begin()
                elif ev.level == "error":
                    self._fail(RuntimeError(f"publish refused: {ev.info}"))
        self._flush()

    def _begin(self) -> None:
        assert self.transport is not None
        self.transport.writelines(self.clip.head_bytes())
        self.start = time.monotonic()
        self._current = self.clip.loop(0)
        self.ready.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"publisher connection lost: {exc}"))

    def pump(self, now: float) -> None:
        """Write every message whose due time has come."""
        if not self.start or self.lost or self.transport is None:
            return
        rel = now - self.start
        cur = self._current
        batch: list[bytes] = []
        while True:
            if self.pos >= len(cur):
                self.loop_index += 1
                self.pos = 0
                cur = self._current = self.clip.loop(self.loop_index)
            due, data, size, index = cur[self.pos]
            if due > rel:
                break
            batch.append(data)
            self.sent_media += size
            if self.on_send is not None:
                self.on_send(index, self.loop_index, now)
            self.pos += 1
        if batch:
            self.transport.writelines(batch)
            backlog = self.transport.get_write_buffer_size()
            if backlog > self.max_backlog:
                self.max_backlog = backlog


async def start_publisher(
    clip: Clip, target: Target, on_send: Callable[[int, int, float], None] | None = None, timeout: float = 10.0
) -> RtmpPublisher:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(
            lambda: RtmpPublisher(clip, target, on_send), target.host, target.rtmp_port
        )
    async with asyncio.timeout(timeout):
        await proto.ready
    return proto


class Ticker:
    """One timer drives every publisher, every `interval` seconds."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.publishers: list[RtmpPublisher] = []
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            lag = now - next_at
            if lag > self.max_lag:
                self.max_lag = lag
            for pub in self.publishers:
                pub.pump(now)
            next_at += self.interval
            if next_at < now:
                next_at = now + self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


# ---------------------------------------------------------------- players

_SHARED = bytearray(256 * 1024)
_SHARED_VIEW = memoryview(_SHARED)


@dataclass
class PlayerStats:
    started: float = 0.0
    setup_s: float | None = None
    error: str = ""
    bytes: int = 0
    last_read: float = 0.0  # when `bytes` last grew: the window's rate is taken between two reads
    stage: str = "tcp"  # how far the set-up got: tcp, handshake, connect, createStream, play, playing
    frames: list[tuple[int, float]] = field(default_factory=list)  # (crc32 of video payload, arrival)


class _Player(asyncio.BufferedProtocol):
    """Common part: set-up with full parsing, then counting (or, for probes, parsing) bytes."""

    def __init__(self, target: Target, probe: bool) -> None:
        self.target = target
        self.probe = probe
        self.stats = PlayerStats(started=time.monotonic())
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.counting = False
        self.closed = False
        self.closing = False
        self.discard: socket.socket | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.stats.last_read = time.monotonic()
        if self.counting:
            self.count(nbytes)
            return
        try:
            self.feed(bytes(_SHARED[:nbytes]))
        except Exception as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

    def count(self, nbytes: int) -> None:
        """Bytes a counting player took, from its transport or from the discarding reader."""
        self.stats.bytes += nbytes

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def set_up(self) -> None:
        self.stats.setup_s = time.monotonic() - self.stats.started
        self.stats.stage = "playing"
        if not self.ready.done():
            self.ready.set_result(None)

    def start_counting(self) -> None:
        global _duplicates
        self.counting = True
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return
        if RCVBUF > 0:
            try:  # SO_RCVBUFFORCE (Linux, root) goes past net.core.rmem_max, which caps SO_RCVBUF
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if RCVLOWAT > 1:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, RCVLOWAT)
        if DISCARD and self.transport is not None:
            # The transport stops reading (it still writes the acknowledgements); a duplicate of its
            # descriptor is watched instead, as the event loop does not let one descriptor have two readers.
            # A duplicate is a second descriptor per player: past the budget, players copy their reads.
            if _duplicates >= resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE - PLANNED_PLAYERS:
                return
            dup = os.dup(sock.fileno())
            _duplicates += 1
            self.transport.pause_reading()
            self.discard = socket.socket(fileno=dup)
            asyncio.get_running_loop().add_reader(dup, self._discard_ready)

    def _discard_ready(self) -> None:
        assert self.discard is not None
        try:
            nbytes = self.discard.recv_into(_SHARED_VIEW, len(_SHARED), socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._discard_ended(exc)
            return
        if nbytes == 0:  # the server closed: the paused transport would not notice
            self._discard_ended(None)
            return
        self.stats.last_read = time.monotonic()
        self.count(nbytes)

    def _discard_ended(self, exc: Exception | None) -> None:
        """The server closed (or reset) the connection under the discarding reader: say so, and let the
        transport close and call connection_lost, once, as it does for a reading player."""
        self._stop_discarding()
        if not self.stats.error and not self.closing:
            self.stats.error = f"closed by the server: {exc}" if exc else "closed by the server"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _stop_discarding(self) -> None:
        global _duplicates
        if self.discard is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.discard.fileno())
            self.discard.close()
            self.discard = None
            _duplicates -= 1

    def fail(self, error: str) -> None:
        if not self.stats.error:
            self.stats.error = error
        if not self.ready.done():
            self.ready.set_result(None)  # the waiter reads stats.error
        self.close()

    def close(self) -> None:
        self.closing = True
        self._stop_discarding()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_discarding()  # the duplicate must not keep the socket open after its transport
        self.closed = True
        if not self.stats.error and not self.closing:
            self.stats.error = f"closed by the server: {exc}" if exc else "closed by the server"
        if not self.ready.done():
            self.ready.set_result(None)

    def eof_received(self) -> bool | None:
        return None


class RtmpPlayer(_Player):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session = S.RtmpSession(client=True)
        self.acked = 0
        transport.writelines(self.session.data_to_send())  # type: ignore[attr-defined]

    def count(self, nbytes: int) -> None:
        stats = self.stats
        stats.bytes += nbytes
        if stats.bytes - self.acked >= ACK_EVERY:
            self.acked = stats.bytes
            assert self.transport is not None
            self.transport.write(
                encode_message(C.CSID_PROTOCOL, C.ACKNOWLEDGEMENT, 0, 0, _U32.pack(stats.bytes & 0xFFFFFFFF), 128)
            )

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        if self.stats.stage == "tcp":
            self.stats.stage = "handshake"
        events = self.session.receive_data(data)
        playing = self.ready.done()
        if playing:
            self.stats.bytes += len(data)
        for ev in events:
            if type(ev) is Message:
                if ev.type_id == 9 and playing:
                    self.stats.frames.append((zlib.crc32(ev.payload), now))
            elif isinstance(ev, S.HandshakeDone):
                self.session.connect(self.target.app, self.target.tc_url)
                self.stats.stage = "connect"
            elif isinstance(ev, S.CommandResult):
                if not ev.ok:
                    self.fail(f"{ev.command} refused")
                    return
                if ev.command == "connect":
                    self.session.create_stream()
                    self.stats.stage = "createStream"
                elif ev.command == "createStream":
                    self.session.play(self.target.stream)
                    self.stats.stage = "play"
            elif isinstance(ev, S.Status):
                if ev.code == "NetStream.Play.Start" and not self.ready.done():
                    self.set_up()
                    playing = True
                    if not self.probe:
                        self.acked = 0
                        self.start_counting()
                elif ev.level == "error":
                    self.fail(f"play refused: {ev.code}")
                    return
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.writelines(out)


class _Dechunker:
    """HTTP/1.1 chunked transfer coding, incrementally."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0  # bytes of the current chunk still to come
        self.trailer = 0  # CRLF after a chunk still to skip

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        buf = self.buf
        pos = 0
        while pos < len(buf):
            if self.trailer:
                take = min(self.trailer, len(buf) - pos)
                self.trailer -= take
                pos += take
                continue
            if self.left:
                take = min(self.left, len(buf) - pos)
                out += buf[pos : pos + take]
                self.left -= take
                pos += take
                if not self.left:
                    self.trailer = 2
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(bytes(buf[pos:end]).split(b";")[0], 16)
            pos = end + 2
            if size == 0:
                raise ConnectionError("the server ended the FLV response")
            self.left = size
        del buf[:pos]
        return bytes(out)


class FlvPlayer(_Player):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.head = bytearray()
        self.chunked = False
        self.dechunker = _Dechunker()
        self.reader = FlvReader()
        host = f"{self.target.host}:{self.target.http_port}"
        request = (
            f"GET {self.target.flv_path()} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tidecast-bench\r\n"
            "Accept: */*\r\nConnection: keep-alive\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]
        self.stats.stage = "http-response"

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.ready.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.fail("HTTP response head too long")
                return
            head = bytes(self.head[:end]).decode("latin-1")
            status = head.split("\r\n", 1)[0]
            if " 200 " not in status + " ":
                self.fail(f"HTTP: {status}")
                return
            self.chunked = "transfer-encoding: chunked" in head.lower()
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            self.set_up()
            if not self.probe:
                self.start_counting()
                self.stats.bytes += len(data)
                return
        self.stats.bytes += len(data)
        body = self.dechunker.feed(data) if self.chunked else data
        for type_id, _, payload in self.reader.feed(body):
            if type_id == 9:
                self.stats.frames.append((zlib.crc32(payload), now))


class Mp4Player(FlvPlayer):
    """A player of tidecast's live fragmented MP4: probes time the video samples of each moof + mdat."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.head = bytearray()
        self.chunked = False
        self.dechunker = _Dechunker()
        self.boxes = bytearray()
        self.moof: bytes | None = None
        host = f"{self.target.host}:{self.target.http_port}"
        request = (
            f"GET {self.target.mp4_path()} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tidecast-bench\r\n"
            "Accept: */*\r\nConnection: keep-alive\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]
        self.stats.stage = "http-response"

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.ready.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.fail("HTTP response head too long")
                return
            head = bytes(self.head[:end]).decode("latin-1")
            status = head.split("\r\n", 1)[0]
            if " 200 " not in status + " ":
                self.fail(f"HTTP: {status}")
                return
            self.chunked = "transfer-encoding: chunked" in head.lower()
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            self.set_up()
            if not self.probe:
                self.start_counting()
                self.stats.bytes += len(data)
                return
        self.stats.bytes += len(data)
        self.boxes += self.dechunker.feed(data) if self.chunked else data
        buf = self.boxes
        pos = 0
        while pos + 8 <= len(buf):
            size, kind = struct.unpack_from(">I4s", buf, pos)
            if size < 8 or pos + size > len(buf):
                break
            if kind == b"moof":
                self.moof = bytes(buf[pos : pos + size])
            elif kind == b"mdat" and self.moof is not None:
                for sample in _video_samples(self.moof, bytes(buf[pos : pos + size])):
                    self.stats.frames.append((zlib.crc32(sample), now))
                self.moof = None
            pos += size
        del buf[:pos]


def _video_samples(moof: bytes, mdat: bytes) -> list[bytes]:
    """The samples of track 1 (video when the stream has video) of one moof + mdat, as tidecast writes them
    (default-base-is-moof, one trun with sizes per traf)."""
    out = []
    pos = 8
    while pos + 8 <= len(moof):
        size, kind = struct.unpack_from(">I4s", moof, pos)
        if kind == b"traf":
            traf = moof[pos + 8 : pos + size]
            track = 0
            tpos = 0
            while tpos + 8 <= len(traf):
                tsize, tkind = struct.unpack_from(">I4s", traf, tpos)
                if tkind == b"tfhd":
                    track = struct.unpack_from(">I", traf, tpos + 12)[0]
                elif tkind == b"trun" and track == 1:
                    count, offset = struct.unpack_from(">Ii", traf, tpos + 12)
                    at = offset - len(moof)  # data offsets count from the moof's first byte
                    for k in range(count):
                        sample_size = struct.unpack_from(">I", traf, tpos + 20 + 16 * k + 4)[0]
                        out.append(mdat[at : at + sample_size])
                        at += sample_size
                tpos += max(8, tsize)
        pos += max(8, size)
    return out


class FailedPlayer:
    """A player whose TCP connection could not even be opened."""

    closed = True
    counting = False

    def __init__(self, probe: bool, stats: PlayerStats) -> None:
        self.probe = probe
        self.stats = stats

    def close(self) -> None:
        pass


AnyPlayer = _Player | FailedPlayer


async def open_player(protocol: str, target: Target, probe: bool, timeout: float) -> AnyPlayer:
    """Connect and set up one player; on failure the player comes back with stats.error set."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], _Player]
    if protocol == "rtmp":
        factory = lambda: RtmpPlayer(target, probe)  # noqa: E731
        port = target.rtmp_port
    elif protocol == "mp4":
        factory = lambda: Mp4Player(target, probe)  # noqa: E731
        assert target.http_port is not None
        port = target.http_port
    else:
        factory = lambda: FlvPlayer(target, probe)  # noqa: E731
        assert target.http_port is not None
        port = target.http_port
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            _, player = await loop.create_connection(factory, target.host, port)
    except (TimeoutError, OSError) as exc:
        return FailedPlayer(probe, PlayerStats(started=started, error=f"connect: {type(exc).__name__}: {exc}"))
    try:
        async with asyncio.timeout(max(0.1, timeout - (time.monotonic() - started))):
            await asyncio.shield(player.ready)
    except TimeoutError:
        player.fail(f"set-up timed out at {player.stats.stage}")
    return player


class Ramp:
    """Opens players at a steady rate, `concurrency` set-ups in flight at most."""

    def __init__(self, protocol: str, target: Target, rate: float, probe_every: int, timeout: float = 15.0) -> None:
        self.protocol = protocol
        self.target = target
        self.rate = rate
        self.probe_every = probe_every
        self.timeout = timeout
        self.players: list[AnyPlayer] = []

    async def grow(self, n: int) -> None:
        tasks = []
        start = time.monotonic()
        first = len(self.players)
        for k, index in enumerate(range(first, n)):
            due = start + k / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            probe = self.probe_every > 0 and index % self.probe_every == 0
            tasks.append(asyncio.ensure_future(open_player(self.protocol, self.target, probe, self.timeout)))
        self.players.extend(await asyncio.gather(*tasks))

    def close_all(self) -> None:
        for p in self.players:
            p.close()


# ---------------------------------------------------------------- latency by content


class SendLog:
    """Send time of every clip tag, per loop: the publisher side of the latency measurement."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {}
        self.sent: list[tuple[float, int]] = []  # (send time, payload size), to get the publisher's rate

    def record(self, index: int, loop: int, when: float, size: int) -> None:
        self.times.setdefault(index, []).append(when)
        self.sent.append((when, size))

    def media_rate(self, t0: float, t1: float) -> float:
        """Payload bytes per second the publisher wrote in [t0, t1)."""
        lo = bisect.bisect_left(self.sent, (t0, -1))
        hi = bisect.bisect_left(self.sent, (t1, -1))
        return sum(s for _, s in self.sent[lo:hi]) / max(1e-6, t1 - t0)

    def latencies(self, clip: Clip, frames: Iterable[tuple[int, float]], t0: float, t1: float) -> list[float]:
        out = []
        for crc, arrival in frames:
            if not t0 <= arrival < t1:
                continue
            index = clip.frames.get(crc)
            if index is None:
                continue
            times = self.times.get(index)
            if not times:
                continue
            k = bisect.bisect_right(times, arrival) - 1
            if k >= 0:
                out.append(arrival - times[k])
        return out

    def load_file(self, path: Path, clip: Clip) -> None:
        """Read the log a publisher process writes: lines of `index loop time`."""
        self.times.clear()
        self.sent.clear()
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 3:
                    continue
                index, when = int(parts[0]), float(parts[2])
                self.record(index, int(parts[1]), when, len(clip.tags[index][2]))


# ---------------------------------------------------------------- servers under test


class Server:
    """A server process started by the bench, or one attached to (pid may be unknown)."""

    def __init__(self, name: str, pid: int | None, proc: subprocess.Popen[bytes] | None, workdir: Path | None) -> None:
        self.name = name
        self.pid = pid
        self.proc = proc
        self.workdir = workdir

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / "server.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None


def _pinned(argv: list[str], core: int) -> list[str]:
    """`prlimit --nofile ... taskset -c CORE argv`: both exec, so the pid is the server's own."""
    nofile = fd_limit_target()
    out = list(argv)
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        out = ["taskset", "-c", str(core), *out]
    if shutil.which("prlimit"):
        out = ["prlimit", f"--nofile={nofile}:{nofile}", *out]
    return out


def wait_port(port: int, server: Server, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise SystemExit(f"{server.name} exited at start-up:\n{server.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"{server.name} did not listen on {port} within {timeout} s:\n{server.log_tail()}")


def tidecast_config(
    rtmp: int, api: int, http: int, vhost_body: str = "", extra: str = "", max_connections: int = 18500
) -> str:
    vhost = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }\n" + vhost_body
    return (
        f"listen 127.0.0.1:{rtmp};\nmax_connections {max_connections};\ndaemon off;\nsrs_log_tank console;\n"
        f"srs_log_level warn;\npid ./tidecast.pid;\n"
        f"http_api {{ enabled on; listen 127.0.0.1:{api}; }}\n"
        f"http_server {{ enabled on; listen 127.0.0.1:{http}; dir ./html; }}\n"
        f"{extra}"
        f"vhost __defaultVhost__ {{\n{vhost}}}\n"
    )


def settings_of(args: Any) -> dict[str, Any]:
    """A run's options for its JSON: paths inside this checkout relative to it, so a reference file
    names no machine's directories."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, Path):
            resolved = value.resolve()
            value = str(resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else value)
        out[key] = value
    return out


def opcodes(run: Callable[[], object]) -> int:
    """Python bytecodes executed by what `run()` calls, not counting `run`'s own loop (sys.settrace): a
    cost that does not move with the machine's load and compares two versions of the code exactly;
    copies done in C and system calls are not in it."""
    count = 0
    driver = getattr(run, "__code__", None)

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode" and frame.f_code is not driver:
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return count


def start_tidecast(config: str, workdir: Path, rtmp_port: int, core: int = 0) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "html").mkdir(exist_ok=True)
    conf = workdir / "tidecast.conf"
    conf.write_text(config)
    argv = _pinned([sys.executable, "-m", "tidecast", "serve", "-c", str(conf)], core)
    env = dict(os.environ)
    # A PYTHONPATH the caller set comes first: `PYTHONPATH=/tmp/old/src python bench/ingest.py ...` then
    # measures that build (an A/B against an older commit) instead of silently this checkout's.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO / "src")) if p)
    # An allocator (or any library) for the server alone: LD_PRELOAD in the bench's own environment
    # would reach the load tool and nginx-rtmp too, and the comparison would no longer be like for like.
    if os.environ.get("TIDECAST_BENCH_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["TIDECAST_BENCH_PRELOAD"]
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = Server("tidecast", proc.pid, proc, workdir)
    wait_port(rtmp_port, server)
    return server


def nginx_binary() -> str | None:
    """nginx with the RTMP module loadable (Debian: nginx + libnginx-mod-rtmp)."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path and os.path.exists(NGINX_RTMP_MODULE):
        return path
    return None


NGINX_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def start_nginx(workdir: Path, rtmp_port: int, core: int = 0, application: str = "") -> Server:
    """nginx-rtmp pinned to `core`; `application` adds directives to its one live application."""
    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx with the RTMP module is not installed (apt-get install -y nginx libnginx-mod-rtmp)")
    workdir.mkdir(parents=True, exist_ok=True)
    template = (BENCH_DIR / "nginx-rtmp.conf").read_text()
    conf = workdir / "nginx.conf"
    conf.write_text(
        template.replace("@MODULE@", NGINX_RTMP_MODULE)
        .replace("@DIR@", str(workdir))
        .replace("@PORT@", str(rtmp_port))
        .replace("@APPLICATION@", application)
    )
    argv = _pinned([binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)], core)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Server("nginx-rtmp", proc.pid, proc, workdir)
    wait_port(rtmp_port, server)
    return server


# ---------------------------------------------------------------- profiles


def summarize_top(raw: Path, limit: int = 15) -> dict[str, Any]:
    """Self and inclusive top frames from py-spy's raw (collapsed) output."""
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        self_count[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n

    def top(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "pct": round(100.0 * k / max(1, total), 1)} for f, k in c.most_common(limit)]

    return {"samples": total, "self": top(self_count), "inclusive": top(incl)}


async def profile(pid: int, seconds: float, out: Path, idle: bool = False) -> dict[str, Any] | None:
    """py-spy record (raw) and dump of a running server; the top frames, or None without py-spy."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (pip install py-spy): no profile")
        return None
    raw = out.with_suffix(".collapsed.txt")
    raw.parent.mkdir(parents=True, exist_ok=True)
    rate = 500
    cmd = [spy, "record", "--nonblocking", "-r", str(rate), "-d", str(int(seconds)), "-p", str(pid)]
    if idle:
        cmd.append("--idle")
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--format", "raw", "-o", str(raw), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not raw.exists():
        print(f"py-spy failed: {err.decode(errors='replace').strip()[-400:]}")
        return None
    dump = await asyncio.create_subprocess_exec(spy, "dump", "--nonblocking", "-p", str(pid), stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)  # fmt: skip
    dumped, _ = await dump.communicate()
    summary = summarize_top(raw)
    summary["busy_pct"] = None if idle else round(100.0 * summary["samples"] / (rate * seconds), 1)
    summary["idle_included"] = idle
    summary["collapsed"] = str(raw)
    summary["dump"] = dumped.decode(errors="replace")
    with contextlib.suppress(OSError):
        version = await asyncio.create_subprocess_exec(spy, "--version", stdout=subprocess.PIPE)
        summary["py_spy"] = (await version.communicate())[0].decode().strip()
    return summary


def print_profile(prof: dict[str, Any]) -> None:
    busy = "" if prof["busy_pct"] is None else f", server busy {prof['busy_pct']}% of the time"
    print(f"py-spy: {prof['samples']} samples{busy}; top self frames:")
    for item in prof["self"][:12]:
        print(f"  {item['pct']:5.1f}%  {item['frame']}")


# ---------------------------------------------------------------- output


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def plot(
    path: Path, title: str, xlabel: str, series: dict[str, list[dict[str, Any]]], panels: list[tuple[str, str]], x: str
) -> str:
    """One PNG, one panel per (key, label), one line per server. Returns a note for the console."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    if len(panels) == 1:
        axes = [axes]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, rows in series.items():
            xs = [r[x] for r in rows if r.get(key) is not None]
            ys = [r[key] for r in rows if r.get(key) is not None]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if "keepup" in key or "realtime" in key:
            ax.set_ylim(0, 105)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {path}"


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


# ---------------------------------------------------------------- a publisher in its own process


class PublisherProcess:
    """The fan-out's publisher, in a process of its own so the players' load never delays its pacing.

    It logs `index loop send-time` for every message it writes (time.monotonic,
    which is one clock for every process on Linux), read back for latency.
    """

    def __init__(self, clip: Path, target: Target, workdir: Path) -> None:
        self.log = workdir / f"publisher-{target.stream}.log"
        self.clip = clip
        self.target = target
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(BENCH_DIR / "benchlib.py"), "publish", self.target.rtmp_url(),
            str(self.clip), str(self.log), stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise SystemExit(f"the publisher did not start: {line.decode(errors='replace').strip()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()


async def _publish_main(url: str, clip_path: str, log_path: str) -> None:
    clip = Clip(Path(clip_path))
    target = parse_rtmp_url(url)
    log = open(log_path, "w", buffering=1 << 16)  # noqa: SIM115 - flushed by the loop below
    lines: list[str] = []

    def on_send(index: int, loop_index: int, when: float) -> None:
        lines.append(f"{index} {loop_index} {when:.6f}\n")

    try:
        pub = await start_publisher(clip, target, on_send)
    except Exception as exc:
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        return
    ticker = Ticker(0.005)
    ticker.publishers.append(pub)
    ticker.start()
    print("ready", flush=True)
    while not pub.lost:
        await asyncio.sleep(0.25)
        if lines:
            log.writelines(lines)
            lines.clear()
            log.flush()
    print("error: publisher connection lost", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "publish":
        pin_load(1)
        use_uvloop()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_publish_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        print("usage: benchlib.py publish rtmp://127.0.0.1:PORT/APP/STREAM CLIP.flv SEND.log", file=sys.stderr)
        sys.exit(2)
