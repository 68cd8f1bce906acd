"""What the HTTP side (API, metrics, probes) reads of the running node.

The composition root implements these; `net/` never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.core import Metric

from tidecast.live.hub import Hub
from tidecast.net.rates import Rates
from tidecast.sysinfo import CpuSampler

MetricSource = Callable[[], Iterable[Metric]]
Reply = Callable[..., web.Response]  # the API's SRS envelope: reply(request, code=0, **fields)
ApiRoutes = Callable[[Reply], list[web.RouteDef]]  # more /api/v1 routes, built with the envelope
StreamDetails = Callable[[str, str, str], dict[str, Any]]  # (vhost, app, stream) -> fields for its API object


class NodeStatus(Protocol):
    hub: Hub
    started: float  # wall clock
    cpu: CpuSampler
    rates: Rates
    connections_total: int
    rejected_connections: int
    reloads: int
    reload_failures: int
    reload_state: dict[str, Any]
    draining: bool
    api_service_id: str
    metric_sources: list[MetricSource]
    api_routes: list[ApiRoutes]
    stream_details: list[StreamDetails]

    @property
    def connection_count(self) -> int: ...

    @property
    def is_ready(self) -> bool: ...

    async def reload(self, source: str = "api") -> bool: ...

    def admit(self, conn: object) -> bool: ...

    def release(self, conn: object) -> None: ...


class ClusterDirectory(Protocol):
    """The origin cluster's answers for `/api/v1/clusters` and `/api/v1/cluster`."""

    def clusters_query(self, query: Any) -> dict[str, Any]: ...

    async def cluster_view(self, local_streams: list[dict[str, Any]]) -> dict[str, Any]: ...


HlsDemand = Callable[[str, str, str], None]  # (vhost, app, stream): an HLS request keeps an edge pulling
HlsWriting = Callable[[str], bool]  # (playlist file path): a publisher of this process writes it
