"""Errors shared by the sans-I/O layers."""


class ProtocolError(Exception):
    """Malformed or unexpected bytes from a peer; closes only that connection."""
