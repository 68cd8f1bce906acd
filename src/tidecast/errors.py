"""Errors shared by the sans-I/O layers.

Two kinds, kept apart on purpose (as h11 does): `ProtocolError` is the peer's
fault and closes only that connection; `LocalProtocolError` is ours (a caller
used a session in an order the protocol forbids), is a bug to fix, and must not
be swallowed by the handlers that close misbehaving peers.
"""


class ProtocolError(Exception):
    """Malformed or unexpected bytes from a peer; closes only that connection."""


class LocalProtocolError(Exception):
    """This side misused a protocol object, e.g. answered a request that never came."""
