"""A big-endian bit reader for codec headers (H.265 SPS, AV1 sequence header, VP9 frame header).

Linear in what it reads: each read converts only the bytes it spans, so a
long header costs O(n), never O(n²) as shifting one big integer would. Input
is capped (`MAX_HEADER`): these headers are a few hundred bytes, and a
publisher must not make the API or the HLS muxer chew on megabytes.
"""

from __future__ import annotations

from tidecast.errors import ProtocolError

MAX_HEADER = 64 * 1024  # a 16-bit NAL length in hvcC/avcC: nothing legitimate is bigger


def unescape(nal: bytes | memoryview, what: str) -> bytes:
    """The RBSP of an H.264/H.265 NAL unit: emulation prevention bytes (00 00 03) dropped."""
    if len(nal) > MAX_HEADER:
        raise ProtocolError(f"{what}: {len(nal)} bytes, more than the {MAX_HEADER} a parameter set may have")
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        if len(data) > MAX_HEADER:
            raise ProtocolError(f"{what}: {len(data)} bytes, more than the {MAX_HEADER} a header may have")
        self.data = bytes(data)
        self.pos = 0  # in bits
        self.end = len(data) * 8
        self.what = what  # names the structure in error messages

    def bits(self, n: int) -> int:
        if n <= 0:
            return 0
        end = self.pos + n
        if end > self.end:
            raise ProtocolError(f"{self.what}: truncated (wanted {n} bits at bit {self.pos} of {self.end})")
        first = self.pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self.data[first:last], "big")
        self.pos = end
        return (chunk >> (last * 8 - end)) & ((1 << n) - 1)

    def bit(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise ProtocolError(f"{self.what}: truncated at bit {pos}")
        self.pos = pos + 1
        return (self.data[pos >> 3] >> (7 - (pos & 7))) & 1

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise ProtocolError(f"{self.what}: truncated (skipping {n} bits at bit {self.pos} of {self.end})")
        self.pos += n

    def ue(self) -> int:
        """Exp-Golomb ue(v) (H.264/H.265)."""
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ProtocolError(f"{self.what}: bad exp-Golomb code at bit {self.pos}")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)

    def uvlc(self) -> int:
        """AV1 uvlc()."""
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.bits(zeros) + (1 << zeros) - 1
