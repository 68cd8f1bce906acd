"""A small blocking RTMP client for tests, built on tidecast's own sans-I/O session.

Real sockets, real server: used where ffmpeg cannot do what a test needs
(a player that stops reading, exact timestamps of arrival).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from tidecast.rtmp import session as S
from tidecast.rtmp.chunk import Message


@dataclass
class Received:
    media: list[tuple[int, int, int, float]] = field(default_factory=list)  # type, ts, size, arrival
    statuses: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[Any] = field(default_factory=list)

    def media_span_ms(self) -> int:
        ts = [m[1] for m in self.media if m[0] in (8, 9)]
        return max(ts) - min(ts) if ts else 0

    def first_video(self) -> tuple[int, int, int, float] | None:
        return next((m for m in self.media if m[0] == 9), None)


class RtmpTestClient:
    """`connect=False` stops after the handshake; `rcvbuf` shrinks the receive buffer once connected
    (a player that will stop reading); `tc_url` overrides the one made of host, port and app."""

    def __init__(
        self,
        host: str,
        port: int,
        app: str = "live",
        timeout: float = 10.0,
        connect: bool = True,
        rcvbuf: int = 0,
        tc_url: str | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # C2 and connect leave in separate writes: with Nagle the second waits out the server's delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = S.RtmpSession(client=True)
        self.received = Received()
        self.video_payloads: list[bytes] = []
        self._flush()
        self._pump_until(lambda: self.session.handshake_done, timeout)
        self.connect_result: S.CommandResult | None = None
        if connect:
            self.session.connect(app, tc_url if tc_url is not None else f"rtmp://{host}:{port}/{app}")
            self._flush()
            self.connect_result = self._wait_result("connect", timeout)
        if rcvbuf:
            # After the set-up: a tiny window from the SYN on makes every round trip wait for a delayed ACK.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def _flush(self) -> None:
        for data in self.session.data_to_send():
            self.sock.sendall(data)

    def _handle(self, events: list[Any]) -> list[Any]:
        other = []
        now = time.monotonic()
        for ev in events:
            if isinstance(ev, Message):
                self.received.media.append((ev.type_id, ev.timestamp, len(ev.payload), now))
                if ev.type_id == 9 and len(self.video_payloads) < 64:
                    self.video_payloads.append(ev.payload)
            elif isinstance(ev, S.Status):
                self.received.statuses.append(ev.info)
                other.append(ev)
            elif isinstance(ev, S.Metadata):
                self.received.metadata.append(ev.values)
            else:
                other.append(ev)
        return other

    def _pump(self, timeout: float) -> list[Any]:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(256 * 1024)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("server closed the connection")
        events = self.session.receive_data(data)
        self._flush()
        return self._handle(events)

    def _pump_until(self, cond: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("RTMP test client: condition not met")
            self._pump(0.5)

    def _wait_result(self, command: str, timeout: float) -> S.CommandResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self._pump(0.5):
                if isinstance(ev, S.CommandResult) and ev.command == command:
                    return ev
        raise TimeoutError(f"no answer to {command}")

    def wait_status(self, code: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = [s for s in self.received.statuses if s.get("code") == code]
        while not seen and time.monotonic() < deadline:
            for ev in self._pump(0.5):
                if isinstance(ev, S.Status) and ev.code == code:
                    seen.append(ev.info)
        if not seen:
            raise TimeoutError(f"no onStatus {code}; got {[s.get('code') for s in self.received.statuses]}")
        return seen[0]

    def play(self, stream: str) -> None:
        self.session.create_stream()
        self._flush()
        self._wait_result("createStream", 10.0)
        self.session.play(stream)
        self._flush()

    def publish(self, stream: str) -> None:
        self.session.create_stream()
        self._flush()
        self._wait_result("createStream", 10.0)
        self.session.publish(stream)
        self._flush()

    def read_for(self, seconds: float) -> Received:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.received

    def send(self, data: bytes) -> None:
        """Raw bytes after what the session said (hostile input the session would never encode)."""
        self._flush()
        self.sock.sendall(data)

    def closed_within(self, seconds: float) -> bool:
        """True when the server closes (or resets) the connection within `seconds`; what it sends is dropped."""
        return closed_within(self.sock, seconds)

    def close(self) -> None:
        self.sock.close()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(min(remaining, 0.5))
        try:
            if not sock.recv(256 * 1024):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset
            return True


def stalled_player(host: str, port: int, stream: str, app: str = "live", rcvbuf: int = 4096) -> socket.socket:
    """A player that plays, then never reads again: its socket fills up at once."""
    client = RtmpTestClient(host, port, app, rcvbuf=rcvbuf)
    client.play(stream)
    return client.sock


# An AVCDecoderConfigurationRecord (High profile 1280x720: one SPS, one PPS), and AAC-LC 44.1 kHz stereo.
AVC_SEQUENCE_HEADER = b"\x17\x00\x00\x00\x00" + bytes.fromhex(
    "0164001fffe1001a6764001facd9405005bb011000000300100000030320f183196001000568ebecb22c"
)
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"


class SyntheticPublisher:
    """Publishes fake H.264/AAC-tagged frames at a chosen bitrate in real time, from a thread.

    The server never decodes media, so random payloads behind valid FLV tag
    headers are enough to load it at bitrates a test clip cannot reach cheaply.
    A keyframe (4x a frame's size) every `gop` frames; `prefill` frames are sent
    at once before real time starts (a big GOP cached at once); `constant_ts`
    stamps every frame 0; `chunk_size` is announced before the media.
    """

    def __init__(
        self,
        host: str,
        port: int,
        stream: str,
        kbps: int,
        app: str = "live",
        gop: int = 25,
        prefill: int = 0,
        constant_ts: bool = False,
        chunk_size: int = 0,
    ) -> None:
        import os
        import threading

        self.client = RtmpTestClient(host, port, app)
        session = self.client.session
        session.create_stream()
        self.client._flush()
        self.client._wait_result("createStream", 10.0)
        session.publish(stream)
        self.client._flush()
        self.client.wait_status("NetStream.Publish.Start")
        if chunk_size:
            session.set_chunk_size(chunk_size)
            self.client._flush()
        frame_bytes = max(64, kbps * 1000 // 8 // 25)
        self.blob = os.urandom(frame_bytes * 4)
        self.frame_bytes = frame_bytes
        self.gop = gop
        self.prefill = prefill
        self.constant_ts = constant_ts
        self.frames = 0
        self.error: Exception | None = None
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        session = self.client.session
        sock = self.client.sock
        try:
            sock.sendall(session.send_media(9, 0, AVC_SEQUENCE_HEADER))
            sock.sendall(session.send_media(8, 0, AAC_SEQUENCE_HEADER))
            start = time.monotonic()
            while not self.stop_flag.is_set():
                frame = self.frames
                ts = 0 if self.constant_ts else frame * 40
                key = frame % self.gop == 0
                header = b"\x17\x01\x00\x00\x00" if key else b"\x27\x01\x00\x00\x00"
                # One NAL unit (IDR or not) of noise, length-prefixed: HLS muxes it like a real frame.
                nal = (b"\x65" if key else b"\x41") + self.blob[: self.frame_bytes * (4 if key else 1)]
                sock.sendall(session.send_media(9, ts, header + len(nal).to_bytes(4, "big") + nal))
                sock.sendall(session.send_media(8, ts, b"\xaf\x01" + self.blob[:200]))
                self.frames += 1
                if self.frames == self.prefill:
                    start = time.monotonic()
                if self.frames > self.prefill:
                    delay = start + (self.frames - self.prefill) * 0.04 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        self.client.close()
