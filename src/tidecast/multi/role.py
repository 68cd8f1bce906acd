"""What a worker process is told by its supervisor: its index, every worker's private ports, a secret."""

from __future__ import annotations

import json
from dataclasses import dataclass

TOKEN_HEADER = "X-Tidecast-Worker"
ROLE_ENV = "TIDECAST_WORKER_ROLE"  # not argv: /proc/PID/environ is readable by the owner only


@dataclass(frozen=True)
class Sibling:
    """One worker's private loopback ports: its own API (answers for that worker only) and RTMP (relays)."""

    index: int
    api_port: int
    rtmp_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass(frozen=True)
class WorkerRole:
    index: int
    workers: tuple[Sibling, ...]  # every worker, this one included, by index
    token: str  # the private ports answer only requests carrying it
    supervisor_pid: int

    @property
    def me(self) -> Sibling:
        return self.workers[self.index]

    @property
    def others(self) -> tuple[Sibling, ...]:
        return tuple(w for w in self.workers if w.index != self.index)

    @property
    def count(self) -> int:
        return len(self.workers)

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "workers": [[w.index, w.api_port, w.rtmp_port] for w in self.workers],
                "token": self.token,
                "supervisor": self.supervisor_pid,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerRole:
        try:
            doc = json.loads(text)
            workers = tuple(Sibling(int(i), int(a), int(r)) for i, a, r in doc["workers"])
            role = cls(int(doc["index"]), workers, str(doc["token"]), int(doc["supervisor"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a worker role from a tidecast supervisor ({exc})") from exc
        if not 0 <= role.index < len(workers) or [w.index for w in workers] != list(range(len(workers))):
            raise ValueError("worker index out of range")
        return role
