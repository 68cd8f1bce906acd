"""The live core without sockets or an event loop: fake transports, a fake clock, the real Hub and LiveStream.

These run in milliseconds and pin the fan-out's contract: shared bytes, leaving
and regaining sync, bounded queues with keyframe skips, GOP joins, republish,
time jitter, and the session API's admission.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tidecast.config import Config, parse_text
from tidecast.live.admission import (
    ERROR_BAD_NAME,
    ERROR_SERVER_DRAINING,
    ERROR_SYSTEM_STREAM_BUSY,
    JoinRequest,
    Redirect,
    Refusal,
)
from tidecast.live.client import Client
from tidecast.live.hub import Hub, PlayTicket, Publication, StreamEvents, Subscription, Target
from tidecast.live.limits import CONGESTED_BYTES, PLAYER_QUEUE_BYTES, SEND_TIMEOUT_S
from tidecast.live.packet import TAG_AUDIO, TAG_VIDEO, Packet
from tidecast.live.player import Player
from tidecast.live.stream import MAX_TIMELINES, TIMELINE_SHARE_MS, LiveStream, TimeJitter

AVC_HEADER = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff"
AAC_HEADER = b"\xaf\x00\x12\x10"


def keyframe(size: int = 100) -> bytes:
    return b"\x17\x01\x00\x00\x00" + b"k" * size


def interframe(size: int = 50) -> bytes:
    return b"\x27\x01\x00\x00\x00" + b"p" * size


def audio(size: int = 20) -> bytes:
    return b"\xaf\x01" + b"a" * size


class FakeClock:
    """The Scheduler the live core asks for: time and timers, advanced by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], object], FakeTimer]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer()
        self.timers.append((self.now + delay, callback, timer))
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback, timer in due:
            if not timer.cancelled:
                callback()


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTransport:
    """A socket whose kernel buffer is `capacity` bytes; `drain()` is the peer reading."""

    def __init__(self, capacity: int | None = None) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.capacity = capacity
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.capacity is not None:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def drain(self) -> None:
        self.buffered = 0

    def received(self) -> bytes:
        return b"".join(self.writes)


class TagFormat:
    """A readable output format: each packet as `type:timestamp:keyframe;`, notices as `!code;`."""

    def __init__(self, base: int = 0) -> None:
        self.base = base

    def at(self, base: int) -> TagFormat:
        return self if base == self.base else TagFormat(base)

    def encode(self, packet: Packet) -> bytes:
        return b"%d:%d:%d;" % (packet.type_id, max(packet.timestamp - self.base, 0), packet.keyframe)

    def batch(self, packets: Iterable[Packet]) -> bytes:
        return b"".join([p.encoded(self) for p in packets])

    def notice(self, code: str, description: str, chunk_size: int) -> bytes:
        return f"!{code};".encode()


FMT = TagFormat()


def tags(data: bytes) -> list[tuple[int, int, int]]:
    out = []
    for item in data.decode().split(";"):
        if item and not item.startswith("!"):
            t, ts, k = item.split(":")
            out.append((int(t), int(ts), int(k)))
    return out


def make_config(vhost: str = "") -> Config:
    return parse_text(f"listen 1935;\nvhost __defaultVhost__ {{\n{vhost}\n}}\n")


def make_stream(clock: FakeClock, vhost: str = "") -> LiveStream:
    config = make_config(vhost)
    return LiveStream("__defaultVhost__", "live", "s", config.vhost("__defaultVhost__"), 4096, clock)


def player(transport: FakeTransport, cid: str = "p") -> Player:
    return Player(cid, "127.0.0.1", "test-play", transport, lambda: setattr(transport, "closing", True), FMT)


def publish_gop(stream: LiveStream, start: int = 0, frames: int = 10, step: int = 40) -> None:
    stream.on_media(TAG_VIDEO, start, keyframe())
    for i in range(1, frames):
        stream.on_media(TAG_VIDEO, start + i * step, interframe())
        stream.on_media(TAG_AUDIO, start + i * step, audio())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------- fan-out


def test_in_sync_players_share_one_bytes_object_per_flush() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    transports = [FakeTransport() for _ in range(3)]
    for i, t in enumerate(transports):
        stream.add_player(player(t, f"p{i}"))
    publish_gop(stream, frames=30)
    stream.flush()
    batches = [t.writes[-1] for t in transports]
    assert batches[0] and all(b is batches[0] for b in batches), "each player must get the very same object"
    assert all(len(t.writes) == len(transports[0].writes) for t in transports)


def test_sparse_stream_leaves_within_a_merge_window_of_wall_time() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    t = FakeTransport()
    stream.add_player(player(t))
    stream.on_media(TAG_AUDIO, 0, audio())
    assert not t.writes
    clock.advance(0.36)  # default mw_latency 350 ms
    assert tags(t.received()) == [(TAG_AUDIO, 0, 0)]


def test_slow_player_leaves_sync_catches_up_without_stalling_others() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    healthy, slow = FakeTransport(), FakeTransport(capacity=0)
    p_healthy, p_slow = player(healthy, "h"), player(slow, "s")
    stream.add_player(p_healthy)
    stream.add_player(p_slow)
    slow.buffered = CONGESTED_BYTES + 1  # its kernel buffer is full
    publish_gop(stream, frames=20)
    stream.flush()
    assert not p_slow.in_sync and p_slow.queue
    assert p_healthy.in_sync and len(tags(healthy.received())) == 39
    written_while_slow = len(slow.writes)
    slow.drain()
    publish_gop(stream, start=800, frames=5)
    stream.flush()
    assert p_slow.in_sync, "a drained socket brings the player back into the shared batch"
    got = tags(slow.received())
    assert len(slow.writes) > written_while_slow
    assert [ts for _, ts, _ in got] == sorted(ts for _, ts, _ in got), "catch-up keeps order"
    assert got == tags(healthy.received())


def test_queue_bound_in_media_time_drops_to_next_keyframe() -> None:
    clock = FakeClock()
    stream = make_stream(clock, "play { queue_length 1; }")
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_media(TAG_VIDEO, 0, AVC_HEADER)
    slow = FakeTransport(capacity=0)
    p = player(slow)
    stream.add_player(p)
    slow.buffered = 10 * CONGESTED_BYTES
    publish_gop(stream, start=0, frames=50)  # 2 s of media, more than queue_length
    stream.flush()
    assert p.dropped > 0 and stream.dropped_frames == p.dropped
    assert p.wait_keyframe
    publish_gop(stream, start=2000, frames=3)
    stream.flush()
    video = [pkt for pkt in p.queue if pkt.type_id == TAG_VIDEO and not pkt.sequence_header]
    assert video[0].keyframe, "after a skip the first video frame is a keyframe"


def test_queue_bound_in_bytes_holds_with_constant_timestamps() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    slow = FakeTransport(capacity=0)
    p = player(slow)
    stream.add_player(p)
    slow.buffered = 10 * CONGESTED_BYTES
    for _ in range(40):  # constant timestamps: media time never advances
        stream.on_media(TAG_VIDEO, 5, keyframe(1024 * 1024))
        stream.flush()
        assert p.queued_bytes <= PLAYER_QUEUE_BYTES + 1024 * 1024 + 5
    assert p.dropped > 0


def test_player_that_reads_nothing_is_closed_after_the_send_timeout() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stuck = FakeTransport(capacity=0)
    p = player(stuck)
    stream.add_player(p)
    stuck.buffered = 10 * CONGESTED_BYTES
    publish_gop(stream)
    stream.flush()
    clock.now += SEND_TIMEOUT_S / 2
    stream.sweep()
    assert not stuck.closing
    clock.now += SEND_TIMEOUT_S
    stream.sweep()
    assert stuck.closing, "a player whose socket took nothing for the send timeout is kicked"


# ---------------------------------------------------------------- joins


def test_late_joiner_gets_metadata_headers_and_gop_from_the_keyframe() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_metadata({"width": 640.0, "duration": 0.0})
    stream.on_media(TAG_VIDEO, 0, AVC_HEADER)
    stream.on_media(TAG_AUDIO, 0, AAC_HEADER)
    publish_gop(stream, start=0, frames=10)
    publish_gop(stream, start=400, frames=5)
    stream.flush()
    t = FakeTransport()
    stream.add_player(player(t))
    got = t.received().decode().split(";")
    assert got[0].startswith("18:0"), "metadata first"
    assert "duration" not in stream.metadata_values, "a live stream's duration 0 is not passed on"
    video = [x for x in tags(t.received()) if x[0] == TAG_VIDEO]
    assert video[0][1] == 0 and video[1] == (TAG_VIDEO, 0, 1), "sequence header, then the GOP's keyframe at 0"
    assert [x[1] for x in video[1:]] == [0, 40, 80, 120, 160], "its timeline starts at the keyframe it joined on"


def test_players_who_join_on_one_keyframe_share_a_timeline_and_its_bytes() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    first = FakeTransport()
    stream.add_player(player(first, "first"))
    for gop in range(75):  # 30 s of 400 ms GOPs
        publish_gop(stream, start=gop * 400, frames=10)
    publish_gop(stream, start=30_000, frames=5)
    stream.flush()
    late = [FakeTransport() for _ in range(3)]
    for i, t in enumerate(late):
        stream.add_player(player(t, f"late{i}"))
    assert len(stream.timelines) == 2, "one timeline from 0, one for everyone who joined on the keyframe at 30 s"
    marks = {id(t): len(t.writes) for t in [first, *late]}
    publish_gop(stream, start=30_200, frames=10)
    stream.flush()

    def video_since(t: FakeTransport) -> list[int]:
        return [x[1] for x in tags(b"".join(t.writes[marks[id(t)] :])) if x[0] == TAG_VIDEO]

    assert next(x[1] for x in tags(late[0].received()) if x[0] == TAG_VIDEO) == 0
    assert video_since(first)[0] == 30_200, "from the start: stream time"
    assert video_since(late[0])[0] == 200
    assert all(t.writes[-1] is late[0].writes[-1] for t in late), "one batch per timeline, shared"
    assert first.writes[-1] is not late[0].writes[-1]
    for p in list(stream.players):
        stream.remove_player(p)
    assert stream.timelines == {}, "a timeline goes with its last player"


def test_time_jitter_off_keeps_the_publisher_timestamps_for_every_player() -> None:
    clock = FakeClock()
    stream = make_stream(clock, "play { time_jitter off; }")
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    publish_gop(stream, start=5_000, frames=5)
    stream.flush()
    t = FakeTransport()
    stream.add_player(player(t))
    assert next(x[1] for x in tags(t.received()) if x[0] == TAG_VIDEO) == 5_000


def test_timelines_per_stream_are_capped() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    transports = []
    for i in range(MAX_TIMELINES + 5):
        publish_gop(stream, start=i * 6000, frames=150)  # 6 s GOPs: each joiner is past the sharing window
        stream.flush()
        t = FakeTransport()
        stream.add_player(player(t, f"p{i}"))
        transports.append(t)
    assert len(stream.timelines) == MAX_TIMELINES
    last = [x[1] for x in tags(transports[-1].received()) if x[0] == TAG_VIDEO]
    assert last[0] == 5 * 6000, "past the cap a joiner shares the newest timeline, after its 0"


def test_a_joiner_shortly_after_another_shares_its_timeline() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    for gop in range(20):
        publish_gop(stream, start=gop * 1000, frames=25)
    stream.flush()
    first = FakeTransport()
    stream.add_player(player(first, "first"))
    for gop in range(20, 22):
        publish_gop(stream, start=gop * 1000, frames=25)
    stream.flush()
    second = FakeTransport()
    stream.add_player(player(second, "second"))
    assert len(stream.timelines) == 1, f"2 s later: within {TIMELINE_SHARE_MS} ms, one batch per flush for both"
    assert next(x[1] for x in tags(second.received()) if x[0] == TAG_VIDEO) == 2000


def test_a_stream_without_players_keeps_no_merge_window_and_a_joiner_gets_each_packet_once() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_media(TAG_VIDEO, 0, AVC_HEADER)
    publish_gop(stream, start=0, frames=5)
    assert not stream.pending and not clock.timers  # nobody to write to: nothing queued, no timer
    t = FakeTransport()
    stream.add_player(player(t))
    publish_gop(stream, start=200, frames=12)  # long enough for the merge window to flush
    stream.flush()
    video = [x[1] for x in tags(t.received()) if x[0] == TAG_VIDEO]
    assert video == [0, *range(0, 5 * 40, 40), *range(200, 200 + 12 * 40, 40)]


def test_a_joiner_after_the_last_player_left_never_gets_older_packets_late() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_media(TAG_VIDEO, 0, AVC_HEADER)
    first = player(FakeTransport())
    stream.add_player(first)
    publish_gop(stream, start=0, frames=3)  # still in the merge window when its player leaves
    assert stream.pending
    stream.remove_player(first)
    for ts in (120, 160, 200):
        stream.on_media(TAG_VIDEO, ts, interframe())
    t = FakeTransport()
    stream.add_player(player(t))
    publish_gop(stream, start=240, frames=12)
    stream.flush()
    video = [x[1] for x in tags(t.received()) if x[0] == TAG_VIDEO][1:]  # after the sequence header
    assert all(a < b for a, b in itertools.pairwise(video)), video


def test_join_without_cached_keyframe_waits_for_one() -> None:
    clock = FakeClock()
    stream = make_stream(clock, "play { gop_cache off; }")
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_media(TAG_VIDEO, 0, AVC_HEADER)
    publish_gop(stream, frames=5)
    stream.flush()
    t = FakeTransport()
    p = player(t)
    stream.add_player(p)
    stream.on_media(TAG_VIDEO, 300, interframe())
    stream.on_media(TAG_VIDEO, 340, keyframe())
    stream.flush()
    video = [x for x in tags(t.received()) if x[0] == TAG_VIDEO]
    # Its timeline starts at the stream's time when it joined (160): the keyframe at 340 is 180 for it.
    assert video[-1] == (TAG_VIDEO, 180, 1)
    assert (TAG_VIDEO, 140, 0) not in video


def test_republish_notifies_players_and_resets_the_gop() -> None:
    clock = FakeClock()
    stream = make_stream(clock)
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    publish_gop(stream, frames=5)
    t = FakeTransport()
    stream.add_player(player(t))
    stream.on_unpublish()
    assert b"!NetStream.Play.UnpublishNotify;" in t.received()
    assert not stream.gop and stream.video_sh is None
    stream.on_publish(Client("pub2", "", "test-publish", lambda: None))
    assert b"!NetStream.Play.PublishNotify;" in t.received()
    publish_gop(stream, start=0, frames=3)
    stream.flush()
    stamps = [ts for _, ts, _ in tags(t.received())]
    assert stamps == sorted(stamps), "time_jitter full continues the timeline across a republish"


def test_gop_kept_raw_while_nobody_plays_is_the_join_burst_of_later_players() -> None:
    """Without players the GOP cache keeps raw fields, no object per message; a joiner gets them as
    packets, and a later joiner gets the same packets (their serializations shared) plus what came while
    nobody played."""
    clock = FakeClock()
    stream = make_stream(clock, "play { time_jitter off; }")
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    publish_gop(stream, start=1000, frames=3)
    assert stream.gop == [] and stream.gop_frames == 5 and stream.gop_first_payload == keyframe()
    first_t = FakeTransport()
    first = player(first_t, "first")
    stream.add_player(first)
    made = list(stream.gop)
    assert all(isinstance(p, Packet) for p in made) and len(made) == 5
    stream.remove_player(first)
    stream.on_media(TAG_VIDEO, 1120, interframe())
    assert stream.gop == made and stream.gop_frames == 6
    second_t = FakeTransport()
    stream.add_player(player(second_t, "second"))
    assert stream.gop[:5] == made and len(stream.gop) == 6
    want = [(TAG_VIDEO, 1000), (TAG_VIDEO, 1040), (TAG_AUDIO, 1040), (TAG_VIDEO, 1080), (TAG_AUDIO, 1080)]
    assert [(t, ts) for t, ts, _ in tags(first_t.received())] == want
    assert [(t, ts) for t, ts, _ in tags(second_t.received())] == [*want, (TAG_VIDEO, 1120)]
    # A keyframe starts the cache over; with a player there, it holds Packets.
    stream.on_media(TAG_VIDEO, 1160, keyframe())
    assert stream.gop_frames == 1 and len(stream.gop) == 1 and stream.gop[0].timestamp == 1160


# ---------------------------------------------------------------- time jitter


@pytest.mark.parametrize(
    ("mode", "inputs", "expected"),
    [
        ("full", [1000, 1040, 1080, 90000, 90040], [0, 40, 80, 90, 130]),
        ("full", [0, 40, 30, 80], [0, 40, 40, 90]),  # small backward step held, never goes back
        ("zero", [5000, 5040, 5080], [0, 40, 80]),
        ("off", [5000, 5040, 4000], [5000, 5040, 4000]),
    ],
)
def test_time_jitter_modes(mode: str, inputs: list[int], expected: list[int]) -> None:
    jitter = TimeJitter(mode)
    assert [jitter.correct(ts) for ts in inputs] == expected


def test_time_jitter_reload_from_full_to_off_takes_effect_on_the_next_frame() -> None:
    """The stream's inline jitter path must not keep correcting once a reload turned `full` off."""
    clock = FakeClock()
    stream = make_stream(clock)
    for ts in (5000, 5040):
        stream.on_media(TAG_AUDIO, ts, audio())
    assert stream.last_timestamp == 40
    stream.apply_settings(make_config("play { time_jitter off; }").vhost("__defaultVhost__"))
    stream.on_media(TAG_AUDIO, 5080, audio())
    assert stream.last_timestamp == 5080
    stream.apply_settings(make_config("").vhost("__defaultVhost__"))
    for ts in (5120, 5160):
        stream.on_media(TAG_AUDIO, ts, audio())
    assert stream.last_timestamp == 80  # full again: corrected, on from where full left off


# ---------------------------------------------------------------- the session API


class Recorder(StreamEvents):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        self.events.append(f"publish {stream.name}")

    def on_unpublish(self, stream: LiveStream, client: Client) -> None:
        self.events.append(f"unpublish {stream.name}")

    def on_play(self, stream: LiveStream, player: Player) -> None:
        self.events.append(f"play {stream.name}")

    def on_stop(self, stream: LiveStream, player: Player) -> None:
        self.events.append(f"stop {stream.name}")


class Notified:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def on_event(self, event: str, request: JoinRequest) -> None:
        self.events.append((event, request.stream, request.param))


class TokenGate:
    """Refuses publish and play unless the query carries token=good; asks the way an HTTP hook would."""

    def __init__(self) -> None:
        self.seen: list[JoinRequest] = []

    async def check(self, request: JoinRequest) -> Refusal | Redirect | None:
        self.seen.append(request)
        await asyncio.sleep(0)  # a real gate awaits I/O
        if request.action != "connect" and "token=good" not in request.param:
            return Refusal(1065, "bad token")
        return None


def make_hub(vhost: str = "") -> tuple[Hub, FakeClock]:
    clock = FakeClock()
    return Hub(make_config(vhost), clock, server_id="vid-test"), clock


def test_publish_play_and_idempotent_close_notify_observers_once() -> None:
    hub, _ = make_hub()
    observer, notified = Recorder(), Notified()
    hub.observers.append(observer)
    hub.notified.append(notified)
    publisher = Client("c1", "10.0.0.1", "fmle-publish", lambda: None)
    pub = run(hub.publish(Target("__defaultVhost__", "live", "s"), publisher))
    assert isinstance(pub, Publication) and pub.stream.publisher is publisher
    assert hub.clients["c1"] is publisher
    ticket = run(hub.play(Target("example.com", "live", "s"), player(FakeTransport(), "c2")))
    assert isinstance(ticket, PlayTicket)
    sub = ticket.start()
    assert isinstance(sub, Subscription) and sub.stream is pub.stream
    sub.close()
    sub.close()
    pub.close()
    pub.close()
    assert observer.events == ["publish s", "play s", "stop s", "unpublish s"]
    assert [e for e, _, _ in notified.events] == ["stop", "unpublish"]
    assert not hub.streams and not hub.clients


def test_second_publisher_is_refused_busy() -> None:
    hub, _ = make_hub()
    run(hub.publish(Target("__defaultVhost__", "live", "s"), Client("c1", "", "fmle-publish", lambda: None)))
    second = run(hub.publish(Target("__defaultVhost__", "live", "s"), Client("c2", "", "fmle-publish", lambda: None)))
    assert isinstance(second, Refusal) and second.code == ERROR_SYSTEM_STREAM_BUSY
    assert "already being published" in second.reason


@pytest.mark.parametrize(
    ("app", "stream"),
    [
        ("live", "../../../../etc/pwn"),
        ("../..", "s"),
        ("", "var/www/abs"),
        ("live", "a\nb"),
        ("live", "x" * 300),
        ("live", ""),
        ("/live", "s"),
    ],
)
def test_hostile_names_are_refused_before_any_gate(app: str, stream: str) -> None:
    hub, _ = make_hub()
    gate = TokenGate()
    hub.gates.append(gate)
    result = run(hub.publish(Target("__defaultVhost__", app, stream, "token=good"), Client("c", "", "x", lambda: None)))
    assert isinstance(result, Refusal) and result.code == ERROR_BAD_NAME
    assert "\n" not in result.reason
    assert not gate.seen and not hub.streams


def test_gates_see_the_request_and_refuse_without_touching_streams() -> None:
    hub, _ = make_hub()
    gate = TokenGate()
    hub.gates.append(gate)
    bad = run(hub.publish(Target("__defaultVhost__", "live", "s", "token=bad"), Client("c1", "1.2.3.4", "p", print)))
    assert isinstance(bad, Refusal) and bad.reason == "bad token"
    assert not hub.streams and not hub.clients
    good = run(hub.publish(Target("__defaultVhost__", "live", "s", "token=good"), Client("c2", "1.2.3.4", "p", print)))
    assert isinstance(good, Publication)
    seen = gate.seen[-1]
    fields = (seen.action, seen.ip, seen.app, seen.stream, seen.param)
    assert fields == ("publish", "1.2.3.4", "live", "s", "?token=good")
    assert seen.server_id == "vid-test" and seen.vhost == "__defaultVhost__"
    refused_play = run(hub.play(Target("__defaultVhost__", "live", "s"), player(FakeTransport())))
    assert isinstance(refused_play, Refusal)
    assert pub_players(hub) == 0


def pub_players(hub: Hub) -> int:
    return sum(len(s.players) for s in hub.streams.values())


def test_redirect_from_a_gate_reaches_the_adapter() -> None:
    hub, _ = make_hub()

    class Elsewhere:
        async def check(self, request: JoinRequest) -> Refusal | Redirect | None:
            return Redirect("10.1.1.1", 1935, "__defaultVhost__", "10.1.1.1:8080") if request.action == "play" else None

    hub.gates.append(Elsewhere())
    result = run(hub.play(Target("__defaultVhost__", "live", "s"), player(FakeTransport())))
    assert result == Redirect("10.1.1.1", 1935, "__defaultVhost__", "10.1.1.1:8080")


def test_a_draining_hub_refuses_new_work_and_flv_requires_a_live_stream() -> None:
    hub, _ = make_hub()
    missing = run(hub.play(Target("__defaultVhost__", "live", "nobody"), player(FakeTransport()), "flv", True))
    assert isinstance(missing, Refusal) and missing.code == 2048
    hub.accepting = False
    refused = run(hub.publish(Target("__defaultVhost__", "live", "s"), Client("c", "", "p", print)))
    assert isinstance(refused, Refusal) and refused.code == ERROR_SERVER_DRAINING


def test_played_but_never_published_streams_are_forgotten() -> None:
    hub, _ = make_hub()
    for i in range(100):
        ticket = run(hub.play(Target("__defaultVhost__", "live", f"miss{i}"), player(FakeTransport(), f"p{i}")))
        ticket.start().close()
    assert not hub.streams and not hub.clients


def test_codec_description_is_kept_until_the_sequence_headers_change() -> None:
    """/api/v1/streams asks every stream for its codecs on every poll: parsed once per header."""
    stream = make_stream(FakeClock())
    stream.on_publish(Client("pub", "", "test-publish", lambda: None))
    stream.on_media(TAG_AUDIO, 0, b"\xaf\x00\x12\x10")  # AAC LC, 44.1 kHz, stereo
    _, first = stream.describe_codecs()
    assert first is not None and stream.describe_codecs()[1] is first
    stream.on_media(TAG_AUDIO, 40, b"\xaf\x00\x11\x90")  # AAC LC, 48 kHz, stereo
    _, second = stream.describe_codecs()
    assert second is not None and second is not first and second != first


def test_packet_serializations_are_made_once_per_format() -> None:
    """The first format's bytes are kept in slots, others in a dict: each format encodes a packet once."""
    calls: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def encode(self, packet: Packet) -> bytes:
            calls.append(self.name)
            return self.name.encode() + packet.payload

    pkt = Packet(TAG_VIDEO, 40, b"!", 4096, keyframe=True)
    rtmp, flv, mp4 = Named("rtmp"), Named("flv"), Named("mp4")
    for _ in range(3):
        assert pkt.encoded(rtmp) == b"rtmp!" and pkt.encoded(flv) == b"flv!" and pkt.encoded(mp4) == b"mp4!"
    assert calls == ["rtmp", "flv", "mp4"]
