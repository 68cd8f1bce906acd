"""The part of an enhanced-RTMP tag header that audio and video share: ModEx blocks, multitrack, the FourCC."""

from __future__ import annotations

ExHeader = tuple[str, int, int, int]  # (codec, packet type, where its data starts, where it ends)


def read_exheader(
    payload: bytes, packet_type: int, mod_ex: int, multitrack: int, fourccs: dict[bytes, str]
) -> ExHeader | None:
    """After the first byte of an ExHeader tag whose low nibble is `packet_type`; None when truncated.

    For a multitrack tag the codec is the shared FourCC or the first track's, and the data is that track's.
    """
    size = len(payload)
    pos = 1
    while packet_type == mod_ex:
        if pos >= size:
            return None
        mod_size = payload[pos] + 1
        pos += 1
        if mod_size == 256:
            if pos + 2 > size:
                return None
            mod_size = ((payload[pos] << 8) | payload[pos + 1]) + 1
            pos += 2
        pos += mod_size  # the ModEx data (e.g. a nanosecond timestamp offset): not needed to relay
        if pos >= size:
            return None
        packet_type = payload[pos] & 0x0F  # high nibble: the ModEx type
        pos += 1
    end = size
    if packet_type == multitrack:
        if pos >= size:
            return None
        track_type = payload[pos] >> 4
        packet_type = payload[pos] & 0x0F
        pos += 1
        codec = fourccs.get(payload[pos : pos + 4], "")
        pos += 5  # the FourCC and the first trackId
        if track_type != 0:  # not OneTrack: the first track's data is size-prefixed
            if pos + 3 > size:
                return None
            end = pos + 3 + ((payload[pos] << 16) | (payload[pos + 1] << 8) | payload[pos + 2])
            pos += 3
            if end > size:
                return None
        if pos > size:
            return None
    else:
        if pos + 4 > size:
            return None
        codec = fourccs.get(payload[pos : pos + 4], "")
        pos += 4
    return codec, packet_type, pos, end
