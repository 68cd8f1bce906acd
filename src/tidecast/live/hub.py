"""The registry of live streams and connected clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tidecast.live.client import Client
from tidecast.live.stream import LiveStream

if TYPE_CHECKING:
    from tidecast.config import Config, Vhost

DEFAULT_VHOST = "__defaultVhost__"


class PublishRejected(Exception):
    """A publish the hub refuses; the message says why, for the client and the log."""


class Hub:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.streams: dict[tuple[str, str, str], LiveStream] = {}
        self.clients: dict[str, Client] = {}
        self.departed_send_bytes = 0
        self.departed_recv_bytes = 0
        # Called with each new stream, so HLS (and the edge) can attach.
        self.stream_created: list[Callable[[LiveStream], None]] = []
        self.stream_removed: list[Callable[[LiveStream], None]] = []

    def vhost_settings(self, vhost: str) -> Vhost | None:
        return self.config.vhost(vhost)

    def chunk_size(self, vhost: Vhost) -> int:
        return vhost.chunk_size or self.config.chunk_size

    def find(self, vhost: str, app: str, name: str) -> LiveStream | None:
        return self.streams.get((vhost, app, name))

    def stream(self, vhost: str, app: str, name: str) -> LiveStream:
        key = (vhost, app, name)
        stream = self.streams.get(key)
        if stream is None:
            settings = self.config.vhost(vhost)
            if settings is None:
                raise PublishRejected(f"vhost {vhost!r} is not configured")
            stream = LiveStream(vhost, app, name, settings, self.chunk_size(settings))
            self.streams[key] = stream
            for hook in self.stream_created:
                hook(stream)
        return stream

    def release(self, stream: LiveStream) -> None:
        """Forget a stream nobody publishes or plays."""
        if stream.idle and self.streams.get((stream.vhost, stream.app, stream.name)) is stream:
            del self.streams[(stream.vhost, stream.app, stream.name)]
            for hook in self.stream_removed:
                hook(stream)

    def register(self, client: Client) -> None:
        self.clients[client.id] = client

    def unregister(self, client: Client) -> None:
        if self.clients.pop(client.id, None) is not None:
            self.departed_send_bytes += client.send_bytes
            self.departed_recv_bytes += client.recv_bytes

    def total_bytes(self) -> tuple[int, int]:
        """(received, sent) by every client since start."""
        recv = self.departed_recv_bytes + sum(c.recv_bytes for c in self.clients.values())
        send = self.departed_send_bytes + sum(c.send_bytes for c in self.clients.values())
        return recv, send

    def apply_config(self, config: Config) -> None:
        self.config = config
        for stream in self.streams.values():
            settings = config.vhost(stream.vhost)
            if settings is not None:
                stream.apply_settings(settings)

    def sweep(self) -> None:
        for stream in list(self.streams.values()):
            stream.sweep()
