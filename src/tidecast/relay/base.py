"""What exec, transcode and ingest share: a set of wanted processes per stream, kept in step.

A kind says which processes a live stream (or, for ingest, the config alone)
wants, as `Spec`s; this base starts what is missing, stops what is no longer
wanted, and restarts a process whose command line a reload changed. Publish and
unpublish never block the caller: stops run as tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from tidecast.config import Config
from tidecast.relay.supervisor import Redirects, RestartPolicy, Supervised, Supervisor
from tidecast.relay.vars import StreamInfo

log = logging.getLogger("tidecast.relay")

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Spec:
    name: str  # unique within the stream, e.g. the engine name or "publish #1"
    argv: tuple[str, ...]
    redirects: Redirects = field(default_factory=Redirects)
    labels: tuple[tuple[str, str], ...] = ()
    policy: RestartPolicy = field(default_factory=RestartPolicy)


class ProcessRelay:
    """Base of ExecManager, TranscodeManager and IngestManager."""

    kind = "process"

    def __init__(self, config: Config, supervisor: Supervisor | None = None, cwd: str | None = None) -> None:
        self.config = config
        self.supervisor = supervisor or Supervisor()
        self.cwd = cwd
        self.streams: dict[Key, StreamInfo] = {}
        self.running: dict[Key, dict[str, tuple[Spec, Supervised]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ what a kind defines

    def wanted(self, info: StreamInfo, config: Config) -> list[Spec]:
        raise NotImplementedError

    # ------------------------------------------------------------ stream events

    def on_publish(self, info: StreamInfo) -> None:
        self.streams[info.key] = info
        self._sync(info.key)

    def on_unpublish(self, vhost: str, app: str, stream: str) -> None:
        key = (vhost, app, stream)
        self.streams.pop(key, None)
        self._sync(key)

    def reload(self, config: Config) -> None:
        self.config = config
        for key in {*self.streams, *self.running}:
            self._sync(key)

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and wait for them: the drain path."""
        self.streams.clear()
        for key in list(self.running):
            self._sync(key)
        await self.drain()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ keeping in step

    def _sync(self, key: Key) -> None:
        info = self.streams.get(key)
        specs: list[Spec] = []
        if info is not None:
            try:
                specs = self.wanted(info, self.config)
            except ValueError as exc:
                log.error("%s %s: %s", self.kind, info.label, exc)
        wanted = {s.name: s for s in specs}
        current = self.running.setdefault(key, {})
        for name, (spec, proc) in list(current.items()):
            if wanted.get(name) != spec:
                del current[name]
                self._stop(proc)
        for name, spec in wanted.items():
            if name not in current:
                current[name] = (spec, self._start(key, spec))
        if not current:
            del self.running[key]

    def _start(self, key: Key, spec: Spec) -> Supervised:
        label = "/".join(key) if key != ("", "", "") else ""
        proc = Supervised(
            self.kind,
            f"{label} {spec.name}".strip(),
            list(spec.argv),
            labels=dict(spec.labels),
            policy=spec.policy,
            redirects=spec.redirects,
            cwd=self.cwd,
        )
        return self.supervisor.add(proc)

    def _stop(self, proc: Supervised) -> None:
        task = asyncio.get_running_loop().create_task(self.supervisor.remove(proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ reporting

    def processes(self, vhost: str, app: str, stream: str) -> list[Supervised]:
        return [proc for _, proc in self.running.get((vhost, app, stream), {}).values()]

    def describe(self) -> list[dict[str, Any]]:
        return [proc.describe() for procs in self.running.values() for _, proc in procs.values()]

    def metrics(self) -> Iterator[Metric]:
        return self.supervisor.metrics()
