"""The admission types the access package shares with the live core."""

from __future__ import annotations

from tidecast.live.admission import JoinRequest, Refusal

__all__ = ["JoinRequest", "Refusal"]
