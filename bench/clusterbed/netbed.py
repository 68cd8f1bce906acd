"""Pod networking: one network namespace per pod on a bridge, or distinct 127.0.x.y addresses.

Namespace mode is what a pod is: its own loopback, its own IP, the default
ports 1935/1985/8080 free for every pod. The bridge and every namespace carry
the run's id in their names, so two runs never collide, and `close()` removes
them (it is also registered with atexit and called from the signal handlers of
the command line, so a failed or interrupted run leaves nothing behind).

Loopback mode needs no privileges: pod N listens on 127.<a>.<b>.N, still on the
default ports, since each address has its own port space.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger("clusterbed.net")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> tuple[bool, str]:
    """Can this process create namespaces and a bridge? (root, the ip tool, CAP_NET_ADMIN)."""
    if shutil.which("ip") is None:
        return False, "the ip tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return False, "not root"
    probe = f"tcbp{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return False, f"ip netns add failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    probe_br = f"tcbp{secrets.token_hex(3)}"
    try:
        _ip("link", "add", probe_br, "type", "bridge")
    except subprocess.CalledProcessError as exc:
        return False, f"cannot create a bridge: {exc.stderr.strip()}"
    _ip("link", "del", probe_br, check=False)
    return True, "ok"


@dataclass
class PodNet:
    ip: str
    netns: str | None  # None in loopback mode

    def wrap(self, argv: list[str]) -> list[str]:
        """The command as it runs inside the pod."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv


class Network:
    """Hands out pod addresses; `service_ip` is where the balancer listens (the host side)."""

    def __init__(self, mode: str = "auto") -> None:
        self.run_id = secrets.token_hex(3)
        self.reason = ""
        if mode == "auto":
            ok, why = netns_available()
            mode = "netns" if ok else "loopback"
            if not ok:
                self.reason = why
        self.mode = mode
        self.next_host = 10
        self.namespaces: list[str] = []
        self.veths: dict[str, str] = {}  # namespace -> the host end of its veth pair
        self.used_hosts: set[int] = set()
        self.links: list[str] = []
        self.closed = False
        if mode == "netns":
            self._make_bridge()
        else:
            a, b = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
            self.prefix = f"127.{a}.{b}."
            self.service_ip = f"{self.prefix}1"
        atexit.register(self.close)

    def _make_bridge(self) -> None:
        used = {ipaddress.ip_interface(a).network for a in _addresses()}
        for _ in range(50):
            net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(255)}.0/24")
            if not any(net.overlaps(u) for u in used):
                break
        self.prefix = str(net.network_address).rsplit(".", 1)[0] + "."
        self.service_ip = f"{self.prefix}1"
        self.bridge = f"tcb{self.run_id}"
        _ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        _ip("addr", "add", f"{self.service_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def pod(self, name: str) -> PodNet:
        """A new address (and namespace): like Kubernetes, a new pod gets a new IP."""
        host = self.next_host
        self.next_host += 1
        if host > 250:
            raise RuntimeError("clusterbed: out of pod addresses (240 pods per run)")
        return self.attach(host)

    def attach(self, host: int) -> PodNet:
        ip = f"{self.prefix}{host}"
        if self.mode != "netns":
            return PodNet(ip, None)
        ns = f"tcb-{self.run_id}-{host}"
        if ns in self.namespaces:
            raise RuntimeError(f"clusterbed: namespace {ns} is still in use")
        outside, inside = f"tc{self.run_id}h{host}", f"tc{self.run_id}p{host}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self.veths[ns] = outside
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        if host in self.used_hosts:
            # A StatefulSet pod back on its old address has a new MAC: the host and the other pods
            # still hold the old one in their neighbour tables and would send into the void for
            # up to ~30 s (seen as a 28 s "start to ready" and edges timing out on the new origin).
            _ip("neigh", "flush", "to", ip, "dev", self.bridge, check=False)
            for other in self.namespaces:
                if other != ns:
                    _ip("-n", other, "neigh", "flush", "to", ip, check=False)
        self.used_hosts.add(host)
        return PodNet(ip, ns)

    def release(self, pod: PodNet) -> None:
        """A deleted pod's namespace goes with it (its veth pair too)."""
        if pod.netns and pod.netns in self.namespaces:
            self.namespaces.remove(pod.netns)
            self._drop_veth(pod.netns)
            _ip("netns", "del", pod.netns, check=False)

    def _drop_veth(self, ns: str) -> None:
        # Deleting one end removes the pair at once; a deleted namespace frees its end only when the
        # kernel gets round to destroying it, so the host side would linger for a moment.
        outside = self.veths.pop(ns, None)
        if outside is not None:
            _ip("link", "del", outside, check=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ns in list(self.namespaces):
            self._drop_veth(ns)
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        for link in self.links:
            _ip("link", "del", link, check=False)
        self.links.clear()


def _addresses() -> list[str]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        with contextlib.suppress(ValueError, IndexError):
            addrs.append(parts[parts.index("inet") + 1])
    return addrs


def leftovers() -> list[str]:
    """Namespaces of clusterbed runs still present (a test asserts this is empty after a run)."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("tcb-")]
