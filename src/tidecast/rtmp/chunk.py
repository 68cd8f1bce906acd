"""The RTMP chunk stream: messages split into interleaved chunks, both ways.

`ChunkDecoder` turns received bytes into whole messages; it understands all
four chunk header types, extended timestamps, and applies Set Chunk Size and
Abort itself because they change how the very next bytes are framed.
`encode_message` is the send side used on the fan-out hot path: one call per
media message, whose bytes are then shared by every RTMP player.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from tidecast.errors import ProtocolError
from tidecast.rtmp import constants as C

_U32: Final = struct.Struct(">I")
_U32LE: Final = struct.Struct("<I")
_HEAD: Final = struct.Struct(">II")
_TS_EXTENDED: Final = C.EXTENDED_TIMESTAMP
_HEADER_SIZES: Final = (11, 7, 3, 0)
_FAST_HEADER: Final = (12, 8, 4)  # basic header byte + message header, by type
_NO_LIMIT: Final = 1 << 62
_MARKERS: Final = tuple(bytes((0xC0 | csid,)) for csid in range(64))  # the one-byte type-3 header of chunk streams 2-63
_JOIN_MIN: Final = 16 * 1024  # a read at least this large is joined to a leftover rather than appended to it


class ChunkError(ProtocolError):
    """Chunk framing that cannot be followed."""


class Message:
    """One RTMP message, reassembled from its chunks."""

    __slots__ = ("csid", "payload", "stream_id", "timestamp", "type_id")

    def __init__(self, type_id: int, timestamp: int, stream_id: int, payload: bytes, csid: int = 0) -> None:
        self.type_id = type_id
        self.timestamp = timestamp
        self.stream_id = stream_id
        self.payload = payload
        self.csid = csid

    def __repr__(self) -> str:
        return (
            f"Message(type={self.type_id}, ts={self.timestamp}, stream={self.stream_id}, "
            f"csid={self.csid}, {len(self.payload)} bytes)"
        )


class _ChunkStream:
    __slots__ = ("buf", "delta", "extended", "length", "received", "stream_id", "timestamp", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = -1  # no header seen yet
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        # The unfinished message's bytes so far: one growing buffer, not an
        # object per chunk (2-byte chunks once cost 20x their size in headers).
        self.buf = bytearray()
        self.received = 0


class ChunkDecoder:
    """Receive side: bytes in, complete messages out.

    What a peer can make it hold is bounded: a message is at most
    `max_message_size`, unfinished messages and the receive buffer together at
    most `max_unfinished_bytes`, chunk streams at most `C.MAX_CHUNK_STREAMS`,
    and chunks are at least `C.MIN_PEER_CHUNK_SIZE` bytes.
    """

    def __init__(
        self,
        max_message_size: int = C.MAX_MESSAGE_SIZE,
        max_unfinished_bytes: int = C.MAX_UNFINISHED_BYTES,
    ) -> None:
        self.chunk_size = C.DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        # Never less than one maximal message and its chunk headers.
        self.max_unfinished_bytes = max(max_unfinished_bytes, max_message_size + 64)
        self.bytes_received = 0
        self._buf = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        # Chunk streams 2-63 by the basic header byte of a type 0, 1 or 2 chunk: the fast path's lookup.
        self._by_basic: dict[int, _ChunkStream] = {}
        self._unfinished = 0  # bytes held in _ChunkStream.buf, all streams together
        self._want = 0  # bytes the receive buffer needs before its first chunk is whole (0: unknown)
        # The last feed stopped at its `max_messages`: the receive buffer may hold more whole messages.
        self.held_back = False
        # Where audio and video go without becoming Messages (a publisher's stream): set by the session,
        # used only while nothing else has come out of the current feed, so the order of all messages holds.
        self.media_sink: Callable[[int, int, bytes], object] | None = None
        self.sunk = 0  # messages handed to media_sink, ever

    @property
    def unfinished_bytes(self) -> int:
        """Bytes held for messages not yet complete, the receive buffer included."""
        return self._unfinished + len(self._buf)

    def feed(self, data: bytes | bytearray, max_messages: int | None = None) -> list[Message]:
        """The messages `data` completes, in order; at most `max_messages` (0: none, only buffer `data`).

        What is left once `max_messages` are out stays in the receive buffer (`held_back` says so) and
        comes out of later calls, `feed(b"")` included: a read of a hundred thousand tiny messages is
        handed on a slice at a time.
        """
        self.bytes_received += len(data)
        out: list[Message] = []
        buf = self._buf
        self.held_back = False
        if max_messages is not None and max_messages <= 0:
            buf += data
            self.held_back = bool(buf)
            if self._unfinished + len(buf) > self.max_unfinished_bytes:
                self._over_budget()
            return out
        src: bytes | bytearray = data
        if buf:
            if len(buf) + len(data) < self._want:
                # A large chunk arriving in small reads: nothing to parse until
                # it is whole, so its header is not parsed again on every read.
                buf += data
                if self._unfinished + len(buf) > self.max_unfinished_bytes:
                    self._over_budget()
                return out
            if len(data) >= _JOIN_MIN:
                # A large read after a leftover (merged reads, `mr`, end wherever the kernel's buffer
                # did). When the leftover is a chunk of known size, only that chunk is joined, and the
                # rest of the read is parsed where it lies.
                need = self._want - len(buf)
                if need > 0:
                    return self._feed_after_leftover(data, need, out, max_messages or 0)
                # Else the two as one bytes, so each of its many messages is sliced out with one copy
                # (a bytearray slice costs two). Small reads are appended to the buffer and parsed there.
                src = b"".join((buf, data))
                buf.clear()
            else:
                buf += data
                src = buf
        # Otherwise nothing is left over: the caller's bytes are parsed in place, never copied first.
        pos = self._parse(src, out, max_messages or 0)
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < len(src):
            with memoryview(src) as rest:
                buf += rest[pos:]
        if self._unfinished + len(buf) > self.max_unfinished_bytes:
            self._over_budget()
        return out

    def _feed_after_leftover(self, data: bytes | bytearray, need: int, out: list[Message], limit: int) -> list[Message]:
        """The receive buffer's chunk completed by the first `need` bytes of `data`, then `data` from
        there, uncopied."""
        buf = self._buf
        with memoryview(data) as view:
            head = b"".join((buf, view[:need]))
        buf.clear()
        sunk = self.sunk
        pos = self._parse(head, out, limit)
        rest = need
        if pos == len(head) and limit:
            limit -= len(out) + self.sunk - sunk
            if limit <= 0:
                self.held_back = True
        if pos < len(head) or self.held_back:
            # Stopped inside the joined chunk (a header not yet whole, or the message budget spent):
            # what is left of it and all of `data` after it wait in the buffer.
            buf += head[pos:]
        else:
            rest = self._parse(data, out, limit, need)
        if rest < len(data):
            with memoryview(data) as view:
                buf += view[rest:]
        if self._unfinished + len(buf) > self.max_unfinished_bytes:
            self._over_budget()
        return out

    def _over_budget(self) -> None:
        raise ChunkError(
            f"{self._unfinished + len(self._buf)} bytes of unfinished messages exceed the "
            f"{self.max_unfinished_bytes}-byte limit for one connection"
        )

    def _parse(self, buf: bytes | bytearray, out: list[Message], limit: int = 0, start: int = 0) -> int:
        """Consume every whole chunk in `buf` from `start` (until `limit` messages are out, if set); returns
        the position reached."""
        self._want = 0
        pos = start
        end = len(buf)
        streams = self._streams
        whole = type(buf) is bytes  # slicing bytes copies once; a bytearray slice needs bytes() on top
        max_size = self.max_message_size
        by_basic = self._by_basic
        sink = self.media_sink
        # Messages this call may still hand on, to `out` or the sink; what went to the sink is what is
        # not in `out`.
        budget = start = limit or _NO_LIMIT
        returned = len(out)  # `out` may hold what an earlier call for the same read returned
        # A Set Chunk Size applies to the very next chunk: re-read after each control message.
        chunk_size = self.chunk_size
        while pos < end:
            if budget <= 0:
                self.held_back = True
                break
            b0 = buf[pos]
            # The common case, in as few steps as it takes: a new message with a type 0-2 header on a
            # chunk stream 2-63 already known, no extended timestamp, all of it here (in one chunk, or
            # in several that nothing interleaves). Anything else (the checks fail before any state
            # changes) takes the general path below.
            cs = by_basic.get(b0)
            if cs is not None and not cs.received:
                fmt = b0 >> 6
                p = pos + _FAST_HEADER[fmt]
                if p > end:
                    break
                if fmt == 2:
                    ts_field = _U32.unpack_from(buf, pos)[0] & 0xFFFFFF
                    length = cs.length
                    type_id = cs.type_id
                else:
                    ts_field, length = _HEAD.unpack_from(buf, pos)
                    ts_field &= 0xFFFFFF
                    type_id = length & 0xFF
                    length >>= 8
                body: bytes | None = None
                if ts_field != _TS_EXTENDED and 0 <= length <= max_size:
                    if length <= chunk_size:
                        q = p + length
                        if q <= end:
                            body = buf[p:q] if whole else bytes(buf[p:q])  # type: ignore[assignment]
                    else:
                        # Several chunks: all here and not interleaved, they are joined in one pass.
                        k = (length - 1) // chunk_size
                        q = p + length + k
                        if q <= end:
                            staged: bytearray = bytearray(buf[p:q]) if whole else buf[p:q]  # type: ignore[assignment]
                            body = _unchunk(staged, chunk_size, chunk_size, _MARKERS[b0 & 0x3F], k)
                if body is not None:
                    if fmt == 0:
                        cs.stream_id = _U32LE.unpack_from(buf, pos + 8)[0]
                        cs.timestamp = ts_field
                    else:
                        cs.timestamp += ts_field
                    cs.delta = ts_field
                    cs.length = length
                    cs.type_id = type_id
                    cs.extended = False
                    pos = q
                    budget -= 1
                    if (type_id == 9 or type_id == 8) and sink is not None and not out:
                        sink(type_id, cs.timestamp & 0xFFFFFFFF, body)
                        continue
                    stream_id = cs.stream_id
                    msg = Message(type_id, cs.timestamp & 0xFFFFFFFF, stream_id, body, b0 & 0x3F)
                    if type_id <= C.ABORT and stream_id == 0:
                        self._control(msg)
                        chunk_size = self.chunk_size
                    out.append(msg)
                    continue
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid == 0:
                if p + 1 > end:
                    break
                csid = buf[p] + 64
                p += 1
            elif csid == 1:
                if p + 2 > end:
                    break
                csid = buf[p] + (buf[p + 1] << 8) + 64
                p += 2
            header_size = _HEADER_SIZES[fmt]
            if p + header_size > end:
                break
            cs = streams.get(csid)
            if cs is None:
                if fmt != 0:
                    raise ChunkError(
                        f"chunk stream {csid} starts with a type-{fmt} header; "
                        "its first chunk must carry a full (type-0) header"
                    )
                if len(streams) >= C.MAX_CHUNK_STREAMS:
                    raise ChunkError(
                        f"chunk stream {csid} would be this connection's {len(streams) + 1}th; "
                        f"at most {C.MAX_CHUNK_STREAMS} are accepted"
                    )
                cs = streams[csid] = _ChunkStream()
                if 1 < csid < 64:
                    by_basic[csid] = by_basic[0x40 | csid] = by_basic[0x80 | csid] = cs
            continuing = cs.received > 0
            if continuing and fmt != 3:
                raise ChunkError(
                    f"chunk stream {csid}: a type-{fmt} header arrived before the previous "
                    f"message ({cs.received}/{cs.length} bytes) was complete"
                )
            ts_field = 0
            length = cs.length
            type_id = cs.type_id
            stream_id = cs.stream_id
            if fmt <= 1:
                # From the basic header's last byte: that byte + 24-bit timestamp,
                # then 24-bit length + type id; the basic byte is masked off.
                ts_field, length = _HEAD.unpack_from(buf, p - 1)
                ts_field &= 0xFFFFFF
                type_id = length & 0xFF
                length >>= 8
                if fmt == 0:
                    stream_id = _U32LE.unpack_from(buf, p + 7)[0]
                extended = ts_field == _TS_EXTENDED
            elif fmt == 2:
                ts_field = _U32.unpack_from(buf, p - 1)[0] & 0xFFFFFF
                extended = ts_field == _TS_EXTENDED
            else:
                if length < 0:
                    raise ChunkError(f"chunk stream {csid}: type-3 chunk with no previous header")
                extended = cs.extended
            p += header_size
            if extended:
                if p + 4 > end:
                    break
                ext = _U32.unpack_from(buf, p)[0]
                if fmt == 3 and continuing:
                    # Some encoders drop the extended field on continuation
                    # chunks; it is present only if it repeats the timestamp.
                    if ext == (cs.timestamp & 0xFFFFFFFF) or ext == cs.delta:
                        p += 4
                else:
                    ts_field = ext
                    p += 4
            if length > self.max_message_size:
                raise ChunkError(
                    f"chunk stream {csid}: message of {length} bytes exceeds the {self.max_message_size}-byte limit"
                )
            take = length - cs.received
            if take > chunk_size:
                take = chunk_size
            if p + take > end:
                self._want = p + take - pos
                break
            # The whole chunk is here: commit the header, then the payload.
            if not continuing:
                if fmt == 0:
                    cs.timestamp = ts_field
                    cs.delta = ts_field
                elif fmt <= 2:
                    cs.delta = ts_field
                    cs.timestamp += ts_field
                else:
                    cs.timestamp += cs.delta
                cs.length = length
                cs.type_id = type_id
                cs.stream_id = stream_id
                if fmt <= 2:
                    cs.extended = extended
                if take == length:
                    # The common case: a message in one chunk, copied once.
                    # Slicing bytes copies once; a bytearray slice needs bytes() on top.
                    payload: bytes = buf[p : p + take] if whole else bytes(buf[p : p + take])  # type: ignore[assignment]
                    pos = p + take
                    self._emit(Message(type_id, cs.timestamp & 0xFFFFFFFF, stream_id, payload, csid), out)
                    budget -= 1
                    chunk_size = self.chunk_size
                    continue
                # All of it here? (Counting one header byte per continuation
                # chunk: a bound, checked before any call.)
                if p + length + (length - take - 1) // chunk_size + 1 <= end:
                    gathered = self._gather(buf, p, take, csid, cs, chunk_size)
                    if gathered is not None:
                        pos, msg = gathered
                        self._emit(msg, out)
                        budget -= 1
                        chunk_size = self.chunk_size
                        continue
            part = cs.buf
            part += buf[p : p + take]
            received = cs.received + take
            pos = p + take
            if received < length and csid < 64 and not cs.extended:
                # The continuations that follow on this chunk stream, in a
                # tighter loop: a one-byte header and the payload, nothing else.
                marker = 0xC0 | csid
                while received < length and pos < end and buf[pos] == marker:
                    take = length - received
                    if take > chunk_size:
                        take = chunk_size
                    p = pos + 1
                    if p + take > end:
                        break
                    part += buf[p : p + take]
                    received += take
                    pos = p + take
            self._unfinished += received - cs.received
            if received >= length:
                payload = bytes(part)
                self._unfinished -= received
                cs.buf = bytearray()
                cs.received = 0
                self._emit(Message(type_id, cs.timestamp & 0xFFFFFFFF, stream_id, payload, csid), out)
                budget -= 1
                chunk_size = self.chunk_size
            else:
                cs.received = received
        self.sunk += start - budget - (len(out) - returned)
        return pos

    def _gather(
        self,
        buf: bytes | bytearray,
        p: int,
        take: int,
        csid: int,
        cs: _ChunkStream,
        chunk_size: int,
    ) -> tuple[int, Message] | None:
        """A message whose chunks all sit in `buf`, uninterleaved: joined with one copy.

        Returns the position after its last chunk and the message, or None (nothing
        consumed) when the message continues past `buf` or another chunk stream
        interleaves; the caller then assembles it chunk by chunk.
        """
        if csid < 64:
            basic = bytes((0xC0 | csid,))
        elif csid < 320:
            basic = bytes((0xC0, csid - 64))
        else:
            basic = bytes((0xC1, (csid - 64) & 0xFF, (csid - 64) >> 8))
        hlen = len(basic)
        left = cs.length - take
        end = len(buf)
        if hlen == 1 and not cs.extended:
            # One-byte continuation headers: the one-pass join, however small the chunks.
            continuations = -(-left // chunk_size)
            stop = p + cs.length + continuations
            if stop > end:
                return None
            staged: bytearray = bytearray(buf[p:stop]) if type(buf) is bytes else buf[p:stop]  # type: ignore[assignment]
            payload = _unchunk(staged, take, chunk_size, basic, continuations)
            if payload is None:
                return None  # interleaved, or a malformed header the slow path will name
            return stop, Message(cs.type_id, cs.timestamp & 0xFFFFFFFF, cs.stream_id, payload, csid)
        # Not all here (the usual case for a large frame in small reads): say
        # so before scanning any header.
        if p + cs.length + -(-left // chunk_size) * hlen > end:
            return None
        spans = [(p, take)]
        q = p + take
        extended = cs.extended
        ts = cs.timestamp & 0xFFFFFFFF
        while left:
            if buf[q : q + hlen] != basic:
                return None  # incomplete, interleaved, or a malformed header the slow path will name
            q += hlen
            if extended:
                if q + 4 > end:
                    return None
                ext = _U32.unpack_from(buf, q)[0]
                if ext == ts or ext == cs.delta:
                    q += 4
            n = left if left < chunk_size else chunk_size
            if q + n > end:
                return None
            spans.append((q, n))
            q += n
            left -= n
        # The slices die with the list, before the view is released: `feed`
        # may resize `buf` next, which a live export would forbid.
        with memoryview(buf) as view:
            payload = b"".join([view[a : a + n] for a, n in spans])
        return q, Message(cs.type_id, ts, cs.stream_id, payload, csid)

    def _emit(self, msg: Message, out: list[Message]) -> None:
        """Out it goes: to the media sink while `out` is empty, else to `out`."""
        t = msg.type_id
        if (t == 9 or t == 8) and not out and self.media_sink is not None:
            self.media_sink(t, msg.timestamp, msg.payload)
            return
        if t <= C.ABORT and msg.stream_id == 0:
            self._control(msg)
        out.append(msg)

    def _control(self, msg: Message) -> None:
        if len(msg.payload) < 4:
            return
        value = _U32.unpack_from(msg.payload)[0] & 0x7FFFFFFF
        if msg.type_id == C.SET_CHUNK_SIZE:
            if value < C.MIN_PEER_CHUNK_SIZE:
                raise ChunkError(
                    f"Set Chunk Size to {value}: below the minimum of {C.MIN_PEER_CHUNK_SIZE} bytes "
                    "(SRS refuses it too); closing the connection"
                )
            self.chunk_size = value
        elif msg.type_id == C.ABORT:
            cs = self._streams.get(value)
            if cs is not None:
                self._unfinished -= cs.received
                cs.buf = bytearray()
                cs.received = 0


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))


_BASIC0: Final = [_basic_header(0, i) for i in range(64)]
_BASIC3: Final = [_basic_header(3, i) for i in range(64)]


def _unchunk(staged: bytearray, first: int, chunk_size: int, marker: bytes, continuations: int) -> bytes | None:
    """A message's first chunk (`first` bytes) and its continuations, each a one-byte type-3 header
    `marker` and up to `chunk_size` bytes, as its payload; None when a header is not `marker` (another
    chunk stream cuts in, or the input is malformed). The headers sit at a fixed stride, so one strided
    slice checks them all and one strided delete drops them: a 4.5 KB frame in 128-byte chunks is 36
    chunks, walked in C."""
    if staged[first :: chunk_size + 1] != marker * continuations:
        return None
    del staged[first :: chunk_size + 1]
    return bytes(staged)


def encode_message(csid: int, type_id: int, timestamp: int, stream_id: int, payload: bytes, chunk_size: int) -> bytes:
    """Serialize one message: a type-0 first chunk, then type-3 continuations.

    Every message starting with a full header lets the same bytes go to any
    player regardless of what that player was sent before.
    """
    timestamp &= 0xFFFFFFFF
    length = len(payload)
    if csid < 64:
        first = _BASIC0[csid]
        cont = _BASIC3[csid]
    else:
        first = _basic_header(0, csid)
        cont = _basic_header(3, csid)
    if timestamp >= _TS_EXTENDED:
        ext = _U32.pack(timestamp)
        header = b"".join(
            (first, b"\xff\xff\xff", _U32.pack(length)[1:], bytes((type_id,)), _U32LE.pack(stream_id), ext)
        )
        cont += ext
    else:
        header = b"".join(
            (first, _U32.pack(timestamp)[1:], _U32.pack(length)[1:], bytes((type_id,)), _U32LE.pack(stream_id))
        )
    if length <= chunk_size:
        return header + payload
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [header, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


def media_head(csid: int, type_id: int, timestamp: int, length: int, stream_id: int) -> bytes:
    """The type-0 first chunk header of a message on a chunk stream below 64, timestamp below 0xFFFFFF.

    With `media_body` it is `encode_message` cut in two: the body does not
    depend on the timestamp, so players on different timelines share it.
    """
    return _BASIC0[csid] + ((timestamp << 32) | (length << 8) | type_id).to_bytes(7, "big") + _U32LE.pack(stream_id)


def media_body(csid: int, payload: bytes, chunk_size: int) -> bytes:
    """A message after its first chunk header: the payload cut into chunks with type-3 headers between."""
    length = len(payload)
    if length <= chunk_size:
        return payload
    cont = _BASIC3[csid]
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


class ChunkEncoder:
    """Send side for one connection: control messages and commands."""

    def __init__(self) -> None:
        self.chunk_size = C.DEFAULT_CHUNK_SIZE

    def encode(self, csid: int, type_id: int, timestamp: int, stream_id: int, payload: bytes) -> bytes:
        return encode_message(csid, type_id, timestamp, stream_id, payload, self.chunk_size)

    def _control(self, type_id: int, payload: bytes) -> bytes:
        return encode_message(C.CSID_PROTOCOL, type_id, 0, 0, payload, self.chunk_size)

    def set_chunk_size(self, size: int) -> bytes:
        if not 1 <= size <= C.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} out of range")
        data = self._control(C.SET_CHUNK_SIZE, _U32.pack(size))
        self.chunk_size = size
        return data

    def abort(self, csid: int) -> bytes:
        return self._control(C.ABORT, _U32.pack(csid))

    def acknowledgement(self, sequence: int) -> bytes:
        return self._control(C.ACKNOWLEDGEMENT, _U32.pack(sequence & 0xFFFFFFFF))

    def window_ack_size(self, size: int) -> bytes:
        return self._control(C.WINDOW_ACK_SIZE, _U32.pack(size))

    def set_peer_bandwidth(self, size: int, limit_type: int) -> bytes:
        return self._control(C.SET_PEER_BANDWIDTH, _U32.pack(size) + bytes((limit_type,)))

    def user_control(self, event: int, *values: int) -> bytes:
        payload = struct.pack(">H", event) + b"".join(_U32.pack(v & 0xFFFFFFFF) for v in values)
        return self._control(C.USER_CONTROL, payload)
