"""The RTMP handshake, both roles.

The server answers the simple handshake (random S1, S2 echoing C1) and the
"complex" digest handshake that Flash players and some encoders insist on:
when C1 carries a valid HMAC-SHA256 digest (either block layout), S1 and S2
carry the server's digests as those clients verify them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time

from tidecast.errors import ProtocolError

RTMP_VERSION = 3
PACKET_SIZE = 1536
DIGEST_SIZE = 32
_BLOCK = 764
_U32 = struct.Struct(">I")

_KEY_TAIL = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
PLAYER_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
PLAYER_KEY_SHORT = PLAYER_KEY[:30]
SERVER_KEY_SHORT = SERVER_KEY[:36]
# The version field we put in S1; a nonzero value tells clients we speak digests.
SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))


class HandshakeError(ProtocolError):
    """Bytes that are not an RTMP handshake."""


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _digest_offset(packet: bytes, schema: int) -> int:
    """Where the 32-byte digest sits in C1/S1 for block layout `schema`.

    Schema 0 puts the key block first and the digest block second; schema 1
    the other way round. Inside the digest block the first four bytes, summed,
    give the digest's position.
    """
    base = 8 + _BLOCK if schema == 0 else 8
    offset = sum(packet[base : base + 4]) % (_BLOCK - DIGEST_SIZE - 4)
    return base + 4 + offset


def _digest_of(packet: bytes, offset: int, key: bytes) -> bytes:
    return _hmac(key, packet[:offset] + packet[offset + DIGEST_SIZE :])


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """The schema and digest of a digest-handshake C1, or None for a simple one."""
    if c1[4:8] == b"\x00\x00\x00\x00":
        return None
    for schema in (0, 1):
        offset = _digest_offset(c1, schema)
        digest = c1[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(digest, _digest_of(c1, offset, PLAYER_KEY_SHORT)):
            return schema, digest
    return None


def _signed_packet(schema: int, key: bytes, version: bytes) -> bytes:
    packet = bytearray(_U32.pack(int(time.monotonic() * 1000) & 0xFFFFFFFF) + version + os.urandom(PACKET_SIZE - 8))
    offset = _digest_offset(bytes(packet), schema)
    packet[offset : offset + DIGEST_SIZE] = _digest_of(bytes(packet), offset, key)
    return bytes(packet)


def _response(peer_digest: bytes, key: bytes) -> bytes:
    """S2/C2 of the digest handshake: random bytes signed with a key derived from the peer's digest."""
    body = os.urandom(PACKET_SIZE - DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


class ServerHandshake:
    """C0+C1 in, S0+S1+S2 out, then C2 in; `leftover` holds what followed C2."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._replied = False
        self.done = False
        self.complex = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        self._buf += data
        reply = b""
        if not self._replied:
            if self._buf[:1] and self._buf[0] != RTMP_VERSION:
                raise HandshakeError(f"RTMP handshake: version byte {self._buf[0]} is not 3; is this an RTMP client?")
            if len(self._buf) < 1 + PACKET_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
            del self._buf[: 1 + PACKET_SIZE]
            reply = self._reply(c1)
            self._replied = True
        if len(self._buf) >= PACKET_SIZE:
            self.leftover = bytes(self._buf[PACKET_SIZE:])
            self._buf.clear()
            self.done = True
        return reply

    def _reply(self, c1: bytes) -> bytes:
        found = find_client_digest(c1)
        if found is None:
            s1 = _U32.pack(0) + b"\x00\x00\x00\x00" + os.urandom(PACKET_SIZE - 8)
            s2 = c1
        else:
            schema, digest = found
            self.complex = True
            s1 = _signed_packet(schema, SERVER_KEY_SHORT, SERVER_VERSION)
            s2 = _response(digest, SERVER_KEY)
        return bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake:
    """The client side (edge pull/push): simple handshake, which every server accepts."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False
        self.leftover = b""
        self._c1 = b""

    def start(self) -> bytes:
        self._c1 = _U32.pack(0) + b"\x00\x00\x00\x00" + os.urandom(PACKET_SIZE - 8)
        return bytes((RTMP_VERSION,)) + self._c1

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        self._buf += data
        if self._buf[:1] and self._buf[0] != RTMP_VERSION:
            raise HandshakeError(f"RTMP handshake: server answered version {self._buf[0]}, expected 3")
        need = 1 + 2 * PACKET_SIZE
        if len(self._buf) < need:
            return b""
        s1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
        self.leftover = bytes(self._buf[need:])
        self._buf.clear()
        self.done = True
        return s1  # C2 echoes S1
