"""AMF3 decoding, for the values Flash-era clients wrap in AMF0's AVM+ marker.

RTMP servers only ever need to read these (command arguments and metadata);
tidecast always answers in AMF0, so there is no encoder.
"""

from __future__ import annotations

import struct
from typing import Any

from tidecast.codec.amf0 import AmfError, Date

_DOUBLE = struct.Struct(">d")
_MAX_DEPTH = 64


class Decoder:
    __slots__ = ("data", "objects", "pos", "strings", "traits")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.strings: list[str] = []
        self.objects: list[Any] = []
        self.traits: list[tuple[bool, list[str]]] = []

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
            return self.strings[index]
        try:
            text = self._take(header >> 1).decode()
        except UnicodeDecodeError:
            raise AmfError("AMF3 string is not UTF-8") from None
        if text:
            self.strings.append(text)
        return text

    def _object_ref(self, header: int) -> Any:
        index = header >> 1
        if index >= len(self.objects):
            raise AmfError(f"AMF3 object reference {index} is unknown")
        return self.objects[index]

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise AmfError("AMF3 value nested too deeply")
        marker = self._take(1)[0]
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
            raw = self._take(header >> 1)
            value: Any = raw if marker == 0x0C else raw.decode(errors="replace")
            self.objects.append(value)
            return value
        if marker == 0x08:
            header = self.u29()
            if not header & 1:
                return self._object_ref(header)
            date = Date(_DOUBLE.unpack(self._take(8))[0])
            self.objects.append(date)
            return date
        if marker == 0x09:
            return self._array(depth)
        if marker == 0x0A:
            return self._object(depth)
        raise AmfError(f"AMF3 type marker 0x{marker:02x} is not supported")

    def _array(self, depth: int) -> Any:
        header = self.u29()
        if not header & 1:
            return self._object_ref(header)
        count = header >> 1
        assoc: dict[str, Any] = {}
        self.objects.append(assoc)
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
            return assoc
        return dense

    def _object(self, depth: int) -> Any:
        header = self.u29()
        if not header & 1:
            return self._object_ref(header)
        if not header & 2:
            index = header >> 2
            if index >= len(self.traits):
                raise AmfError(f"AMF3 traits reference {index} is unknown")
            dynamic, names = self.traits[index]
        else:
            if header & 4:
                raise AmfError("AMF3 externalizable objects are not supported")
            dynamic = bool(header & 8)
            self.string()  # class name
            names = [self.string() for _ in range(header >> 4)]
            self.traits.append((dynamic, names))
        obj: dict[str, Any] = {}
        self.objects.append(obj)
        for name in names:
            obj[name] = self.value(depth + 1)
        if dynamic:
            while True:
                key = self.string()
                if not key:
                    break
                obj[key] = self.value(depth + 1)
        return obj
