"""What AMF0 and AMF3 decoding share: the error, the Python types, and the per-message budget.

Kept apart from both codecs so that `amf0` (which switches to AMF3 on the AVM+
marker) can import `amf3` without `amf3` importing it back.

The budget exists because AMF references make a small message describe a huge
value: an object whose two fields both refer to the previous object, repeated
22 times, is ~500 bytes on the wire and four million values once anything walks
it (str(), re-encoding, JSON). Decoding shares referenced objects instead of
copying them, and charges each reference the full size of what it refers to, so
the decoded value can be walked, printed or re-encoded in time linear in the
message it came from.
"""

from __future__ import annotations

from typing import Any

from tidecast.errors import ProtocolError

# Values one message may decode to, counting a reference as every value it
# refers to. onMetaData with a keyframe index of a long recording has a few
# thousand; commands a few dozen.
MAX_VALUES = 100_000
# String bytes references may add on top of the message's own length (a
# referenced object's strings count again at every reference).
MAX_SHARED_TEXT = 1 << 20
# Nesting depth of objects and arrays; Python recursion stays far from its limit.
MAX_DEPTH = 64


class AmfError(ProtocolError):
    """Bytes that are not valid AMF, or a value over the decoding budget."""


class EcmaArray(dict[str, Any]):
    """An associative array: encodes as AMF0 type 8, as onMetaData usually is."""


class Date(float):
    """Milliseconds since the epoch, kept apart from plain numbers."""


class Budget:
    """What is left of one message's decoding allowance; shared by AMF0 and any AMF3 inside it."""

    __slots__ = ("limit", "text", "values")

    def __init__(self, message_size: int, max_values: int = MAX_VALUES, max_shared_text: int = MAX_SHARED_TEXT) -> None:
        self.limit = max_values
        self.values = max_values
        self.text = message_size + max_shared_text

    def charge(self, values: int, text: int = 0) -> None:
        self.values -= values
        self.text -= text
        if self.values < 0:
            raise AmfError(
                f"AMF value too large: more than {self.limit} values once references are counted "
                "(a reference counts as everything it refers to); refusing the message"
            )
        if self.text < 0:
            raise AmfError("AMF value too large: references repeat more string data than the message allows")


def without_bytes(value: Any) -> Any:
    """`value` with every AMF3 ByteArray (bytes) left out, so that AMF0 can encode it again.

    AMF0 has no byte array type; metadata passed on to players is re-encoded in
    AMF0. The walk is bounded by the budget the value was decoded under.
    """
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, dict):
        if not any(isinstance(v, (bytes, bytearray, dict, list)) for v in value.values()):
            return value
        out = type(value)() if isinstance(value, EcmaArray) else {}
        for key, item in value.items():
            if not isinstance(item, (bytes, bytearray)):
                out[key] = without_bytes(item)
        return out
    if isinstance(value, list):
        return [without_bytes(item) for item in value if not isinstance(item, (bytes, bytearray))]
    return value
