"""Prometheus metrics, computed at scrape time so the media path counts nothing extra."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from tidecast import __version__
from tidecast.net.node import NodeStatus
from tidecast.sysinfo import rss_kbyte


class ServerCollector(Collector):
    def __init__(self, server: NodeStatus) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        hub = server.hub
        uname = platform.uname()
        yield InfoMetricFamily(
            "srs_node_uname",
            "host kernel",
            value={"sysname": uname.system, "nodename": uname.node, "release": uname.release, "machine": uname.machine},
        )
        build = GaugeMetricFamily(
            "srs_build_info",
            "build and server identity",
            labels=["server", "service", "pid", "build_date", "major", "version", "code", "label", "tag"],
        )
        exporter = hub.config.exporter
        build.add_metric(
            [
                "tidecast",
                server.api_service_id,
                str(os.getpid()),
                "",
                __version__.split(".")[0],
                __version__,
                "tidecast",
                exporter.label,
                exporter.tag,
            ],
            1,
        )
        yield build
        yield GaugeMetricFamily("srs_cpu_percent", "process CPU percent", value=server.cpu.process_percent)
        yield GaugeMetricFamily("srs_memory", "process RSS in KB", value=rss_kbyte())
        recv, send = hub.total_bytes()
        yield CounterMetricFamily("srs_send_bytes", "bytes sent to clients", value=send)
        yield CounterMetricFamily("srs_receive_bytes", "bytes received from clients", value=recv)
        yield GaugeMetricFamily("srs_streams", "live streams", value=len(hub.streams))
        yield GaugeMetricFamily("srs_clients", "publishers and players", value=len(hub.clients))
        # Gauges by type so their names stay SRS's and do not clash with srs_clients.
        yield GaugeMetricFamily("srs_clients_total", "connections accepted", value=server.connections_total)
        refused = server.rejected_connections
        yield GaugeMetricFamily("srs_clients_errs_total", "connections refused or failed", value=refused)

        by_type: dict[str, int] = {}
        for client in hub.clients.values():
            by_type[client.type] = by_type.get(client.type, 0) + 1
        conns = GaugeMetricFamily("tidecast_connections", "open connections by type", labels=["type"])
        conns.add_metric(["tcp"], server.connection_count)
        for kind, n in sorted(by_type.items()):
            conns.add_metric([kind], n)
        yield conns

        labels = ["vhost", "app", "stream"]
        players = GaugeMetricFamily("tidecast_stream_players", "players of a stream", labels=labels)
        ingest = GaugeMetricFamily("tidecast_stream_ingest_kbps", "publisher bitrate, 30 s average", labels=labels)
        received = CounterMetricFamily("tidecast_stream_receive_bytes", "media bytes from the publisher", labels=labels)
        sent = CounterMetricFamily("tidecast_stream_send_bytes", "bytes sent to players", labels=labels)
        frames = CounterMetricFamily("tidecast_stream_frames", "media messages from the publisher", labels=labels)
        dropped = CounterMetricFamily(
            "tidecast_stream_dropped_frames", "frames skipped for slow players", labels=labels
        )
        for stream in hub.streams.values():
            key = [stream.vhost, stream.app, stream.name]
            players.add_metric(key, len(stream.players))
            ingest.add_metric(key, server.rates.kbps(stream.id)[0])
            received.add_metric(key, stream.recv_bytes)
            sent.add_metric(key, stream.send_bytes)
            frames.add_metric(key, stream.frames)
            dropped.add_metric(key, stream.dropped_frames)
        yield from (players, ingest, received, sent, frames, dropped)

        yield CounterMetricFamily("tidecast_reloads", "config reloads attempted", value=server.reloads)
        yield CounterMetricFamily(
            "tidecast_admission_refusals", "connects, publishes and plays refused by a gate", value=hub.refusals
        )
        yield CounterMetricFamily("tidecast_reload_failures", "config reloads refused", value=server.reload_failures)
        yield GaugeMetricFamily("tidecast_ready", "1 while accepting new work", value=1 if server.is_ready else 0)
        yield GaugeMetricFamily("tidecast_draining", "1 during a graceful quit", value=1 if server.draining else 0)
        for extra in server.metric_sources:
            yield from extra()


def make_registry(server: NodeStatus) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
