"""Stand-ins for the admission types of `tidecast/live/admission.py` (the lead's contract).

The access package is written against that contract before the module exists.
When it lands, replace this file's body with
`from tidecast.live.admission import JoinRequest, Refusal` so that both sides
share one class; nothing else in the package needs to change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int  # SRS error code where SRS has one
    reason: str  # short, no secrets; shown to the client and logged


@dataclass(slots=True)
class JoinRequest:
    action: str  # "connect" | "publish" | "play"
    client_id: str
    ip: str
    vhost: str
    app: str
    stream: str
    param: str  # the query string with its leading "?", or ""
    tc_url: str
    page_url: str
    protocol: str  # "rtmp" | "flv" | "hls" | "mp4"
    stream_id: str
    server_id: str
