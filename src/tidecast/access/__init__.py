"""Access control: who may connect, publish and play.

The admission path awaits each `Gate` of a vhost in order and stops at the
first `Refusal`; `Observer`s hear of clients leaving. `AccessControl(config)`
is both, for every vhost of a config; or build a vhost's own with `gates_for`
and `observers_for`. One `HookCaller` serves the whole server (it holds the
HTTP session, the bounds and the hook metrics) and outlives reloads.

Order, as in SRS with tidecast's signed URLs slotted in before the hooks
(local checks first; the hook server only sees clients that passed them):
security (publish/play) → refer → signed_url (publish/play) → http_hooks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import Metric

from tidecast.access._contract import JoinRequest, Refusal
from tidecast.access.hooks import HookCaller, HookGate, HookObserver
from tidecast.access.security import ReferGate, SecurityGate
from tidecast.access.signed import SignedUrlGate
from tidecast.config.model import Config, Vhost

__all__ = [
    "AccessControl",
    "HookCaller",
    "HookGate",
    "HookObserver",
    "JoinRequest",
    "ReferGate",
    "Refusal",
    "SecurityGate",
    "SignedUrlGate",
    "admit",
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


async def admit(gates: list[AccessGate], request: JoinRequest) -> Refusal | None:
    """Run `gates` in order; the first refusal, or None when all admit."""
    for gate in gates:
        refusal = await gate.check(request)
        if refusal is not None:
            return refusal
    return None


class AccessControl:
    """Every vhost's gates and hook observers for one config: one `Gate` and one `Observer` for the server.

    Build a new one for each config (start, and each reload, before the swap:
    a bad signed_url secret raises ConfigError and the old config stays); pass
    the old one's `caller` so the HTTP session, the bounds and the hook counts
    carry over. `request.vhost` picks the vhost, with SRS's fallback to
    `__defaultVhost__`.
    """

    def __init__(
        self,
        config: Config,
        caller: HookCaller | None = None,
        service_id: str = "",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.config = config
        self.caller = caller if caller is not None else HookCaller()
        self._gates: dict[str, list[AccessGate]] = {}
        self._observers: dict[str, HookObserver | None] = {}
        for name, vhost in config.vhosts.items():
            self._gates[name] = gates_for(vhost, self.caller, service_id, env)
            observers = observers_for(vhost, self.caller, service_id, cwd)
            self._observers[name] = observers[0] if observers else None

    def _name(self, vhost: str) -> str:
        return self.config.vhost(vhost).name

    def gates(self, vhost: str) -> list[AccessGate]:
        return self._gates.get(self._name(vhost), [])

    def hooks(self, vhost: str) -> HookObserver | None:
        """The vhost's hook observer, for on_close byte counts, on_dvr and on_hls; None without hooks."""
        return self._observers.get(self._name(vhost))

    async def check(self, request: JoinRequest) -> Refusal | None:
        """`Gate`: the request's vhost's checks, in order."""
        return await admit(self.gates(request.vhost), request)

    def on_event(self, event: str, request: JoinRequest) -> None:
        """`Observer`: "close", "unpublish" or "stop" to the vhost's notification hooks."""
        observer = self.hooks(request.vhost)
        if observer is not None:
            observer.on_event(event, request)

    def metrics(self) -> Iterator[Metric]:
        return self.caller.metrics()
