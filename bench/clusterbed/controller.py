"""The controllers: a Deployment (RollingUpdate, rollback) and a StatefulSet (ordered update).

The Deployment follows the Kubernetes rolling update rules: new pods are
created while old + new <= replicas + maxSurge; old pods are deleted while the
available pods (ready for minReadySeconds) stay >= replicas - maxUnavailable;
unready old pods go first. A rollout that makes no progress for
progressDeadlineSeconds fails; `undo()` rolls back to the previous revision,
which is itself a rolling update. A canary is a second Deployment whose pods
share the Service (same role), as in the wiki's srs-edge-r5/r6 pair.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbed.netbed import Network
from clusterbed.pods import Pod, Timing, Version
from clusterbed.service import Endpoints

log = logging.getLogger("clusterbed.controller")


@dataclass
class Strategy:
    max_surge: int = 1
    max_unavailable: int = 0
    min_ready_s: float = 5.0
    progress_deadline_s: float = 30.0


@dataclass
class Cluster:
    """What every controller needs to make pods."""

    net: Network
    workroot: Path
    timing: Timing
    endpoints: Endpoints
    origins: Callable[[], list[str]]
    edge_hls: str = "fetch"  # fetch (hls_fetch on, origins share `nas`) | local (edges mux)
    nas: Path | None = None  # the origins' shared hls_path
    all_pods: list[Pod] = field(default_factory=list)
    terminations: list[asyncio.Task[None]] = field(default_factory=list)

    def make(self, name: str, role: str, version: Version, host_index: int | None = None) -> Pod:
        pod = Pod(
            name, role, version, self.net, self.workroot, self.origins(), self.timing, host_index,
            edge_hls=self.edge_hls, nas=self.nas,
        )  # fmt: skip
        pod.start()
        self.endpoints.watch(pod)
        self.all_pods.append(pod)
        return pod

    def delete(self, pod: Pod) -> asyncio.Task[None]:
        task = pod.delete()
        self.terminations.append(task)
        return task

    async def wait_terminations(self) -> None:
        if self.terminations:
            await asyncio.gather(*self.terminations, return_exceptions=True)


class Deployment:
    def __init__(self, cluster: Cluster, name: str, role: str, version: Version, replicas: int, strategy: Strategy):
        self.cluster = cluster
        self.name = name
        self.role = role
        self.replicas = replicas
        self.strategy = strategy
        self.history: list[Version] = [version]  # revisions, 1-based in messages
        self.pods: list[Pod] = []
        self.serial = 0

    @property
    def version(self) -> Version:
        return self.history[-1]

    def _new_pod(self) -> Pod:
        self.serial += 1
        pod = self.cluster.make(f"{self.name}-{self.serial}", self.role, self.version)
        self.pods.append(pod)
        return pod

    def live(self) -> list[Pod]:
        return [p for p in self.pods if p.terminating_since is None and p.exited_at is None]

    async def create(self, timeout: float = 60.0) -> None:
        while len(self.live()) < self.replicas:
            self._new_pod()
        await self.wait_available(timeout)

    async def wait_available(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(p.available(self.strategy.min_ready_s) for p in self.live()) < self.replicas:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: pods not available after {timeout:.0f}s: {self.live()}")
            await asyncio.sleep(0.1)

    async def rollout(self, version: Version) -> dict[str, Any]:
        """`kubectl set image`: a new revision, rolled out; returns what happened."""
        self.history.append(version)
        return await self._roll()

    async def undo(self) -> dict[str, Any]:
        """`kubectl rollout undo`: the previous revision becomes a new one."""
        previous = self.history[-2]
        self.history.append(previous)
        return await self._roll()

    async def _roll(self) -> dict[str, Any]:
        st = self.strategy
        target = self.version
        started = time.monotonic()
        last_progress = started
        progress_key: tuple[int, int] = (-1, -1)
        created: list[str] = []
        deleted: list[str] = []
        while True:
            live = self.live()
            new = [p for p in live if p.version == target]
            old = [p for p in live if p.version != target]
            available_new = [p for p in new if p.available(st.min_ready_s)]
            if not old and len(available_new) >= self.replicas:
                break
            key = (len(available_new), len(old))
            if key != progress_key:
                progress_key, last_progress = key, time.monotonic()
            elif time.monotonic() - last_progress > st.progress_deadline_s:
                log.warning("%s: rollout to %s made no progress for %.0fs", self.name, target, st.progress_deadline_s)
                return {
                    "ok": False,
                    "reason": "ProgressDeadlineExceeded",
                    "wall_s": round(time.monotonic() - started, 2),
                    "created": created,
                    "deleted": deleted,
                }
            while len(old) + len(new) < self.replicas + st.max_surge and len(new) < self.replicas:
                pod = self._new_pod()
                new.append(pod)
                created.append(pod.name)
            # Old pods that are not available cost nothing to remove.
            for pod in [p for p in old if not p.available(st.min_ready_s)]:
                self.cluster.delete(pod)
                deleted.append(pod.name)
                old.remove(pod)
            available = sum(p.available(st.min_ready_s) for p in old + new)
            spare = available - (self.replicas - st.max_unavailable)
            # A new pod that is not yet available must not be removed to make room: only old ones go.
            for pod in old[: max(0, spare)]:
                self.cluster.delete(pod)
                deleted.append(pod.name)
            # A surplus of new pods (undo while a bad surge pod runs) is trimmed, unready first.
            if len(new) > self.replicas:
                for pod in sorted(new, key=lambda p: p.available(st.min_ready_s))[: len(new) - self.replicas]:
                    self.cluster.delete(pod)
                    deleted.append(pod.name)
            await asyncio.sleep(0.1)
        return {
            "ok": True,
            "wall_s": round(time.monotonic() - started, 2),
            "created": created,
            "deleted": deleted,
        }

    async def scale(self, replicas: int) -> dict[str, Any]:
        """`kubectl scale`: grow and wait until available, or shrink (newest first, as ReplicaSets do)."""
        started = time.monotonic()
        self.replicas = replicas
        live = self.live()
        deleted = []
        for pod in sorted(live, key=lambda p: p.available(self.strategy.min_ready_s))[: max(0, len(live) - replicas)]:
            self.cluster.delete(pod)
            deleted.append(pod.name)
        while len(self.live()) < replicas:
            self._new_pod()
        if replicas:
            await self.wait_available(60.0)
        return {"ok": True, "wall_s": round(time.monotonic() - started, 2), "deleted": deleted}


class StatefulSet:
    """Pods NAME-0..N-1 with stable addresses; an update replaces them one at a time, highest ordinal first."""

    def __init__(self, cluster: Cluster, name: str, role: str, version: Version, replicas: int) -> None:
        self.cluster = cluster
        self.name = name
        self.role = role
        self.version = version
        self.replicas = replicas
        self.pods: dict[int, Pod] = {}
        self.hosts: dict[int, int] = {}

    def addresses(self) -> list[str]:
        prefix = self.cluster.net.prefix
        return [f"{prefix}{self.hosts[i]}" for i in range(self.replicas)]

    def reserve(self) -> None:
        """Stable identities first: edges list origin-N by address, as they would by DNS name."""
        for i in range(self.replicas):
            self.hosts[i] = self.cluster.net.next_host
            self.cluster.net.next_host += 1

    async def create(self, timeout: float = 60.0) -> None:
        for i in range(self.replicas):
            self.pods[i] = self.cluster.make(f"{self.name}-{i}", self.role, self.version, self.hosts[i])
        deadline = time.monotonic() + timeout
        while not all(p.ready for p in self.pods.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not ready after {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def rollout(self, version: Version, on_pod: Callable[[int, str], None] | None = None) -> dict[str, Any]:
        started = time.monotonic()
        self.version = version
        steps = []
        for i in reversed(range(self.replicas)):
            old = self.pods[i]
            t0 = time.monotonic()
            if on_pod:
                on_pod(i, "deleting")
            await self.cluster.delete(old)
            t1 = time.monotonic()
            self.pods[i] = self.cluster.make(f"{self.name}-{i}", self.role, version, self.hosts[i])
            while not self.pods[i].ready:
                if time.monotonic() - t1 > 60:
                    raise RuntimeError(f"{self.name}-{i}: the new pod is not ready after 60s")
                await asyncio.sleep(0.05)
            if on_pod:
                on_pod(i, "ready")
            steps.append(
                {
                    "pod": f"{self.name}-{i}",
                    "terminate_s": round(t1 - t0, 2),
                    "start_to_ready_s": round(time.monotonic() - t1, 2),
                    "old_exit_code": old.exit_code,
                    "old_killed": old.killed,
                }
            )
        return {"ok": True, "wall_s": round(time.monotonic() - started, 2), "steps": steps}
