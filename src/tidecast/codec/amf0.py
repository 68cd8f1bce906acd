"""AMF0, the value encoding of RTMP commands and metadata.

Python values map as: None <-> null (undefined decodes to None too), bool,
float (ints encode as numbers), str, dict <-> object, `EcmaArray` <-> ECMA
array, list <-> strict array, `Date`. An AMF0 "switch to AMF3" marker decodes
one AMF3 value (some Flash-era clients send those in commands).

Decoding never expands references: a referenced object is shared, charged its
full size against the message's `Budget`, and a reference into an object that
is still open (a cycle) is refused. See `amf_common` for why.
"""

from __future__ import annotations

import struct
from typing import Any

from tidecast.codec import amf3
from tidecast.codec.amf_common import MAX_DEPTH, AmfError, Budget, Date, EcmaArray, without_bytes

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")

# Re-exported: callers know these as amf0.AmfError, amf0.EcmaArray, amf0.Date.
__all__ = ["AmfError", "Budget", "Date", "EcmaArray", "decode", "decode_all", "encode", "without_bytes"]


# ---------------------------------------------------------------- encoding


def _encode_key(key: str, out: list[bytes]) -> None:
    raw = key.encode()
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _encode_value(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"\x05")
    elif value is True:
        out.append(b"\x01\x01")
    elif value is False:
        out.append(b"\x01\x00")
    elif isinstance(value, Date):
        out.append(b"\x0b" + _DATE.pack(float(value), 0))
    elif isinstance(value, (int, float)):
        out.append(b"\x00" + _DOUBLE.pack(float(value)))
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) <= 0xFFFF:
            out.append(b"\x02" + _U16.pack(len(raw)))
        else:
            out.append(b"\x0c" + _U32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, EcmaArray):
        out.append(b"\x08" + _U32.pack(len(value)))
        for key, item in value.items():
            _encode_key(str(key), out)
            _encode_value(item, out)
        out.append(b"\x00\x00\x09")
    elif isinstance(value, dict):
        out.append(b"\x03")
        for key, item in value.items():
            _encode_key(str(key), out)
            _encode_value(item, out)
        out.append(b"\x00\x00\x09")
    elif isinstance(value, (list, tuple)):
        out.append(b"\x0a" + _U32.pack(len(value)))
        for item in value:
            _encode_value(item, out)
    else:
        raise TypeError(f"AMF0 cannot encode {type(value).__name__}")


def encode(*values: Any) -> bytes:
    out: list[bytes] = []
    for value in values:
        _encode_value(value, out)
    return b"".join(out)


# ---------------------------------------------------------------- decoding


class _Reader:
    __slots__ = ("budget", "costs", "data", "pos", "refs")

    def __init__(self, data: bytes, budget: Budget | None) -> None:
        self.data = data
        self.pos = 0
        self.budget = budget if budget is not None else Budget(len(data))
        self.refs: list[Any] = []
        # (values, text) each referable object cost to decode; None while it is open.
        self.costs: list[tuple[int, int] | None] = []

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError(f"AMF0 value truncated at byte {self.pos}: need {n} more bytes")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def utf8(self, n: int) -> str:
        try:
            text = self.take(n).decode()
        except UnicodeDecodeError:
            raise AmfError(f"AMF0 string at byte {self.pos - n} is not UTF-8") from None
        self.budget.charge(0, n)
        return text

    def key(self) -> str:
        return self.utf8(self.u16())

    def properties(self, target: dict[str, Any], depth: int) -> None:
        data = self.data
        while True:
            if data[self.pos : self.pos + 3] == b"\x00\x00\x09":
                self.pos += 3
                return
            if self.pos >= len(data):
                # Some encoders end the top-level object without the end
                # marker; accept what was there.
                return
            name = self.key()
            target[name] = self.value(depth + 1)

    def open(self, value: Any) -> tuple[int, int, int]:
        """Register an object for references; returns what `close` needs to price it."""
        self.refs.append(value)
        self.costs.append(None)
        budget = self.budget
        budget.charge(1)
        return len(self.refs) - 1, budget.values, budget.text

    def close(self, mark: tuple[int, int, int]) -> None:
        index, values, text = mark
        budget = self.budget
        # +1: the object itself, charged in `open` before the mark was taken.
        self.costs[index] = (values - budget.values + 1, text - budget.text)

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError("AMF0 value nested too deeply")
        marker = self.take(1)[0]
        if marker == OBJECT:
            obj: dict[str, Any] = {}
            mark = self.open(obj)
            self.properties(obj, depth)
            self.close(mark)
            return obj
        if marker == ECMA_ARRAY:
            self.u32()  # the count is a hint; the end marker is authoritative
            arr = EcmaArray()
            mark = self.open(arr)
            self.properties(arr, depth)
            self.close(mark)
            return arr
        if marker == STRICT_ARRAY:
            count = self.u32()
            if count > len(self.data) - self.pos:
                raise AmfError(f"AMF0 strict array claims {count} items in fewer bytes")
            items: list[Any] = []
            mark = self.open(items)
            for _ in range(count):
                items.append(self.value(depth + 1))
            self.close(mark)
            return items
        if marker == TYPED_OBJECT:
            self.key()  # the class name carries nothing RTMP needs
            typed: dict[str, Any] = {}
            mark = self.open(typed)
            self.properties(typed, depth)
            self.close(mark)
            return typed
        if marker == REFERENCE:
            index = self.u16()
            if index >= len(self.refs):
                raise AmfError(f"AMF0 reference {index} to an unknown object")
            cost = self.costs[index]
            if cost is None:
                raise AmfError(f"AMF0 reference {index} points into itself (a cycle); refusing it")
            self.budget.charge(*cost)
            return self.refs[index]
        if marker == AVMPLUS:
            decoder = amf3.Decoder(self.data, self.pos, self.budget)
            result = decoder.value(depth)
            self.pos = decoder.pos
            return result
        self.budget.charge(1)
        if marker == NUMBER:
            return _DOUBLE.unpack(self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1) != b"\x00"
        if marker == STRING:
            return self.utf8(self.u16())
        if marker in (NULL, UNDEFINED, UNSUPPORTED):
            return None
        if marker == DATE:
            millis, _tz = _DATE.unpack(self.take(10))
            return Date(millis)
        if marker in (LONG_STRING, XML_DOCUMENT):
            return self.utf8(self.u32())
        raise AmfError(f"unknown AMF0 type marker 0x{marker:02x} at byte {self.pos - 1}")


def decode(data: bytes, budget: Budget | None = None) -> Any:
    """Decode the first value, within `budget` (by default, one sized for `data`)."""
    return _Reader(data, budget).value()


def decode_all(data: bytes, budget: Budget | None = None) -> list[Any]:
    """Decode every value in `data` (a command: name, transaction id, args), sharing one budget."""
    reader = _Reader(data, budget)
    values: list[Any] = []
    end = len(data)
    while reader.pos < end:
        values.append(reader.value())
    return values
