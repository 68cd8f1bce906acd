"""A media message as the hub keeps it, serialized at most once per output format."""

from __future__ import annotations

from typing import Protocol

from tidecast.codec.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO

__all__ = ["TAG_AUDIO", "TAG_SCRIPT", "TAG_VIDEO", "Encoder", "Packet"]


class Encoder(Protocol):
    """One output format's serialization of a single packet (an RTMP message, an FLV tag...)."""

    def encode(self, packet: Packet) -> bytes: ...


class Packet:
    """One audio, video or script message of a live stream.

    Serialization is lazy and cached per format: a stream with no FLV players
    never builds FLV tags, and a GOP sent to 2,000 joining players is encoded
    once. The first format's bytes sit in slots and only further formats get a
    dict: every dict is one more object per message for the garbage collector
    to walk, and most streams' players share one format.
    """

    __slots__ = (
        "_encoded",
        "_first",
        "_first_data",
        "chunk_size",
        "keyframe",
        "payload",
        "sequence_header",
        "timestamp",
        "type_id",
    )

    def __init__(
        self,
        type_id: int,
        timestamp: int,
        payload: bytes,
        chunk_size: int,
        keyframe: bool = False,
        sequence_header: bool = False,
    ) -> None:
        self.type_id = type_id
        self.timestamp = timestamp
        self.payload = payload
        self.chunk_size = chunk_size  # the stream's outgoing RTMP chunk size
        self.keyframe = keyframe
        self.sequence_header = sequence_header
        self._first: Encoder | None = None
        self._first_data = b""
        self._encoded: dict[Encoder, bytes] | None = None

    def encoded(self, encoder: Encoder) -> bytes:
        first = self._first
        if first is encoder:
            return self._first_data
        if first is None:
            data = self._first_data = encoder.encode(self)
            self._first = encoder
            return data
        cache = self._encoded
        if cache is None:
            cache = self._encoded = {}
        found = cache.get(encoder)
        if found is None:
            found = cache[encoder] = encoder.encode(self)
        return found

    def serializations(self) -> list[bytes]:
        """What `encoded` has made so far, one per format (for tests and debugging)."""
        made = [self._first_data] if self._first is not None else []
        return made + list((self._encoded or {}).values())

    @property
    def is_video(self) -> bool:
        return self.type_id == TAG_VIDEO
