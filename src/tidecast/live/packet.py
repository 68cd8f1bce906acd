"""A media message as the hub keeps it, serialized at most once per output format."""

from __future__ import annotations

from tidecast.codec.flv import flv_tag
from tidecast.rtmp import constants as C
from tidecast.rtmp.chunk import encode_message
from tidecast.rtmp.session import STREAM_ID

_CSID = {C.AUDIO: C.CSID_AUDIO, C.VIDEO: C.CSID_VIDEO}


class Packet:
    """One audio, video or script message of a live stream.

    Serialization is lazy and cached: a stream with no FLV players never builds
    FLV tags, and a stream with 2,000 RTMP players builds each chunk once.
    """

    __slots__ = ("_flv", "_rtmp", "chunk_size", "keyframe", "payload", "sequence_header", "timestamp", "type_id")

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
        self.chunk_size = chunk_size
        self.keyframe = keyframe
        self.sequence_header = sequence_header
        self._rtmp: bytes | None = None
        self._flv: bytes | None = None

    def rtmp(self) -> bytes:
        data = self._rtmp
        if data is None:
            csid = _CSID.get(self.type_id, C.CSID_DATA)
            data = self._rtmp = encode_message(
                csid, self.type_id, self.timestamp, STREAM_ID, self.payload, self.chunk_size
            )
        return data

    def flv(self) -> bytes:
        data = self._flv
        if data is None:
            data = self._flv = flv_tag(self.type_id, self.timestamp, self.payload)
        return data

    @property
    def is_video(self) -> bool:
        return self.type_id == C.VIDEO

    @property
    def is_audio(self) -> bool:
        return self.type_id == C.AUDIO
