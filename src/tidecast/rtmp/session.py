"""The RTMP command session: a sans-I/O state machine for both roles.

Bytes go in with `receive_data`, events come out, and whatever the session has
to say back is collected for `data_to_send`. The same class speaks as a server
(accepting publishers and players) and as a client (an edge pulling from or
pushing to an origin). Media fan-out does not pass through here: the server
writes pre-serialized media chunks straight to the socket, which is why all
output media uses the fixed message stream id `STREAM_ID` and a chunk size the
caller chose when accepting the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from tidecast.codec import amf0
from tidecast.errors import ProtocolError
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import ChunkDecoder, ChunkEncoder, Message
from tidecast.rtmp.handshake import ClientHandshake, ServerHandshake

STREAM_ID = 1
DEFAULT_WINDOW_ACK_SIZE = 2_500_000
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class SessionError(ProtocolError):
    """A well-formed message that breaks the RTMP command protocol."""


# ---------------------------------------------------------------- events


@dataclass(slots=True)
class ConnectRequest:
    transaction_id: float
    command_object: dict[str, Any]
    args: list[Any]

    @property
    def app(self) -> str:
        return str(self.command_object.get("app") or "")

    @property
    def tc_url(self) -> str:
        return str(self.command_object.get("tcUrl") or "")


@dataclass(slots=True)
class PublishRequest:
    stream_id: int
    name: str
    publish_type: str


@dataclass(slots=True)
class PlayRequest:
    stream_id: int
    name: str
    start: float
    duration: float
    reset: bool


@dataclass(slots=True)
class PauseRequest:
    paused: bool
    position: float


@dataclass(slots=True)
class StreamClosed:
    stream_id: int
    command: str


@dataclass(slots=True)
class Metadata:
    """onMetaData from a publisher, stripped of any `@setDataFrame` wrapper."""

    timestamp: int
    values: Any


@dataclass(slots=True)
class CommandResult:
    """The answer (`_result` or `_error`) to a command this session sent."""

    command: str
    ok: bool
    values: list[Any]


@dataclass(slots=True)
class Status:
    """An `onStatus` from the peer: Play.Start, Publish.Start, an RTMP 302, ..."""

    stream_id: int
    info: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.info.get("code", ""))

    @property
    def level(self) -> str:
        return str(self.info.get("level", ""))


@dataclass(slots=True)
class HandshakeDone:
    pass


Event = (
    ConnectRequest
    | PublishRequest
    | PlayRequest
    | PauseRequest
    | StreamClosed
    | Metadata
    | CommandResult
    | Status
    | HandshakeDone
    | Message
)


def status_info(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info


def encode_status(info: dict[str, Any], chunk_size: int) -> bytes:
    """An onStatus on the media stream; shared bytes, e.g. UnpublishNotify to every player."""
    payload = amf0.encode("onStatus", 0.0, None, info)
    return _encode_command_chunk(payload, STREAM_ID, chunk_size)


def _encode_command_chunk(payload: bytes, stream_id: int, chunk_size: int) -> bytes:
    from tidecast.rtmp.chunk import encode_message

    return encode_message(C.CSID_COMMAND, C.COMMAND_AMF0, 0, stream_id, payload, chunk_size)


# ---------------------------------------------------------------- the session


@dataclass(slots=True)
class _Peer:
    window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE
    acked: int = 0
    next_transaction: int = 2
    pending: dict[int, str] = field(default_factory=dict)


class RtmpSession:
    """One RTMP connection's protocol state, server or client side."""

    def __init__(self, client: bool = False, max_message_size: int = 16 * 1024 * 1024) -> None:
        self.client = client
        self._handshake: ServerHandshake | ClientHandshake
        self._handshake = ClientHandshake() if client else ServerHandshake()
        self._decoder = ChunkDecoder(max_message_size=max_message_size)
        self._encoder = ChunkEncoder()
        self._out: list[bytes] = []
        self._peer = _Peer()
        self.handshake_done = False
        self.fcpublish = False
        self.connect_request: ConnectRequest | None = None
        self.object_encoding = 0.0
        if client:
            assert isinstance(self._handshake, ClientHandshake)
            self._out.append(self._handshake.start())

    # ------------------------------------------------------------ I/O edges

    @property
    def bytes_received(self) -> int:
        return self._decoder.bytes_received

    @property
    def out_chunk_size(self) -> int:
        return self._encoder.chunk_size

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if not self.handshake_done:
            reply = self._handshake.feed(data)
            if reply:
                self._out.append(reply)
            if not self._handshake.done:
                return events
            self.handshake_done = True
            events.append(HandshakeDone())
            data = self._handshake.leftover
            if not data:
                return events
        for msg in self._decoder.feed(data):
            self._dispatch(msg, events)
        self._maybe_acknowledge()
        return events

    def _maybe_acknowledge(self) -> None:
        peer = self._peer
        received = self._decoder.bytes_received
        if received - peer.acked >= peer.window_ack_size:
            peer.acked = received
            self._out.append(self._encoder.acknowledgement(received & 0xFFFFFFFF))

    # ------------------------------------------------------------ inbound

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        if t == C.AUDIO or t == C.VIDEO:
            events.append(msg)
        elif t == C.COMMAND_AMF0 or t == C.COMMAND_AMF3:
            payload = msg.payload[1:] if t == C.COMMAND_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._on_command(msg.stream_id, amf0.decode_all(payload), events)
        elif t == C.DATA_AMF0 or t == C.DATA_AMF3:
            payload = msg.payload[1:] if t == C.DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._on_data(msg, payload, events)
        elif t == C.AGGREGATE:
            for sub in split_aggregate(msg):
                self._dispatch(sub, events)
        elif t == C.USER_CONTROL:
            self._on_user_control(msg.payload)
        elif t == C.WINDOW_ACK_SIZE:
            if len(msg.payload) < 4:
                raise SessionError("Window Acknowledgement Size message shorter than 4 bytes")
            size = _U32.unpack_from(msg.payload)[0]
            self._peer.window_ack_size = max(size, 4096)
        # SET_CHUNK_SIZE and ABORT were applied by the decoder; ACK and
        # SET_PEER_BANDWIDTH need no action from a live server.

    def _on_user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise SessionError("User Control message shorter than 2 bytes")
        event = _U16.unpack_from(payload)[0]
        if event == C.UC_PING_REQUEST and len(payload) >= 6:
            self._out.append(self._encoder.user_control(C.UC_PING_RESPONSE, _U32.unpack_from(payload, 2)[0]))

    def _on_data(self, msg: Message, payload: bytes, events: list[Event]) -> None:
        values = amf0.decode_all(payload)
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if values and values[0] == "onMetaData":
            events.append(Metadata(msg.timestamp, values[1] if len(values) > 1 else {}))
        else:
            events.append(msg)

    def _on_command(self, stream_id: int, values: list[Any], events: list[Event]) -> None:
        if not values or not isinstance(values[0], str):
            raise SessionError("command message does not start with a command name")
        name = values[0]
        tid = values[1] if len(values) > 1 and isinstance(values[1], (int, float)) else 0.0
        args = values[3:]
        if name in ("_result", "_error"):
            command = self._peer.pending.pop(int(tid), "")
            events.append(CommandResult(command, name == "_result", values[2:]))
        elif name == "onStatus":
            info = args[0] if args and isinstance(args[0], dict) else {}
            events.append(Status(stream_id, info))
        elif self.client:
            # Servers send onBWDone, |RtmpSampleAccess and the like; nothing to do.
            return
        elif name == "connect":
            cmd = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            enc = cmd.get("objectEncoding")
            self.object_encoding = float(enc) if isinstance(enc, (int, float)) else 0.0
            self.connect_request = ConnectRequest(tid, cmd, args)
            events.append(self.connect_request)
        elif name == "createStream":
            self._result(tid, None, float(STREAM_ID))
        elif name in ("releaseStream", "FCPublish"):
            if name == "FCPublish":
                self.fcpublish = True
            self._result(tid, None, None)
        elif name == "publish":
            stream_name = _str_arg(args, 0)
            kind = _str_arg(args, 1) or "live"
            events.append(PublishRequest(stream_id or STREAM_ID, stream_name, kind))
        elif name == "play":
            start = _num_arg(args, 1, -2.0)
            duration = _num_arg(args, 2, -1.0)
            reset = bool(args[3]) if len(args) > 3 else True
            events.append(PlayRequest(stream_id or STREAM_ID, _str_arg(args, 0), start, duration, reset))
        elif name == "pause":
            paused = bool(args[0]) if args else True
            events.append(PauseRequest(paused, _num_arg(args, 1, 0.0)))
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            events.append(StreamClosed(stream_id, name))
        elif name == "getStreamLength":
            self._result(tid, None, 0.0)
        elif tid:
            # Unknown calls that expect an answer (e.g. _checkbw) get an empty
            # one, so clients waiting on it do not stall.
            self._result(tid, None, None)

    # ------------------------------------------------------------ outbound: server role

    def _command(self, name: str, tid: float, *values: Any, stream_id: int = 0) -> None:
        payload = amf0.encode(name, tid, *values)
        self._out.append(self._encoder.encode(C.CSID_COMMAND, C.COMMAND_AMF0, 0, stream_id, payload))

    def _result(self, tid: float, *values: Any) -> None:
        self._command("_result", tid, *values)

    def _status(self, info: dict[str, Any], stream_id: int = STREAM_ID) -> None:
        self._command("onStatus", 0.0, None, info, stream_id=stream_id)

    def accept_connect(self, chunk_size: int, server_data: dict[str, Any]) -> None:
        """Answer `connect` the way SRS does, then switch to the server's chunk size."""
        req = self.connect_request
        if req is None:
            raise SessionError("accept_connect without a connect request")
        enc = self._encoder
        self._out.append(enc.window_ack_size(DEFAULT_WINDOW_ACK_SIZE))
        self._out.append(enc.set_peer_bandwidth(DEFAULT_WINDOW_ACK_SIZE, 2))
        self._out.append(enc.set_chunk_size(chunk_size))
        props = {"fmsVer": "FMS/3,5,3,888", "capabilities": 127.0, "mode": 1.0}
        info = status_info(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded",
            objectEncoding=self.object_encoding,
            data=amf0.EcmaArray(server_data),
        )
        self._result(req.transaction_id, props, info)
        self._command("onBWDone", 0.0, None)

    def reject_connect(self, description: str) -> None:
        tid = self.connect_request.transaction_id if self.connect_request else 1.0
        info = status_info("error", "NetConnection.Connect.Rejected", description)
        self._command("_error", tid, None, info)

    def accept_publish(self, stream_name: str) -> None:
        if self.fcpublish:
            self._command(
                "onFCPublish",
                0.0,
                None,
                status_info("status", "NetStream.Publish.Start", "Started publishing stream."),
            )
        self._status(
            status_info("status", "NetStream.Publish.Start", "Started publishing stream.", details=stream_name)
        )

    def reject_publish(self, code: str, description: str) -> None:
        self._status(status_info("error", code, description))

    def accept_play(self, stream_name: str) -> None:
        enc = self._encoder
        self._out.append(enc.user_control(C.UC_STREAM_BEGIN, STREAM_ID))
        self._status(
            status_info("status", "NetStream.Play.Reset", "Playing and resetting stream.", details=stream_name)
        )
        self._status(status_info("status", "NetStream.Play.Start", "Started playing stream.", details=stream_name))
        access = amf0.encode("|RtmpSampleAccess", True, True)
        self._out.append(enc.encode(C.CSID_DATA, C.DATA_AMF0, 0, STREAM_ID, access))
        self._status(status_info("status", "NetStream.Data.Start", "Started playing stream."))

    def reject_play(self, code: str, description: str) -> None:
        self._status(status_info("error", code, description))

    def send_status(self, info: dict[str, Any]) -> None:
        self._status(info)

    def pause_notify(self, paused: bool) -> None:
        code = "NetStream.Pause.Notify" if paused else "NetStream.Unpause.Notify"
        self._status(status_info("status", code, "Paused stream." if paused else "Unpaused stream."))

    def stream_eof(self) -> None:
        self._out.append(self._encoder.user_control(C.UC_STREAM_EOF, STREAM_ID))

    # ------------------------------------------------------------ outbound: client role

    def _call(self, name: str, *values: Any, stream_id: int = 0) -> None:
        peer = self._peer
        tid = peer.next_transaction
        peer.next_transaction += 1
        peer.pending[tid] = name
        self._command(name, float(tid), *values, stream_id=stream_id)

    def connect(self, app: str, tc_url: str, **extra: Any) -> None:
        cmd: dict[str, Any] = {
            "app": app,
            "flashVer": "LNX 9,0,124,2",
            "tcUrl": tc_url,
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 4071.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        }
        cmd.update(extra)
        self._peer.pending[1] = "connect"
        self._command("connect", 1.0, cmd)

    def set_chunk_size(self, size: int) -> None:
        self._out.append(self._encoder.set_chunk_size(size))

    def create_stream(self) -> None:
        self._call("createStream", None)

    def play(self, stream_name: str, stream_id: int = STREAM_ID) -> None:
        self._command("play", 0.0, None, stream_name, -2.0, stream_id=stream_id)
        self._out.append(self._encoder.user_control(C.UC_SET_BUFFER_LENGTH, stream_id, 3000))

    def publish(self, stream_name: str, stream_id: int = STREAM_ID) -> None:
        self._call("releaseStream", None, stream_name)
        self._call("FCPublish", None, stream_name)
        self._command("publish", 0.0, None, stream_name, "live", stream_id=stream_id)

    def send_media(self, type_id: int, timestamp: int, payload: bytes, stream_id: int = STREAM_ID) -> bytes:
        """Serialize one media message for an upstream publish (client role)."""
        csid = C.CSID_AUDIO if type_id == C.AUDIO else C.CSID_VIDEO if type_id == C.VIDEO else C.CSID_DATA
        return self._encoder.encode(csid, type_id, timestamp, stream_id, payload)

    def send_metadata(self, values: Any, stream_id: int = STREAM_ID) -> bytes:
        payload = amf0.encode("@setDataFrame", "onMetaData", values)
        return self._encoder.encode(C.CSID_DATA, C.DATA_AMF0, 0, stream_id, payload)


def _str_arg(args: list[Any], i: int) -> str:
    return args[i] if len(args) > i and isinstance(args[i], str) else ""


def _num_arg(args: list[Any], i: int, default: float) -> float:
    return float(args[i]) if len(args) > i and isinstance(args[i], (int, float)) else default


_AGG_HEADER = struct.Struct(">BBHBBHB")  # type, size(3), ts(3), ts_ext, stream id(3)


def split_aggregate(msg: Message) -> list[Message]:
    """Unpack an Aggregate message (FLV tags back to back) into its sub-messages.

    Sub-message timestamps are rebased so the first one equals the aggregate's
    own timestamp, as the RTMP spec asks.
    """
    data = msg.payload
    out: list[Message] = []
    pos = 0
    base: int | None = None
    while pos + 11 <= len(data):
        tag_type = data[pos]
        size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        ts = (data[pos + 7] << 24) | (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]
        end = pos + 11 + size
        if end + 4 > len(data):
            raise SessionError(f"aggregate message: sub-tag of {size} bytes overruns the message")
        if base is None:
            base = ts
        out.append(Message(tag_type, msg.timestamp + ts - base, msg.stream_id, data[pos + 11 : end]))
        pos = end + 4
    return out
