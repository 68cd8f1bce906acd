"""Every size and time bound of the live core in one place (docs/security.md lists them)."""

from __future__ import annotations

from typing import Final

from tidecast.config.model import DEFAULT_VHOST

__all__ = [
    "CATCH_UP_BYTES",
    "CONGESTED_BYTES",
    "DEFAULT_VHOST",
    "DIRECT_BURST_BYTES",
    "GOP_CACHE_BYTES",
    "PLAYER_QUEUE_BYTES",
    "SEND_TIMEOUT_S",
]

# A transport holding more than this has filled the kernel's socket buffer too:
# the peer is not reading fast enough, so stop writing and start queueing.
CONGESTED_BYTES: Final = 256 * 1024
# A catching-up player is written at most this much per flush, so a player that
# reads slowly holds a bounded transport buffer instead of a copy of its backlog.
CATCH_UP_BYTES: Final = 1024 * 1024
# A join burst (metadata, headers, GOP) larger than this goes through the
# player's budgeted queue rather than one write.
DIRECT_BURST_BYTES: Final = 2 * 1024 * 1024
# A player's private backlog, besides `queue_length` in media time: constant
# timestamps must not defeat the bound.
PLAYER_QUEUE_BYTES: Final = 16 * 1024 * 1024
# The GOP cache, besides `gop_cache_max_frames`.
GOP_CACHE_BYTES: Final = 64 * 1024 * 1024
# A player whose socket accepted nothing for this long is closed.
SEND_TIMEOUT_S: Final = 30.0
