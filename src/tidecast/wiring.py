"""Observers the composition root puts on the hub for the origin's other jobs (relays, recorders, hooks).

Each adapts a part written against its own small interface to the hub's
StreamEvents, so the parts stay ignorant of the hub and of each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from tidecast.access import AccessControl
from tidecast.access.hooks import segment_url
from tidecast.dvr.recorder import Reaped
from tidecast.hls.manager import SegmentWritten
from tidecast.live.admission import JoinRequest, Redirect, Refusal
from tidecast.live.client import Client
from tidecast.live.hub import Hub, StreamEvents, Target
from tidecast.live.stream import LiveStream, MediaSink
from tidecast.relay import Relays, stream_info


def attach_sink(stream: LiveStream, sink: MediaSink) -> None:
    """Add a sink to a live stream and bring it up to date: metadata and sequence headers first."""
    if sink in stream.sinks:
        return
    stream.sinks.append(sink)
    if stream.metadata is not None:
        sink.on_metadata(stream.metadata.payload)
    for header in (stream.video_sh, stream.audio_sh):
        if header is not None:
            sink.on_message(header.type_id, header.timestamp, header.payload)


def detach_sink(stream: LiveStream, sink: MediaSink) -> None:
    if sink in stream.sinks:
        stream.sinks.remove(sink)


class RelayObserver(StreamEvents):
    """Forward, exec and transcode follow each local publish."""

    def __init__(self, hub: Hub, relays: Relays) -> None:
        self.hub = hub
        self.relays = relays

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        target = Target(stream.vhost, stream.app, stream.name, client.query)
        request = self.hub.request("publish", client, target, "rtmp")
        info = stream_info(request, self.relays.port, client.swf_url)
        self.relays.on_publish(info, lambda sink: attach_sink(stream, sink), lambda sink: detach_sink(stream, sink))

    def on_unpublish(self, stream: LiveStream, client: Client) -> None:
        self.relays.on_unpublish(stream.vhost, stream.app, stream.name)


class AccessSlot:
    """The hub's access gate and hook observer; a reload swaps the AccessControl behind it in one step."""

    def __init__(self, hub: Hub, current: AccessControl) -> None:
        self.hub = hub
        self.current = current

    async def check(self, request: JoinRequest) -> Refusal | Redirect | None:
        return await self.current.check(request)

    def on_event(self, event: str, request: JoinRequest) -> None:
        self.current.on_event(event, request)

    def on_hls(self, written: SegmentWritten, publisher: Any) -> None:
        """An HLS segment is in place and listed: the vhost's on_hls and on_hls_notify hooks hear of it."""
        hooks = self.current.hooks(written.vhost)
        if hooks is None or not isinstance(publisher, Client):
            return
        target = Target(written.vhost, written.app, written.stream, publisher.query)
        request = self.hub.request("publish", publisher, target, "rtmp")
        hooks.on_hls(
            request, written.file, written.url, written.m3u8, written.m3u8_url, written.seq_no, written.duration
        )
        hooks.on_hls_notify(request, segment_url(written.url, written.m3u8_url))

    def on_dvr(self, reaped: Reaped, publisher: Any) -> None:
        """A DVR file was reaped: the vhost's on_dvr hooks hear of it, as SRS tells them."""
        hooks = self.current.hooks(reaped.vhost)
        if hooks is None or not isinstance(publisher, Client):
            return
        target = Target(reaped.vhost, reaped.app, reaped.stream, publisher.query)
        hooks.on_dvr(self.hub.request("publish", publisher, target, "rtmp"), reaped.file)


def file_backlog_metrics(writers: dict[str, Callable[[], int]]) -> Callable[[], Iterator[Metric]]:
    """The bytes each file thread (HLS, DVR) still has to write: a disk falling behind shows here
    before HLS skips segments or a recording stops."""

    def metrics() -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tidecast_file_backlog_bytes", "bytes waiting for a file thread to write them", labels=["writer"]
        )
        for writer, backlog in writers.items():
            gauge.add_metric([writer], backlog())
        yield gauge

    return metrics
