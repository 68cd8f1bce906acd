"""An MPEG-TS muxer for HLS: PAT/PMT, PES with PTS/DTS, PCR, continuity counters.

One program: video on PID 0x100 (stream type 0x1B H.264 or 0x24 HEVC, both
Annex B) and AAC/ADTS on PID 0x101 (0x0F), the PMT on 0x1001. Pure: access
units in, TS packets (bytes) out.

This runs for every frame of every HLS stream, so a PES is cut into packets
without a Python loop per packet: the full middle packets are sliced out by one
`struct` call, joined with a constant 4-byte header and the continuity
counters patched in with one strided assignment. Only the first packet (PES
header, PCR, random access flag) and the last one (stuffing through its
adaptation field, as the standard asks) are built by hand.
"""

from __future__ import annotations

import struct
from typing import Final

PACKET_SIZE: Final = 188
PAYLOAD_SIZE: Final = 184
PAT_PID: Final = 0x0000
PMT_PID: Final = 0x1001
VIDEO_PID: Final = 0x100
AUDIO_PID: Final = 0x101
STREAM_TYPE_H264: Final = 0x1B
STREAM_TYPE_HEVC: Final = 0x24  # ISO/IEC 13818-1 Table 2-34; what SRS 6 and ffmpeg write for H.265
STREAM_TYPE_AAC: Final = 0x0F
VIDEO_STREAM_ID: Final = 0xE0
AUDIO_STREAM_ID: Final = 0xC0
PROGRAM_NUMBER: Final = 1
CLOCK: Final = 90_000  # PTS/DTS/PCR base units per second


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of a PSI section; only run on PAT/PMT (a few dozen bytes per segment)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


_MASK33: Final = 0x1FFFFFFFF
_PTS: Final = struct.Struct(">BHH")
_PES_PTS: Final = struct.Struct(">IHBBBBHH")
_PES_PTS_DTS: Final = struct.Struct(">IHBBBBHHBHH")
_TS_PCR: Final = struct.Struct(">BBBBBBIH")  # packet header, adaptation field length and flags, PCR
_PCR: Final = struct.Struct(">IH")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


def encode_timestamp(prefix: int, value: int) -> bytes:
    """A 33-bit PTS or DTS with its 4-bit prefix and marker bits (5 bytes); wraps like the clock."""
    value &= 0x1FFFFFFFF
    return _PTS.pack(
        (prefix << 4) | ((value >> 29) & 0x0E) | 1,
        ((value >> 14) & 0xFFFE) | 1,
        ((value << 1) & 0xFFFE) | 1,
    )


def encode_pcr(base: int) -> bytes:
    """The 6-byte program_clock_reference: 33-bit base, 6 reserved bits, extension 0."""
    base &= 0x1FFFFFFFF
    return _PCR.pack(base >> 1, ((base & 1) << 15) | 0x7E00)


def _section(table_id: int, body: bytes) -> bytes:
    """A PSI section with its pointer field and CRC, padded to one packet's payload."""
    length = len(body) + 4  # the CRC counts
    section = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF)) + body
    section += _U32.pack(crc32_mpeg2(section))
    payload = b"\x00" + section
    return payload + b"\xff" * (PAYLOAD_SIZE - len(payload))


# Middle packets of a PES are sliced by one Struct call; Structs of up to _GROUP
# chunks are made on first use and kept (there are at most _GROUP of them).
_GROUP: Final = 64
_CHUNKERS: dict[int, struct.Struct] = {}


def _chunker(n: int) -> struct.Struct:
    chunker = _CHUNKERS.get(n)
    if chunker is None:
        chunker = _CHUNKERS[n] = struct.Struct(f"{PAYLOAD_SIZE}s" * n)
    return chunker


def _chunks(data: bytes | bytearray, pos: int, n: int) -> list[bytes]:
    out: list[bytes] = []
    while n > _GROUP:
        out += _chunker(_GROUP).unpack_from(data, pos)
        pos += PAYLOAD_SIZE * _GROUP
        n -= _GROUP
    out += _chunker(n).unpack_from(data, pos)
    return out


# By PID: the header of every packet but a PES's first, before its counter is patched in,
# and a PES's first header without an adaptation field, by continuity counter.
_SEPARATORS: dict[int, bytearray] = {}
_PLAIN_FIRST: dict[int, list[bytes]] = {}


def _headers(pid: int) -> tuple[bytearray, list[bytes]]:
    if pid not in _SEPARATORS:
        _SEPARATORS[pid] = bytearray((0x47, pid >> 8, pid & 0xFF, 0x10))
        _PLAIN_FIRST[pid] = [bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | cc)) for cc in range(16)]
    return _SEPARATORS[pid], _PLAIN_FIRST[pid]


_headers(VIDEO_PID)
_headers(AUDIO_PID)


def _stuffing(room: int) -> bytes:
    """An adaptation field of exactly `room` bytes that carries nothing: stuffing for a PES's last packet."""
    if room == 1:
        return b"\x00"
    return bytes((room - 1, 0x00)) + b"\xff" * (room - 2)


_STUFFING: Final = [b""] + [_stuffing(room) for room in range(1, PAYLOAD_SIZE)]
# The 4th header byte of payload-only packets, counters 0, 1, ... 15, 0, ... (adaptation_field_control 01):
# a PES's run of counters is one slice of it (a 1 MiB frame has about 5,700 packets).
_CC_RUN: Final = bytes(0x10 | (i & 0x0F) for i in range(16 * 512))


def _cc_run(first: int, n: int) -> bytes:
    """n header bytes (payload only) with counters first, first+1, ... mod 16."""
    if first + n <= len(_CC_RUN):
        return _CC_RUN[first : first + n]
    return (_CC_RUN[:16] * ((first + n) // 16 + 1))[first : first + n]


_CC_RUN_MAX: Final = len(_CC_RUN) - 16  # runs shorter than this are one slice of _CC_RUN, whatever the first counter


class TsMuxer:
    """Turns access units into TS packets; keeps the continuity counters across segments."""

    def __init__(self) -> None:
        self.cc: dict[int, int] = {PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}

    def _header(self, pid: int, start: bool, adaptation: bool) -> bytes:
        cc = self.cc[pid]
        self.cc[pid] = (cc + 1) & 0x0F
        return bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF, (0x30 if adaptation else 0x10) | cc))

    def tables(self, has_video: bool, has_audio: bool, video_type: int = STREAM_TYPE_H264) -> bytes:
        """PAT and PMT, written at the start of every segment so each one plays alone."""
        # transport_stream_id 1, version 0, current; one program -> the PMT PID.
        pat = _section(0x00, b"\x00\x01\xc1\x00\x00" + _U16.pack(PROGRAM_NUMBER) + _U16.pack(0xE000 | PMT_PID))
        pcr_pid = VIDEO_PID if has_video else AUDIO_PID
        streams = b""
        if has_video:
            streams += bytes((video_type,)) + _U16.pack(0xE000 | VIDEO_PID) + _U16.pack(0xF000)
        if has_audio:
            streams += bytes((STREAM_TYPE_AAC,)) + _U16.pack(0xE000 | AUDIO_PID) + _U16.pack(0xF000)
        body = _U16.pack(PROGRAM_NUMBER) + b"\xc1\x00\x00" + _U16.pack(0xE000 | pcr_pid) + _U16.pack(0xF000) + streams
        pmt = _section(0x02, body)
        return self._header(PAT_PID, True, False) + pat + self._header(PMT_PID, True, False) + pmt

    def pes(
        self,
        pid: int,
        stream_id: int,
        data: bytes | bytearray,
        pts: int,
        dts: int,
        pcr: int | None = None,
        random_access: bool = False,
        prefix: bytes = b"",
        start: int = 0,
    ) -> bytes | bytearray:
        """One PES packet (an access unit) as TS packets; `pts`/`dts`/`pcr` in 90 kHz units.

        The access unit is `prefix + data[start:]` (start <= len(data)), so a caller whose frame already
        lies in a buffer (an FLV payload after its tag header) passes the buffer and
        the few bytes to put before it, and the frame is copied once, into the packets.
        `pcr` (the clock at this packet's arrival) goes into the first packet's
        adaptation field, as does the random access indicator for keyframes.
        """
        pts &= _MASK33
        dts &= _MASK33
        end = len(data)
        extra = len(prefix) - start
        n = end + extra  # the access unit's size
        # The PES header in one struct call: start code and stream id, length, flags, PTS (and DTS).
        if pts != dts:
            # Video PES may exceed 16 bits; a length of 0 means "unbounded" there (video only).
            length = 13 + n if n <= 0xFFFF - 13 and stream_id != VIDEO_STREAM_ID else 0
            head = _PES_PTS_DTS.pack(
                0x100 | stream_id, length, 0x80, 0xC0, 10,
                0x31 | ((pts >> 29) & 0x0E), ((pts >> 14) & 0xFFFE) | 1, ((pts << 1) & 0xFFFE) | 1,
                0x11 | ((dts >> 29) & 0x0E), ((dts >> 14) & 0xFFFE) | 1, ((dts << 1) & 0xFFFE) | 1,
            )  # fmt: skip
        else:
            length = 8 + n if n <= 0xFFFF - 8 and stream_id != VIDEO_STREAM_ID else 0
            head = _PES_PTS.pack(
                0x100 | stream_id, length, 0x80, 0x80, 5,
                0x21 | ((pts >> 29) & 0x0E), ((pts >> 14) & 0xFFFE) | 1, ((pts << 1) & 0xFFFE) | 1,
            )  # fmt: skip
        cc = self.cc[pid]
        # The first packet's header and adaptation field (PCR, random access indicator).
        if pcr is not None:
            pcr &= _MASK33
            first = _TS_PCR.pack(
                0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30 | cc, 7,
                0x50 if random_access else 0x10, pcr >> 1, ((pcr & 1) << 15) | 0x7E00,
            )  # fmt: skip
        elif random_access:
            first = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30 | cc, 1, 0x40))
        else:
            plain = _PLAIN_FIRST.get(pid)
            first = (plain or _headers(pid)[1])[cc]
        room = PACKET_SIZE - len(first) - len(head)  # access unit bytes the first packet can take
        if n < room:
            # A PES in one packet: stuff its adaptation field to fill the packet.
            self.cc[pid] = (cc + 1) & 0x0F
            stuff = room - n
            if len(first) > 4:
                first = first[:4] + bytes((first[4] + stuff,)) + first[5:] + b"\xff" * stuff
            else:
                first = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30 | cc)) + _STUFFING[stuff]
            return b"".join((first, head, prefix, data[start:] if start else data))
        cut = room - extra  # where in `data` the first packet ends
        if cut < start:  # a prefix longer than the first packet takes (huge parameter sets): one copy more
            return self.pes(pid, stream_id, prefix + data[start:], pts, dts, pcr, random_access)
        full, tail = divmod(n - room, PAYLOAD_SIZE)
        if full <= _GROUP:
            parts = [b"".join((first, head, prefix, data[start:cut])), *_chunker(full).unpack_from(data, cut)]
        else:
            parts = [b"".join((first, head, prefix, data[start:cut])), *_chunks(data, cut, full)]
        if tail:
            parts.append(_STUFFING[PAYLOAD_SIZE - tail] + data[end - tail :])
            full += 1
        # One join puts the constant header before every packet but the first; then the
        # counters (and the last packet's adaptation field bit) are patched in place.
        out = (_SEPARATORS.get(pid) or _headers(pid)[0]).join(parts)
        cc = (cc + 1) & 0x0F
        out[PACKET_SIZE + 3 :: PACKET_SIZE] = _CC_RUN[cc : cc + full] if full < _CC_RUN_MAX else _cc_run(cc, full)
        if tail:
            out[-PAYLOAD_SIZE - 1] |= 0x20  # adaptation_field_control 11: stuffing, then payload
        self.cc[pid] = (cc + full) & 0x0F
        return out
