"""Access control: who may connect, publish and play.

The admission path awaits each `Gate` of a vhost in order and stops at the
first `Refusal`; `Observer`s hear of clients leaving. Build them from a vhost's
settings with `gates_for` and `observers_for`; one `HookCaller` serves the
whole server (it holds the HTTP session, the bounds and the hook metrics).

Order, as in SRS with tidecast's signed URLs slotted in before the hooks
(local checks first; the hook server only sees clients that passed them):
security (publish/play) → refer → signed_url (publish/play) → http_hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from tidecast.access._contract import JoinRequest, Refusal
from tidecast.access.hooks import HookCaller, HookGate, HookObserver
from tidecast.access.security import ReferGate, SecurityGate
from tidecast.access.signed import SignedUrlGate
from tidecast.config.model import Vhost

__all__ = [
    "HookCaller",
    "HookGate",
    "HookObserver",
    "JoinRequest",
    "ReferGate",
    "Refusal",
    "SecurityGate",
    "SignedUrlGate",
    "gates_for",
    "observers_for",
]


class AccessGate(Protocol):
    async def check(self, request: JoinRequest) -> Refusal | None: ...


def gates_for(
    vhost: Vhost, caller: HookCaller, service_id: str = "", env: Mapping[str, str] | None = None
) -> list[AccessGate]:
    """The gates `vhost` asks for, in checking order; an empty list when it asks for none.

    Raises ConfigError when signed_url's secret cannot be read (build the gates
    while loading or reloading a config, so a bad secret refuses the reload).
    """
    gates: list[AccessGate] = []
    if vhost.security.enabled:
        gates.append(SecurityGate(vhost.security))
    if vhost.refer.enabled:
        gates.append(ReferGate(vhost.refer))
    if vhost.signed_url.enabled:
        gates.append(SignedUrlGate.from_settings(vhost.signed_url, vhost.name, env))
    if vhost.http_hooks.enabled:
        gates.append(HookGate(caller, vhost.http_hooks, service_id))
    return gates


def observers_for(vhost: Vhost, caller: HookCaller, service_id: str = "", cwd: str | None = None) -> list[HookObserver]:
    """The observers for `vhost`'s notification hooks (none when http_hooks is off)."""
    if not vhost.http_hooks.enabled:
        return []
    return [HookObserver(caller, vhost.http_hooks, service_id, cwd)]
