"""`forward { enabled; destination HOST:PORT …; backend URL; }`: push every published stream onward.

A `ForwardSink` is one destination of one stream: a `MediaSink` of the stream
that keeps one RTMP publish to the destination. When the destination is down
or drops the connection the sink reconnects with a backoff (0.5 s, 1 s, 2 s,
then every 3 s as SRS does) for as long as the stream is live; meanwhile it
keeps only the current GOP (bounded), so a reconnect starts with the metadata,
the sequence headers and the latest keyframe, never with half a GOP. A slow
destination (its socket buffer past a bound) loses frames up to the next
keyframe instead of growing tidecast's memory.

SRS 5's `backend`: on publish, an HTTP POST (`action: on_forward`) whose answer
`{"code":0,"data":{"urls":["rtmp://…"]}}` lists the destinations of this stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tidecast.config import Config
from tidecast.net.rtmp_client import RtmpUpstream, UpstreamError, open_upstream
from tidecast.net.urls import parse_rtmp_url, split_origin
from tidecast.relay.vars import DEFAULT_VHOST, StreamInfo, stream_with_query

log = logging.getLogger("tidecast.forward")

AUDIO, VIDEO, DATA_AMF0 = 8, 9, 18
CONNECT_TIMEOUT = 5.0
BACKOFF = (0.5, 1.0, 2.0, 3.0)  # then 3 s forever: SRS retries a forward every 3 s
GOP_BYTES = 8 * 1024 * 1024  # bound of what waits for a destination that is down
GOP_MESSAGES = 5000
WRITE_HIGH = 4 * 1024 * 1024  # unsent bytes of a slow destination before frames are dropped
BACKEND_TIMEOUT = 5.0

STATE_CONNECTING = "connecting"
STATE_FORWARDING = "forwarding"
STATE_BACKOFF = "backoff"
STATE_STOPPED = "stopped"


class MediaSink(Protocol):
    def on_publish(self) -> None: ...

    def on_metadata(self, payload: bytes) -> None: ...

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None: ...

    def on_unpublish(self) -> None: ...


Attach = Callable[["ForwardSink"], None]


def is_sequence_header(type_id: int, payload: bytes) -> bool:
    if len(payload) < 2:
        return False
    if type_id == VIDEO:
        return payload[1] == 0 and payload[0] & 0x0F in (7, 12)  # AVC / HEVC packet type 0
    return type_id == AUDIO and payload[0] >> 4 == 10 and payload[1] == 0  # AAC


def is_keyframe(type_id: int, payload: bytes) -> bool:
    return type_id == VIDEO and len(payload) > 1 and payload[0] >> 4 == 1 and payload[1] != 0


class Target:
    """Where one destination publishes: host, port, app, stream (with query) and tcUrl."""

    def __init__(self, destination: str, info: StreamInfo) -> None:
        self.destination = destination
        if destination.startswith("rtmp://"):
            host, port, app, stream = parse_rtmp_url(destination)
            app_path, _, app_query = app.partition("?")
            self.tc_url = f"rtmp://{host}:{port}/{app}"
            self.app, self.stream = app_path, stream
            if app_query and not stream:
                raise ValueError(f"forward destination {destination!r} names no stream")
        else:
            host, port = split_origin(destination)
            query = f"?vhost={info.vhost}" if info.vhost != DEFAULT_VHOST else ""
            self.tc_url = f"rtmp://{host}:{port}/{info.app}{query}"
            self.app = info.app
            self.stream = stream_with_query(info.host, info.vhost, info.stream, info.param)
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        return f"rtmp://{self.host}:{self.port}/{self.app}/{self.stream}"


class ForwardSink:
    """One destination of one live stream."""

    def __init__(self, info: StreamInfo, destination: str, backoff: tuple[float, ...] = BACKOFF) -> None:
        self.info = info
        self.target = Target(destination, info)
        self.backoff = backoff
        self.state = STATE_CONNECTING
        self.upstream: RtmpUpstream | None = None
        self.metadata: bytes | None = None
        self.video_sh: tuple[int, bytes] | None = None
        self.audio_sh: tuple[int, bytes] | None = None
        self.gop: list[tuple[int, int, bytes]] = []
        self.gop_bytes = 0
        self.has_video = False
        self.wait_keyframe = True
        self.connects = 0
        self.reconnects = 0
        self.dropped = 0
        self.sent_messages = 0
        self.error = ""
        self.since: float | None = None  # wall time of the current connection
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def name(self) -> str:
        return f"{self.info.label} -> {self.target.destination}"

    # ------------------------------------------------------------ MediaSink

    def on_publish(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"forward {self.name}")

    def on_metadata(self, payload: bytes) -> None:
        self.metadata = payload
        upstream = self.upstream
        if upstream is not None:
            upstream.send_media(DATA_AMF0, 0, payload)

    def on_message(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        if type_id == VIDEO:
            self.has_video = True
        if is_sequence_header(type_id, payload):
            if type_id == VIDEO:
                self.video_sh = (timestamp_ms, payload)
            else:
                self.audio_sh = (timestamp_ms, payload)
            if self.upstream is not None:
                self.upstream.send_media(type_id, timestamp_ms, payload)
            return
        keyframe = is_keyframe(type_id, payload)
        upstream = self.upstream
        if upstream is None:
            self._keep(type_id, timestamp_ms, payload, keyframe)
            return
        if self.wait_keyframe and self.has_video:
            if not keyframe:
                self.dropped += 1
                return
            self.wait_keyframe = False
        if upstream.write_buffer_size > WRITE_HIGH:
            # A destination slower than the stream: skip to the next keyframe.
            self.wait_keyframe = True
            self.dropped += 1
            return
        upstream.send_media(type_id, timestamp_ms, payload)
        self.sent_messages += 1

    def on_unpublish(self) -> None:
        self.stop()

    # ------------------------------------------------------------ the GOP kept while disconnected

    def _keep(self, type_id: int, timestamp_ms: int, payload: bytes, keyframe: bool) -> None:
        if keyframe:
            self.dropped += len(self.gop)
            self.gop, self.gop_bytes = [], 0
        elif self.has_video and not self.gop:
            self.dropped += 1  # no keyframe to start from yet
            return
        if self.gop_bytes + len(payload) > GOP_BYTES or len(self.gop) >= GOP_MESSAGES:
            if self.has_video:
                self.dropped += len(self.gop) + 1
                self.gop, self.gop_bytes = [], 0
                return
            _, _, old = self.gop.pop(0)  # audio only: keep the most recent
            self.gop_bytes -= len(old)
            self.dropped += 1
        self.gop.append((type_id, timestamp_ms, payload))
        self.gop_bytes += len(payload)

    def _send_start(self, upstream: RtmpUpstream) -> None:
        start = self.gop[0][1] if self.gop else 0
        if self.metadata is not None:
            upstream.send_media(DATA_AMF0, 0, self.metadata)
        for header in (self.video_sh, self.audio_sh):
            if header is not None:
                upstream.send_media(VIDEO if header is self.video_sh else AUDIO, start, header[1])
        for type_id, ts, payload in self.gop:
            upstream.send_media(type_id, ts, payload)
        self.sent_messages += len(self.gop)
        # Without a buffered keyframe the live messages wait for the next one.
        self.wait_keyframe = self.has_video and not (self.gop and is_keyframe(self.gop[0][0], self.gop[0][2]))
        self.gop, self.gop_bytes = [], 0

    # ------------------------------------------------------------ the connection

    async def _run(self) -> None:
        failures = 0
        t = self.target
        while not self._stopped:
            self.state = STATE_CONNECTING
            try:
                upstream = await open_upstream(
                    t.host, t.port, t.app, t.tc_url, t.stream, "publish", None, CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError, UpstreamError) as exc:
                self.error = str(exc) or type(exc).__name__
                if failures == 0:
                    log.warning("forward %s: cannot publish to %s: %s", self.info.label, t.url, self.error)
            else:
                if self._stopped:
                    upstream.close()
                    return
                self.connects += 1
                if self.connects > 1:
                    self.reconnects += 1
                failures = 0
                self.error = ""
                self.since = time.time()
                self._send_start(upstream)
                self.upstream = upstream
                self.state = STATE_FORWARDING
                log.info("forward %s: publishing to %s", self.info.label, t.url)
                await upstream.closed
                self.upstream = None
                self.since = None
                if self._stopped:
                    return
                self.error = upstream.error or "connection closed by the destination"
                log.warning("forward %s: %s lost: %s; reconnecting", self.info.label, t.url, self.error)
            self.state = STATE_BACKOFF
            await asyncio.sleep(self.backoff[min(failures, len(self.backoff) - 1)])
            failures += 1

    def stop(self) -> None:
        self._stopped = True
        self.state = STATE_STOPPED
        if self._task is not None:
            self._task.cancel()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.gop, self.gop_bytes = [], 0

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------ reporting

    @property
    def sent_bytes(self) -> int:
        return self.upstream.bytes_sent if self.upstream is not None else 0

    def describe(self) -> dict[str, Any]:
        return {
            "vhost": self.info.vhost,
            "app": self.info.app,
            "stream": self.info.stream,
            "destination": self.target.destination,
            "url": self.target.url,
            "state": self.state,
            "reconnects": self.reconnects,
            "dropped": self.dropped,
            "since": int(self.since * 1000) if self.since else None,
            "error": self.error,
        }


class _Published:
    __slots__ = ("attach", "detach", "info", "sinks")

    def __init__(self, info: StreamInfo, attach: Attach, detach: Attach) -> None:
        self.info = info
        self.attach = attach
        self.detach = detach
        self.sinks: dict[str, ForwardSink] = {}


class ForwardManager:
    """The forwards of every live stream, kept in step with the config."""

    def __init__(self, config: Config, server_id: str = "") -> None:
        self.config = config
        self.server_id = server_id
        self.streams: dict[tuple[str, str, str], _Published] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_publish(self, info: StreamInfo, attach: Attach, detach: Attach) -> None:
        """A stream went live. `attach(sink)` must add the sink to the stream and feed it the
        current metadata and sequence headers; `detach(sink)` removes it (reload)."""
        self.on_unpublish(*info.key)
        published = self.streams[info.key] = _Published(info, attach, detach)
        self._apply(published, self.destinations(info, self.config))
        backend = self.config.vhost(info.vhost).forward
        if backend.enabled and backend.backend:
            self._spawn(self._ask_backend(published, backend.backend))

    def on_unpublish(self, vhost: str, app: str, stream: str) -> None:
        published = self.streams.pop((vhost, app, stream), None)
        if published is not None:
            for sink in published.sinks.values():
                sink.stop()
                published.detach(sink)

    def reload(self, config: Config) -> None:
        self.config = config
        for published in self.streams.values():
            wanted = self.destinations(published.info, config)
            extra = [d for d in published.sinks if d.startswith("rtmp://")]  # from the backend
            if config.vhost(published.info.vhost).forward.enabled:
                wanted += [d for d in extra if d not in wanted]
            self._apply(published, wanted)

    async def close(self) -> None:
        for key in list(self.streams):
            self.on_unpublish(*key)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def destinations(info: StreamInfo, config: Config) -> list[str]:
        settings = config.vhost(info.vhost).forward
        if not settings.enabled:
            return []
        return list(dict.fromkeys(settings.destination))

    def _apply(self, published: _Published, wanted: list[str]) -> None:
        for destination in list(published.sinks):
            if destination not in wanted:
                sink = published.sinks.pop(destination)
                sink.stop()
                published.detach(sink)
        for destination in wanted:
            if destination in published.sinks:
                continue
            try:
                sink = ForwardSink(published.info, destination)
            except ValueError as exc:
                log.error("forward %s: bad destination %r: %s", published.info.label, destination, exc)
                continue
            published.sinks[destination] = sink
            published.attach(sink)
            sink.on_publish()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask_backend(self, published: _Published, url: str) -> None:
        import aiohttp

        info = published.info
        body = {
            "action": "on_forward",
            "server_id": self.server_id,
            "client_id": info.client_id,
            "ip": info.ip,
            "vhost": info.vhost,
            "app": info.app,
            "tcUrl": info.tc_url,
            "stream": info.stream,
            "param": info.param,
        }
        try:
            timeout = aiohttp.ClientTimeout(total=BACKEND_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=body) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
            answer = json.loads(text)
            code = answer.get("code") if isinstance(answer, dict) else None
            if code != 0:
                raise ValueError(f"code {code!r}")
            urls = (answer.get("data") or {}).get("urls") or []
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise ValueError("data.urls is not a list of strings")
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
            log.warning("forward %s: backend %s failed: %s; only the configured destinations", info.label, url, exc)
            return
        if self.streams.get(info.key) is not published:
            return  # unpublished meanwhile
        wanted = [*published.sinks, *[u for u in urls if u not in published.sinks]]
        log.info("forward %s: backend %s gave %d destination(s)", info.label, url, len(urls))
        self._apply(published, wanted)

    # ------------------------------------------------------------ reporting

    def sinks(self) -> Iterator[ForwardSink]:
        for published in self.streams.values():
            yield from published.sinks.values()

    def sinks_of(self, vhost: str, app: str, stream: str) -> list[ForwardSink]:
        """One stream's forwards: looked up, since /api/v1/streams asks for every stream in turn."""
        published = self.streams.get((vhost, app, stream))
        return list(published.sinks.values()) if published is not None else []

    def describe(self) -> list[dict[str, Any]]:
        return [sink.describe() for sink in self.sinks()]

    def metrics(self) -> Iterator[Metric]:
        labels = ["vhost", "app", "stream", "destination"]
        up = GaugeMetricFamily(
            "tidecast_forward_destinations", "forward destinations (1 each), by state", labels=[*labels, "state"]
        )
        reconnects = CounterMetricFamily("tidecast_forward_reconnects", "reconnects to a destination", labels=labels)
        dropped = CounterMetricFamily(
            "tidecast_forward_dropped_messages", "messages not forwarded (destination down or slow)", labels=labels
        )
        for sink in self.sinks():
            key = [sink.info.vhost, sink.info.app, sink.info.stream, sink.target.destination]
            up.add_metric([*key, sink.state], 1)
            reconnects.add_metric(key, sink.reconnects)
            dropped.add_metric(key, sink.dropped)
        yield up
        yield reconnects
        yield dropped
