"""A small DNS A/AAAA resolver for coworker discovery.

The system resolver cannot be pointed at another server, and discovery must
see every address of a headless Service, re-resolved often, so tidecast asks
the nameservers itself: those of /etc/resolv.conf (search domains and `ndots`
honoured, as Kubernetes pods need), or the one named by the environment
variable `TIDECAST_NAMESERVER` (`host[:port]`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import struct
from dataclasses import dataclass, field

A = 1
AAAA = 28
_HEADER = struct.Struct(">HHHHHH")


class DnsError(Exception):
    pass


@dataclass
class ResolverConfig:
    nameservers: list[tuple[str, int]] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1


def read_resolv_conf(path: str = "/etc/resolv.conf") -> ResolverConfig:
    config = ResolverConfig()
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            config.nameservers.append((parts[1], 53))
        elif parts[0] in ("search", "domain"):
            config.search = parts[1:]
        elif parts[0] == "options":
            for opt in parts[1:]:
                if opt.startswith("ndots:") and opt[6:].isdigit():
                    config.ndots = int(opt[6:])
    override = os.environ.get("TIDECAST_NAMESERVER", "")
    if override:
        host, _, port = override.rpartition(":") if override.count(":") == 1 else (override, "", "")
        config.nameservers = [(host or override, int(port) if port.isdigit() else 53)]
    if not config.nameservers:
        config.nameservers = [("127.0.0.1", 53)]
    return config


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    labels = b"".join(bytes((len(p),)) + p.encode("idna") for p in name.rstrip(".").split(".") if p)
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack(">HH", qtype, 1)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise DnsError("truncated name")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def decode_answer(data: bytes, qid: int) -> tuple[int, list[str]]:
    """(rcode, addresses) of a response to query `qid`."""
    if len(data) < 12:
        raise DnsError("short DNS response")
    rid, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    if rid != qid:
        raise DnsError("response to another query")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise DnsError("truncated answer")
        rtype, _cls, _ttl, rdlength = struct.unpack_from(">HHIH", data, pos)
        pos += 10
        rdata = data[pos : pos + rdlength]
        pos += rdlength
        if rtype == A and rdlength == 4:
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == AAAA and rdlength == 16:
            addresses.append(str(ipaddress.IPv6Address(rdata)))
    return flags & 0x0F, addresses


class _Query(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.answer: asyncio.Future[tuple[int, list[str]]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.answer.done():
            return
        try:
            self.answer.set_result(decode_answer(data, self.qid))
        except DnsError:
            pass

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _ask(server: tuple[str, int], name: str, qtype: int, timeout: float) -> tuple[int, list[str]]:
    loop = asyncio.get_running_loop()
    qid = random.randrange(0x10000)
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Query(qid), remote_addr=server)
    try:
        transport.sendto(encode_query(qid, name, qtype))
        async with asyncio.timeout(timeout):
            return await protocol.answer
    finally:
        transport.close()


def candidates(name: str, config: ResolverConfig) -> list[str]:
    if name.endswith("."):
        return [name]
    searched = [f"{name}.{domain}" for domain in config.search]
    return [name, *searched] if name.count(".") >= config.ndots else [*searched, name]


async def resolve_all(name: str, config: ResolverConfig | None = None, timeout: float = 1.0) -> list[str]:
    """Every A and AAAA address of `name`; an IP literal resolves to itself."""
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    config = config or read_resolv_conf()
    last_error: Exception | None = None
    for fqdn in candidates(name, config):
        for server in config.nameservers:
            try:
                results = await asyncio.gather(
                    _ask(server, fqdn, A, timeout), _ask(server, fqdn, AAAA, timeout), return_exceptions=True
                )
            except OSError as exc:
                last_error = exc
                continue
            addresses: list[str] = []
            answered = False
            for result in results:
                if isinstance(result, BaseException):
                    last_error = result if isinstance(result, Exception) else None
                    continue
                answered = True
                addresses += result[1]
            if addresses:
                return addresses
            if answered:
                break  # the server answered: no such name here, try the next search domain
    if last_error is not None and not isinstance(last_error, (TimeoutError, DnsError)):
        raise DnsError(f"resolving {name}: {last_error}")
    return []
