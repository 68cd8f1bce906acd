"""SRS's `security` (allow/deny by client address) and `refer` (page-URL domain) checks.

Pure functions over the vhost settings, plus the two `Gate`s the admission
path awaits. The semantics are SRS's code, which differs from the comment in
its full.conf:

* security off: everyone is admitted.
* security on: the deny rules are tried first, and any match refuses
  (1053). Then, if there is at least one allow rule for any method, the client
  must match an allow rule for its method (1054). With deny rules only, whoever
  is not denied is admitted; with no rules at all, everyone is refused (1054).
* A rule's target is `all`, an address compared as text (SRS's rule), or a
  network. SRS knows IPv4 networks only; tidecast also matches IPv6 ones and
  reads an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`) as its IPv4 address.
* refer: each domain must be the end of the page URL's host (`github.com`
  admits `www.github.com` and also `xgithub.com`, as SRS does). A missing list
  admits everyone. RTMP checks `all` at connect and `play`/`publish` after;
  HTTP has no connect, so an HTTP play is checked against `all` and `play`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from tidecast.access._contract import JoinRequest, Refusal
from tidecast.config.model import Refer, Security, SecurityRule

ERROR_SYSTEM_SECURITY_DENY = 1053  # SRS: a deny rule matched
ERROR_SYSTEM_SECURITY_ALLOW = 1054  # SRS: no allow rule matched
ERROR_RTMP_ACCESS_DENIED = 2015  # SRS: the refer check failed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(ip: str) -> Address | None:
    """The address `ip` names (IPv4-mapped IPv6 read as IPv4), or None if it is not one."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=1024)
def _network(target: str) -> Network | None:
    if "/" not in target:
        return None
    try:
        return ipaddress.ip_network(target, strict=False)
    except ValueError:
        return None


def rule_matches(rule: SecurityRule, method: str, ip: str) -> bool:
    if rule.method != method:
        return False
    if rule.target in ("all", ip):
        return True
    address = client_address(ip)
    if address is None:
        return False
    network = _network(rule.target)
    if network is None:
        single = client_address(rule.target)
        return single is not None and single == address
    return address.version == network.version and address in network


def security_check(settings: Security, method: str, ip: str) -> Refusal | None:
    """SRS's verdict for a `method` ("publish" or "play") from `ip`; None admits."""
    if not settings.enabled:
        return None
    rules = settings.rules
    if not rules:  # SRS: "not allowed by any of 0/0 rules"
        return Refusal(ERROR_SYSTEM_SECURITY_ALLOW, f"security: no rules, so every {method} is refused")
    for rule in rules:
        if rule.action == "deny" and rule_matches(rule, method, ip):
            return Refusal(ERROR_SYSTEM_SECURITY_DENY, f"security: {method} from {ip} denied by rule {rule.target}")
    allows = [rule for rule in rules if rule.action == "allow"]
    if not allows:
        return None
    if any(rule_matches(rule, method, ip) for rule in allows):
        return None
    return Refusal(ERROR_SYSTEM_SECURITY_ALLOW, f"security: {method} from {ip} matches no allow rule")


def page_domain(page_url: str) -> str:
    """The host of a page URL, as SRS cuts it: after `://`, before the first `/` and `:`."""
    domain = page_url
    if "://" in domain:
        domain = domain.split("://", 1)[1]
    domain = domain.split("/", 1)[0]
    return domain.split(":", 1)[0]


def refer_matches(page_url: str, domains: Iterable[str] | None) -> bool:
    if domains is None:
        return True
    host = page_domain(page_url)
    return any(domain and host.endswith(domain) for domain in domains)


def refer_check(settings: Refer, request: JoinRequest) -> Refusal | None:
    if not settings.enabled:
        return None
    if request.action == "connect":
        lists = [settings.all]
    elif request.protocol == "rtmp":
        lists = [settings.play if request.action == "play" else settings.publish]
    else:
        lists = [settings.all, settings.play if request.action == "play" else settings.publish]
    for domains in lists:
        if not refer_matches(request.page_url, domains):
            shown = page_domain(request.page_url) or "(no page URL)"
            return Refusal(ERROR_RTMP_ACCESS_DENIED, f"refer: page {shown} is not allowed to {request.action}")
    return None


class SecurityGate:
    """`Gate` for `security`: publish and play only (connect has no method yet)."""

    def __init__(self, settings: Security) -> None:
        self.settings = settings

    async def check(self, request: JoinRequest) -> Refusal | None:
        if request.action not in ("publish", "play"):
            return None
        return security_check(self.settings, request.action, request.ip)


class ReferGate:
    """`Gate` for `refer`."""

    def __init__(self, settings: Refer) -> None:
        self.settings = settings

    async def check(self, request: JoinRequest) -> Refusal | None:
        return refer_check(self.settings, request)
