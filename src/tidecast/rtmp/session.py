"""The RTMP command session: a sans-I/O state machine for both roles.

Bytes go in with `receive_data`, events come out, and whatever the session has
to say back is collected for `data_to_send`. The same class speaks as a server
(accepting publishers and players) and as a client (an edge pulling from or
pushing to an origin). Media fan-out does not pass through here: the server
writes pre-serialized media chunks straight to the socket, which is why all
output media uses the fixed message stream id `STREAM_ID` and a chunk size the
caller chose when accepting the connection.

The protocol's order is an explicit `State` (see `RtmpSession.state`), as in
h11: the peer breaking it (publish before connect, a second connect, a second
publish or play) raises `ProtocolError`; this side breaking it (accepting a
publish nobody asked for) raises `LocalProtocolError`, a bug in the caller.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from tidecast.codec import amf0
from tidecast.codec.amf_common import MAX_VALUES
from tidecast.errors import LocalProtocolError, ProtocolError
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import ChunkDecoder, ChunkEncoder, Message, encode_message
from tidecast.rtmp.handshake import ClientHandshake, ServerHandshake

STREAM_ID: Final = 1
DEFAULT_WINDOW_ACK_SIZE: Final = 2_500_000
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")


class SessionError(ProtocolError):
    """A well-formed message that breaks the RTMP command protocol."""


class State(enum.Enum):
    """Where one RTMP connection is in the protocol, from this side's point of view."""

    HANDSHAKE = "handshake"  # C0/C1/C2 and S0/S1/S2 still being exchanged
    CONNECTING = "connecting"  # server: waiting for the peer's connect; client: connect() not sent yet
    CONNECTED = "connected"  # connect received (its answer may still be pending) or sent
    PUBLISHING = "publishing"  # a publish received (answer may be pending) or sent
    PLAYING = "playing"  # a play received (answer may be pending) or sent
    CLOSED = "closed"  # refused or broken: input is ignored, nothing more is said


# Fields of connect's command object that the server uses as text (names, URLs,
# hook arguments); anything else in them is refused rather than stringified.
CONNECT_STRING_FIELDS: Final = ("app", "tcUrl", "pageUrl", "swfUrl", "flashVer")
# Values one command may decode to (references counted as what they refer
# to). A connect has a dozen; this is what an unauthenticated peer can make
# each command message cost.
MAX_COMMAND_VALUES: Final = 10_000
_STARTED: Final = (State.CONNECTED, State.PUBLISHING, State.PLAYING)


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

    def __init__(self, client: bool = False, max_message_size: int = C.MAX_MESSAGE_SIZE) -> None:
        self.client = client
        # Dropped once done: a long play should not keep it (a full garbage collection walks every
        # connection's objects).
        self._handshake: ServerHandshake | ClientHandshake | None
        self._handshake = ClientHandshake() if client else ServerHandshake()
        self._max_message_size = max_message_size
        if client:
            self._decoder = ChunkDecoder(max_message_size=max_message_size)
        else:
            self._decoder = ChunkDecoder(
                max_message_size=min(max_message_size, C.PRE_CONNECT_MAX_MESSAGE_SIZE),
                max_unfinished_bytes=C.PRE_CONNECT_MAX_UNFINISHED_BYTES,
            )
        self._encoder = ChunkEncoder()
        self._out: list[bytes] = []
        self._peer = _Peer()
        self._ack_at = self._peer.window_ack_size  # bytes received at which the next acknowledgement is due
        self._state = State.HANDSHAKE
        # Server role: the peer's requests this side has yet to answer
        # ("connect", "publish", "play"), and those it ever made.
        self._awaiting: set[str] = set()
        self._requested: set[str] = set()
        self.fcpublish = False
        self.connect_request: ConnectRequest | None = None
        self.object_encoding = 0.0
        # At most this many events per receive_data call (0: all); `backlogged` then says more are
        # waiting, for `receive_data(b"")` on a later turn. The rest of an Aggregate being split and the
        # messages decoded after it wait here; undecoded bytes wait in the chunk decoder.
        self.max_events = 0
        self._waiting: tuple[_Aggregate | None, list[Message]] | None = None
        # A publisher's audio and video go straight here, (type id, timestamp, payload), instead of
        # coming out as events: the adapter sets it once the publish is accepted. Messages that follow
        # another event in the same read still come out as events, in order.
        self.media_sink: Callable[[int, int, bytes], object] | None = None
        if client:
            assert isinstance(self._handshake, ClientHandshake)
            self._out.append(self._handshake.start())

    # ------------------------------------------------------------ state

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshake_done(self) -> bool:
        return self._state is not State.HANDSHAKE

    def _local(self, action: str, *allowed: State, awaiting: str = "", requested: str = "") -> bool:
        """Check that this side may `action` now; False means the session is closed: say nothing.

        Raises LocalProtocolError for a call out of the protocol's order.
        """
        if self._state is State.CLOSED:
            return False
        if allowed and self._state not in allowed:
            raise LocalProtocolError(f"RTMP session: {action} is not allowed in state {self._state.name}")
        if awaiting and awaiting not in self._awaiting:
            raise LocalProtocolError(f"RTMP session: {action} without a pending {awaiting} request from the peer")
        if requested and requested not in self._requested:
            raise LocalProtocolError(f"RTMP session: {action}, but the peer never sent {requested}")
        return True

    # ------------------------------------------------------------ I/O edges

    @property
    def bytes_received(self) -> int:
        return self._decoder.bytes_received

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    @property
    def media_sunk(self) -> int:
        """Messages handed to `media_sink` so far."""
        return self._decoder.sunk

    @property
    def backlogged(self) -> bool:
        """Input is waiting that `max_events` held back: call `receive_data(b"")` again (next turn)."""
        return self._waiting is not None or self._decoder.held_back

    def receive_data(self, data: bytes) -> list[Event]:
        state = self._state
        if state is State.HANDSHAKE or state is State.CLOSED:
            return self._receive_early(data)
        events: list[Event] = []
        limit = self.max_events
        decoder = self._decoder
        decoder.media_sink = self.media_sink
        try:
            if self._waiting is not None:
                # The returned flag, not `self._waiting` re-read: the check above narrowed its type, and
                # the compiled build trusts that narrowing.
                still_waiting = self._resume(events, limit)
                if events:
                    decoder.media_sink = None  # the adapter has yet to see these
                room = 0 if still_waiting else max(1, limit - len(events))
                messages = self._decoder.feed(data, room)
            else:
                messages = self._decoder.feed(data, limit or None)
            if messages:
                self._handle(messages, events, limit)
        except ProtocolError:
            self._state = State.CLOSED
            raise
        if self._decoder.bytes_received >= self._ack_at:
            self._acknowledge()
        return events

    def _handle(self, messages: list[Message], events: list[Event], limit: int) -> None:
        # Media is nearly every message: let it through without a call.
        media = self.client or self._state is State.PUBLISHING
        for i, msg in enumerate(messages):
            t = msg.type_id
            if (t == 9 or t == 8) and media:
                events.append(msg)
            elif t == C.AGGREGATE:
                if media:
                    aggregate = _Aggregate(msg)
                    aggregate.split(self, events, limit)
                    if not aggregate.done:
                        self._waiting = (aggregate, messages[i + 1 :])
                        return
            else:
                self._dispatch(msg, events)
                media = self.client or self._state is State.PUBLISHING

    def _resume(self, events: list[Event], limit: int) -> bool:
        """Go on with the aggregate (and the messages after it) a turn's budget interrupted; True when
        it is interrupted again."""
        assert self._waiting is not None
        aggregate, rest = self._waiting
        self._waiting = None
        if aggregate is not None:
            aggregate.split(self, events, limit)
            if not aggregate.done:
                self._waiting = (aggregate, rest)
                return True
        self._handle(rest, events, limit)
        return self._aggregate_waiting()

    def _aggregate_waiting(self) -> bool:
        # A call, so the `None` assigned above does not narrow what _handle may have set since.
        return self._waiting is not None

    def _receive_early(self, data: bytes) -> list[Event]:
        """The handshake (and what follows it in the same read), or input after the session closed."""
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events  # refused already; the caller is closing the connection
        handshake = self._handshake
        assert handshake is not None  # kept until the state leaves HANDSHAKE
        try:
            reply = handshake.feed(data)
        except ProtocolError:
            self._state = State.CLOSED
            raise
        if reply:
            self._out.append(reply)
        if not handshake.done:
            return events
        self._state = State.CONNECTING
        self._handshake = None
        events.append(HandshakeDone())
        data = handshake.leftover
        if data:
            events += self.receive_data(data)
        return events

    def _acknowledge(self) -> None:
        peer = self._peer
        received = self._decoder.bytes_received
        peer.acked = received
        self._ack_at = received + peer.window_ack_size
        self._out.append(self._encoder.acknowledgement(received & 0xFFFFFFFF))

    # ------------------------------------------------------------ inbound

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        if t == C.AUDIO or t == C.VIDEO:
            # A server takes media only from a publisher; anything else is
            # dropped here, before it costs more.
            if self.client or self._state is State.PUBLISHING:
                events.append(msg)
        elif t == C.COMMAND_AMF0 or t == C.COMMAND_AMF3:
            payload = msg.payload[1:] if t == C.COMMAND_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            budget = amf0.Budget(len(payload), max_values=MAX_COMMAND_VALUES)
            self._on_command(msg.stream_id, amf0.decode_all(payload, budget), events)
        elif t == C.DATA_AMF0 or t == C.DATA_AMF3:
            if self.client or self._state is State.PUBLISHING:
                payload = msg.payload[1:] if t == C.DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
                self._on_data(msg, payload, events)
        elif t == C.AGGREGATE:
            if self.client or self._state is State.PUBLISHING:
                _Aggregate(msg).split(self, events, 0)
        elif t == C.USER_CONTROL:
            self._on_user_control(msg.payload)
        elif t == C.WINDOW_ACK_SIZE:
            if len(msg.payload) < 4:
                raise SessionError("Window Acknowledgement Size message shorter than 4 bytes")
            size = _U32.unpack_from(msg.payload)[0]
            self._peer.window_ack_size = max(size, 4096)
            self._ack_at = self._peer.acked + self._peer.window_ack_size
        # SET_CHUNK_SIZE and ABORT were applied by the decoder; ACK and
        # SET_PEER_BANDWIDTH need no action from a live server.

    def _on_user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise SessionError("User Control message shorter than 2 bytes")
        event = _U16.unpack_from(payload)[0]
        if event == C.UC_PING_REQUEST and len(payload) >= 6:
            self._out.append(self._encoder.user_control(C.UC_PING_RESPONSE, _U32.unpack_from(payload, 2)[0]))

    def _on_data(self, msg: Message, payload: bytes, events: list[Event]) -> None:
        # A recorded file's onMetaData may index every keyframe (two numbers,
        # 18 bytes each): its budget grows with its size, commands' does not.
        budget = amf0.Budget(len(payload), max_values=max(MAX_VALUES, len(payload) // 8))
        values = amf0.decode_all(payload, budget)
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if values and values[0] == "onMetaData":
            # AMF3 byte arrays have no AMF0 form, and metadata is re-encoded
            # in AMF0 for every player: they are left out.
            events.append(Metadata(msg.timestamp, amf0.without_bytes(values[1]) if len(values) > 1 else {}))
        else:
            events.append(msg)

    def _on_command(self, stream_id: int, values: list[Any], events: list[Event]) -> None:
        if not values or not isinstance(values[0], str):
            raise SessionError("command message does not start with a command name")
        name = values[0]
        tid = values[1] if len(values) > 1 and isinstance(values[1], (int, float)) else 0.0
        if not math.isfinite(tid):
            raise SessionError(f"command {name[:64]!r}: transaction id {tid} is not a finite number")
        args = values[3:]
        if name in ("_result", "_error"):
            command = self._peer.pending.pop(int(tid), "")
            events.append(CommandResult(command, name == "_result", values[2:]))
            return
        if name == "onStatus":
            info = args[0] if args and isinstance(args[0], dict) else {}
            events.append(Status(stream_id, info))
            return
        if self.client:
            # Servers send onBWDone, |RtmpSampleAccess and the like; nothing to do.
            return
        state = self._state
        if name == "connect":
            if state is not State.CONNECTING:
                raise SessionError("a second connect on one connection; an RTMP connection connects once")
            self._on_connect(tid, values, args, events)
            return
        if state is State.CONNECTING:
            raise SessionError(f"command {name[:64]!r} before connect; a client must connect first")
        if name == "createStream":
            self._result(tid, None, float(STREAM_ID))
        elif name in ("releaseStream", "FCPublish"):
            if name == "FCPublish":
                self.fcpublish = True
            self._result(tid, None, None)
        elif name == "publish" or name == "play":
            sid = stream_id or STREAM_ID
            if state is not State.CONNECTED:
                raise SessionError(
                    f"{name} on stream id {sid} after a {'publish' if state is State.PUBLISHING else 'play'} "
                    "on this connection; one connection publishes or plays one stream"
                )
            stream_name = _str_arg(args, 0, name, "stream name")
            self._awaiting.add(name)
            self._requested.add(name)
            if name == "publish":
                self._state = State.PUBLISHING
                kind = _str_arg(args, 1, name, "publishing type") or "live"
                events.append(PublishRequest(sid, stream_name, kind))
            else:
                self._state = State.PLAYING
                start = _num_arg(args, 1, -2.0)
                duration = _num_arg(args, 2, -1.0)
                reset = bool(args[3]) if len(args) > 3 else True
                events.append(PlayRequest(sid, stream_name, start, duration, reset))
        elif name == "pause":
            if state is State.PLAYING:
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

    def _on_connect(self, tid: float, values: list[Any], args: list[Any], events: list[Event]) -> None:
        cmd = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
        for key in CONNECT_STRING_FIELDS:
            item = cmd.get(key)
            if item is not None and not isinstance(item, str):
                raise SessionError(f"connect: {key} is {_kind(item)}, not a string; refusing the connection")
        enc = cmd.get("objectEncoding")
        self.object_encoding = float(enc) if isinstance(enc, (int, float)) and math.isfinite(enc) else 0.0
        self.connect_request = ConnectRequest(tid, cmd, args)
        self._state = State.CONNECTED
        # Connected: media may follow, so the full per-message and per-connection budgets apply.
        self._decoder.max_message_size = self._max_message_size
        self._decoder.max_unfinished_bytes = max(C.MAX_UNFINISHED_BYTES, self._max_message_size + 64)
        self._awaiting.add("connect")
        self._requested.add("connect")
        events.append(self.connect_request)

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
        if not self._local("accept_connect", awaiting="connect"):
            return
        req = self.connect_request
        assert req is not None  # set with the pending connect
        self._awaiting.discard("connect")
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
        if not self._local("reject_connect", awaiting="connect"):
            return
        req = self.connect_request
        assert req is not None
        self._awaiting.discard("connect")
        info = status_info("error", "NetConnection.Connect.Rejected", description)
        self._command("_error", req.transaction_id, None, info)
        self._state = State.CLOSED

    def accept_publish(self, stream_name: str) -> None:
        if not self._local("accept_publish", awaiting="publish"):
            return
        self._awaiting.discard("publish")
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
        """Refuse a publish, pending or (when refused further on) already accepted; the session closes."""
        if not self._local("reject_publish", requested="publish"):
            return
        self._awaiting.discard("publish")
        self._status(status_info("error", code, description))
        self._state = State.CLOSED

    def accept_play(self, stream_name: str) -> None:
        if not self._local("accept_play", awaiting="play"):
            return
        self._awaiting.discard("play")
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
        if not self._local("reject_play", requested="play"):
            return
        self._awaiting.discard("play")
        self._status(status_info("error", code, description))
        self._state = State.CLOSED

    def send_status(self, info: dict[str, Any]) -> None:
        if self._local("send_status", *_STARTED):
            self._status(info)

    def pause_notify(self, paused: bool) -> None:
        if not self._local("pause_notify", State.PLAYING):
            return
        code = "NetStream.Pause.Notify" if paused else "NetStream.Unpause.Notify"
        self._status(status_info("status", code, "Paused stream." if paused else "Unpaused stream."))

    # ------------------------------------------------------------ outbound: client role

    def _call(self, name: str, *values: Any, stream_id: int = 0) -> None:
        peer = self._peer
        tid = peer.next_transaction
        peer.next_transaction += 1
        peer.pending[tid] = name
        self._command(name, float(tid), *values, stream_id=stream_id)

    def _client_local(self, action: str, *allowed: State) -> bool:
        if not self.client:
            raise LocalProtocolError(f"RTMP session: {action} is a client-role call on a server-role session")
        return self._local(action, *allowed)

    def connect(self, app: str, tc_url: str, **extra: Any) -> None:
        if self._state is State.HANDSHAKE:
            raise LocalProtocolError("RTMP session: connect() before the handshake finished")
        if not self._client_local("connect", State.CONNECTING):
            return
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
        self._state = State.CONNECTED

    def set_chunk_size(self, size: int) -> None:
        # Before the handshake ends it would land in the middle of C2.
        if self._client_local("set_chunk_size", State.CONNECTING, *_STARTED):
            self._out.append(self._encoder.set_chunk_size(size))

    def create_stream(self) -> None:
        if self._client_local("create_stream", *_STARTED):
            self._call("createStream", None)

    def play(self, stream_name: str, stream_id: int = STREAM_ID) -> None:
        if not self._client_local("play", State.CONNECTED):
            return
        self._command("play", 0.0, None, stream_name, -2.0, stream_id=stream_id)
        self._out.append(self._encoder.user_control(C.UC_SET_BUFFER_LENGTH, stream_id, 3000))
        self._state = State.PLAYING

    def publish(self, stream_name: str, stream_id: int = STREAM_ID) -> None:
        if not self._client_local("publish", State.CONNECTED):
            return
        self._call("releaseStream", None, stream_name)
        self._call("FCPublish", None, stream_name)
        self._command("publish", 0.0, None, stream_name, "live", stream_id=stream_id)
        self._state = State.PUBLISHING

    def send_media(self, type_id: int, timestamp: int, payload: bytes, stream_id: int = STREAM_ID) -> bytes:
        """Serialize one media message for an upstream publish (client role)."""
        csid = C.CSID_AUDIO if type_id == C.AUDIO else C.CSID_VIDEO if type_id == C.VIDEO else C.CSID_DATA
        return self._encoder.encode(csid, type_id, timestamp, stream_id, payload)

    def send_metadata(self, values: Any, stream_id: int = STREAM_ID) -> bytes:
        payload = amf0.encode("@setDataFrame", "onMetaData", values)
        return self._encoder.encode(C.CSID_DATA, C.DATA_AMF0, 0, stream_id, payload)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _str_arg(args: list[Any], i: int, command: str, what: str) -> str:
    """A text argument: absent or null is "", anything but a string is the peer's error."""
    if len(args) <= i or args[i] is None:
        return ""
    value = args[i]
    if not isinstance(value, str):
        raise SessionError(f"{command}: the {what} (argument {i + 1}) is {_kind(value)}, not a string")
    return value


def _num_arg(args: list[Any], i: int, default: float) -> float:
    return float(args[i]) if len(args) > i and isinstance(args[i], (int, float)) else default


_AGG_HEADER: Final = struct.Struct(">BBHBBHB")  # type, size(3), ts(3), ts_ext, stream id(3)


class _Aggregate:
    """An Aggregate message split a slice at a time: its media and data sub-messages are dispatched
    in order, at most up to the caller's event limit per call, so a message of tiny tags (8 MiB is
    half a million of them) is handed on over several turns and never held as a list."""

    __slots__ = ("base", "msg", "pos")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.pos = 0
        self.base: int | None = None

    @property
    def done(self) -> bool:
        return self.pos + 11 > len(self.msg.payload)

    def next(self) -> Message:
        """The next sub-message (any type); the caller checks `done` first."""
        msg = self.msg
        data = msg.payload
        pos = self.pos
        tag_type = data[pos]
        size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        ts = (data[pos + 7] << 24) | (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]
        stop = pos + 11 + size
        if stop + 4 > len(data):
            raise SessionError(f"aggregate message: sub-tag of {size} bytes overruns the message")
        if tag_type == C.AGGREGATE:
            raise SessionError("aggregate message inside an aggregate message; nesting is not accepted")
        if self.base is None:
            self.base = ts
        self.pos = stop + 4
        return Message(tag_type, (msg.timestamp + ts - self.base) & 0xFFFFFFFF, msg.stream_id, data[pos + 11 : stop])

    def split(self, session: RtmpSession, events: list[Event], limit: int) -> None:
        # Media and data only, as SRS: a command or control message has no business inside an aggregate.
        while not self.done and (not limit or len(events) < limit):
            sub = self.next()
            if sub.type_id in (C.AUDIO, C.VIDEO, C.DATA_AMF0, C.DATA_AMF3):
                session._dispatch(sub, events)


def split_aggregate(msg: Message) -> list[Message]:
    """Unpack an Aggregate message (FLV tags back to back) into its sub-messages.

    Sub-message timestamps are rebased so the first one equals the aggregate's
    own timestamp, as the RTMP spec asks. One pass, each sub-payload copied
    once; an aggregate inside an aggregate is refused (no encoder makes one,
    and unpacking them level by level copied the message once per level).
    """
    aggregate = _Aggregate(msg)
    out: list[Message] = []
    while not aggregate.done:
        out.append(aggregate.next())
    return out
