"""An MPEG-TS muxer for HLS: PAT/PMT, PES with PTS/DTS, PCR, continuity counters.

One program: H.264 on PID 0x100 (stream type 0x1B) and AAC/ADTS on PID 0x101
(0x0F), the PMT on 0x1001. Each PES is cut into 188-byte packets in one pass;
the last packet is padded through its adaptation field, as the standard asks.
"""

from __future__ import annotations

import struct

PACKET_SIZE = 188
PMT_PID = 0x1001
VIDEO_PID = 0x100
AUDIO_PID = 0x101
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC = 0x0F
VIDEO_STREAM_ID = 0xE0
AUDIO_STREAM_ID = 0xC0


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _timestamp(prefix: int, value: int) -> bytes:
    value &= 0x1FFFFFFFF
    return bytes(
        (
            (prefix << 4) | (((value >> 30) & 0x07) << 1) | 1,
            (value >> 22) & 0xFF,
            (((value >> 15) & 0x7F) << 1) | 1,
            (value >> 7) & 0xFF,
            ((value & 0x7F) << 1) | 1,
        )
    )


def _pcr(base: int) -> bytes:
    base &= 0x1FFFFFFFF
    return bytes(
        ((base >> 25) & 0xFF, (base >> 17) & 0xFF, (base >> 9) & 0xFF, (base >> 1) & 0xFF, ((base & 1) << 7) | 0x7E, 0)
    )


def _section(table_id: int, body: bytes) -> bytes:
    """A PSI section (pointer field included), CRC appended, padded to one packet's payload."""
    length = len(body) + 4  # + CRC
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF))
    section = head + body
    section += struct.pack(">I", crc32_mpeg2(section))
    payload = b"\x00" + section
    return payload + b"\xff" * (184 - len(payload))


class TsMuxer:
    """Turns access units into TS packets; keeps the continuity counters across segments."""

    def __init__(self) -> None:
        self.cc: dict[int, int] = {0: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}

    def _header(self, pid: int, start: bool, adaptation: bool) -> bytes:
        cc = self.cc[pid]
        self.cc[pid] = (cc + 1) & 0x0F
        return bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF, (0x30 if adaptation else 0x10) | cc))

    def tables(self, has_video: bool, has_audio: bool) -> bytes:
        """PAT and PMT, written at the start of every segment so each one plays alone."""
        pat = _section(0x00, b"\x00\x01\xc1\x00\x00" + b"\x00\x01" + struct.pack(">H", 0xE000 | PMT_PID))
        pcr_pid = VIDEO_PID if has_video else AUDIO_PID
        streams = b""
        if has_video:
            streams += bytes((STREAM_TYPE_H264,)) + struct.pack(">HH", 0xE000 | VIDEO_PID, 0xF000)
        if has_audio:
            streams += bytes((STREAM_TYPE_AAC,)) + struct.pack(">HH", 0xE000 | AUDIO_PID, 0xF000)
        pmt_body = b"\x00\x01\xc1\x00\x00" + struct.pack(">HH", 0xE000 | pcr_pid, 0xF000) + streams
        pmt = _section(0x02, pmt_body)
        return self._header(0, True, False) + pat + self._header(PMT_PID, True, False) + pmt

    def pes(self, pid: int, stream_id: int, data: bytes, pts: int, dts: int, pcr: bool, keyframe: bool) -> bytes:
        """One PES packet (an access unit) as TS packets; `pts`/`dts` in 90 kHz units."""
        if pts != dts:
            header = b"\x80\xc0\x0a" + _timestamp(3, pts) + _timestamp(1, dts)
        else:
            header = b"\x80\x80\x05" + _timestamp(2, pts)
        size = len(header) + len(data)
        # Video PES may exceed 16 bits; a length of 0 means "unbounded" there.
        length = size if size <= 0xFFFF and stream_id != VIDEO_STREAM_ID else 0
        pes = b"\x00\x00\x01" + bytes((stream_id,)) + struct.pack(">H", length) + header + data
        first_af = b""
        if pcr or keyframe:
            flags = (0x40 if keyframe else 0) | (0x10 if pcr else 0)
            first_af = bytes((flags,)) + (_pcr(dts) if pcr else b"")
        out: list[bytes] = []
        pos, end = 0, len(pes)
        view = memoryview(pes)
        while pos < end:
            af_body = first_af if pos == 0 else b""
            room = 184 - (1 + len(af_body) if af_body else 0)
            remaining = end - pos
            if remaining < room:
                stuff = room - remaining
                if af_body:
                    af_body += b"\xff" * stuff
                elif stuff == 1:
                    out.append(self._header(pid, pos == 0, True) + b"\x00")
                    out.append(view[pos:end].tobytes())
                    break
                else:
                    af_body = b"\x00" + b"\xff" * (stuff - 2)
                room = remaining
            head = self._header(pid, pos == 0, bool(af_body))
            if af_body:
                head += bytes((len(af_body),)) + af_body
            out.append(head)
            out.append(view[pos : pos + room].tobytes())
            pos += room
        return b"".join(out)
