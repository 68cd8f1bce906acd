"""AMF3 decoding, for the values Flash-era clients wrap in AMF0's AVM+ marker.

RTMP servers only ever need to read these (command arguments and metadata);
tidecast always answers in AMF0, so there is no encoder. Object references
share the referred object and are charged its full size against the message's
`Budget` (see `amf_common`); a reference to an object still being decoded (a
cycle) is refused, so every decoded value is a finite tree to walk.
"""

from __future__ import annotations

import struct
from typing import Any

from tidecast.codec.amf_common import MAX_DEPTH, AmfError, Budget, Date

_DOUBLE = struct.Struct(">d")


class Decoder:
    __slots__ = ("budget", "costs", "data", "objects", "pos", "strings", "traits")

    def __init__(self, data: bytes, pos: int = 0, budget: Budget | None = None) -> None:
        self.data = data
        self.pos = pos
        self.budget = budget if budget is not None else Budget(len(data))
        self.strings: list[str] = []
        self.objects: list[Any] = []
        # (values, text) each object cost to decode; None while it is being decoded.
        self.costs: list[tuple[int, int] | None] = []
        self.traits: list[tuple[bool, list[str], int]] = []  # dynamic, member names, their total length

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise AmfError(f"AMF3 value truncated at byte {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u29(self) -> int:
        result = 0
        for i in range(4):
            byte = self._take(1)[0]
            if i == 3:
                return (result << 8) | byte
            result = (result << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return result
        return result

    def string(self) -> str:
        header = self.u29()
        if not header & 1:
            index = header >> 1
            if index >= len(self.strings):
                raise AmfError(f"AMF3 string reference {index} is unknown")
            text = self.strings[index]
            self.budget.charge(0, len(text))
            return text
        size = header >> 1
        try:
            text = self._take(size).decode()
        except UnicodeDecodeError:
            raise AmfError("AMF3 string is not UTF-8") from None
        self.budget.charge(0, size)
        if text:
            self.strings.append(text)
        return text

    def _object_ref(self, header: int) -> Any:
        index = header >> 1
        if index >= len(self.objects):
            raise AmfError(f"AMF3 object reference {index} is unknown")
        cost = self.costs[index]
        if cost is None:
            raise AmfError(f"AMF3 object reference {index} points into itself (a cycle); refusing it")
        self.budget.charge(*cost)
        return self.objects[index]

    def _begin(self, value: Any) -> tuple[int, int, int]:
        """Register an object for references; returns what `_end` needs to price it."""
        index = len(self.objects)
        self.objects.append(value)
        self.costs.append(None)
        return index, self.budget.values, self.budget.text

    def _end(self, mark: tuple[int, int, int], value: Any) -> None:
        index, values, text = mark
        self.objects[index] = value
        self.costs[index] = (values - self.budget.values, text - self.budget.text)

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError("AMF3 value nested too deeply")
        marker = self._take(1)[0]
        if marker == 0x09:
            return self._array(depth)
        if marker == 0x0A:
            return self._object(depth)
        self.budget.charge(1)
        if marker in (0x00, 0x01):
            return None
        if marker == 0x02:
            return False
        if marker == 0x03:
            return True
        if marker == 0x04:
            n = self.u29()
            return float(n - (1 << 29) if n & 0x10000000 else n)
        if marker == 0x05:
            return _DOUBLE.unpack(self._take(8))[0]
        if marker == 0x06:
            return self.string()
        if marker in (0x07, 0x0B, 0x0C):  # xml-doc, xml, byte array
            header = self.u29()
            if not header & 1:
                return self._object_ref(header)
            size = header >> 1
            raw = self._take(size)
            self.budget.charge(0, size)
            value: Any = raw if marker == 0x0C else raw.decode(errors="replace")
            self.objects.append(value)
            self.costs.append((1, size))
            return value
        if marker == 0x08:
            header = self.u29()
            if not header & 1:
                return self._object_ref(header)
            date = Date(_DOUBLE.unpack(self._take(8))[0])
            self.objects.append(date)
            self.costs.append((1, 0))
            return date
        raise AmfError(f"AMF3 type marker 0x{marker:02x} is not supported")

    def _array(self, depth: int) -> Any:
        header = self.u29()
        if not header & 1:
            return self._object_ref(header)
        count = header >> 1
        assoc: dict[str, Any] = {}
        mark = self._begin(assoc)
        self.budget.charge(1)
        while True:
            key = self.string()
            if not key:
                break
            assoc[key] = self.value(depth + 1)
        if count > len(self.data) - self.pos:
            raise AmfError(f"AMF3 array claims {count} items in fewer bytes")
        dense = [self.value(depth + 1) for _ in range(count)]
        if assoc:
            assoc.update({str(i): v for i, v in enumerate(dense)})
            self._end(mark, assoc)
            return assoc
        self._end(mark, dense)
        return dense

    def _object(self, depth: int) -> Any:
        header = self.u29()
        if not header & 1:
            return self._object_ref(header)
        if not header & 2:
            index = header >> 2
            if index >= len(self.traits):
                raise AmfError(f"AMF3 traits reference {index} is unknown")
            dynamic, names, names_size = self.traits[index]
            # Member names repeat in every object that shares the traits.
            self.budget.charge(0, names_size)
        else:
            if header & 4:
                raise AmfError("AMF3 externalizable objects are not supported")
            dynamic = bool(header & 8)
            self.string()  # class name
            count = header >> 4
            if count > len(self.data) - self.pos:
                raise AmfError(f"AMF3 traits claim {count} members in fewer bytes")
            names = [self.string() for _ in range(count)]
            self.traits.append((dynamic, names, sum(len(name) for name in names)))
        obj: dict[str, Any] = {}
        mark = self._begin(obj)
        self.budget.charge(1)
        for name in names:
            obj[name] = self.value(depth + 1)
        if dynamic:
            while True:
                key = self.string()
                if not key:
                    break
                obj[key] = self.value(depth + 1)
        self._end(mark, obj)
        return obj
