"""What an origin does with a stream besides serving it: forward, exec, transcode, ingest.

`Relays` is the one object the server holds. It hears of streams going live
(`on_publish`) and leaving (`on_unpublish`, or the contract's observer event
"unpublish"), follows reloads, reports for the API and /metrics, and stops
every external process on the way out (`close` on a drain, `kill_all` on a
fast exit; the kernel kills them on a kill -9 of tidecast).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client.core import Metric

from tidecast.config import Config
from tidecast.relay.exec import ExecManager
from tidecast.relay.forward import Attach, ForwardManager, ForwardSink
from tidecast.relay.ingest import IngestManager
from tidecast.relay.supervisor import Supervised, Supervisor
from tidecast.relay.transcode import TranscodeManager
from tidecast.relay.vars import StreamInfo

__all__ = ["ForwardSink", "Relays", "StreamInfo", "Supervised", "Supervisor"]


class _Request(Protocol):
    """The fields of the contract's JoinRequest the relays read."""

    client_id: str
    ip: str
    vhost: str
    app: str
    stream: str
    param: str
    tc_url: str
    page_url: str


def stream_info(request: _Request, port: int, swf_url: str = "") -> StreamInfo:
    """A JoinRequest (or anything with its fields) as the relays' StreamInfo."""
    try:
        host = urlsplit(request.tc_url).hostname or ""
    except ValueError:
        host = ""
    return StreamInfo(
        vhost=request.vhost,
        app=request.app,
        stream=request.stream,
        port=port,
        param=request.param,
        tc_url=request.tc_url,
        swf_url=swf_url or str(getattr(request, "swf_url", "") or ""),
        page_url=request.page_url,
        host=host,
        client_id=request.client_id,
        ip=request.ip,
    )


class Relays:
    def __init__(self, config: Config, server_id: str = "", cwd: str | None = None) -> None:
        self.config = config
        self.supervisor = Supervisor()
        self.forward = ForwardManager(config, server_id)
        self.exec = ExecManager(config, self.supervisor, cwd)
        self.transcode = TranscodeManager(config, self.supervisor, cwd)
        self.ingest = IngestManager(config, self.supervisor, cwd)

    @property
    def port(self) -> int:
        """This server's RTMP port as the relays' URLs name it: the first `listen`, as in SRS."""
        return self.config.listen[0].port if self.config.listen else 1935

    def start(self) -> None:
        """Start the ingests; call once the RTMP listener accepts connections."""
        self.ingest.start()

    def on_publish(self, info: StreamInfo, attach: Attach, detach: Attach) -> None:
        """A stream is live (its publish accepted). `attach(sink)` adds a forward sink to the
        stream and feeds it the current metadata and sequence headers; `detach(sink)` removes it.

        Only origins relay: on an edge (`cluster.mode remote`) a publish goes to the origin,
        which forwards, transcodes and execs, as in SRS (its origin hub only)."""
        if self.config.vhost(info.vhost).cluster.mode == "remote":
            return
        self.forward.on_publish(info, attach, detach)
        self.exec.on_publish(info)
        self.transcode.on_publish(info)

    def on_unpublish(self, vhost: str, app: str, stream: str) -> None:
        self.forward.on_unpublish(vhost, app, stream)
        self.exec.on_unpublish(vhost, app, stream)
        self.transcode.on_unpublish(vhost, app, stream)

    def on_event(self, event: str, request: _Request) -> None:
        """The contract's Observer: never blocks, never raises."""
        if event == "unpublish":
            self.on_unpublish(request.vhost, request.app, request.stream)

    def reload(self, config: Config) -> None:
        self.config = config
        self.forward.reload(config)
        self.exec.reload(config)
        self.transcode.reload(config)
        self.ingest.reload(config)

    async def close(self) -> None:
        """The drain: ingests first (as SRS stops ingesters when it closes its listeners), then the rest."""
        await self.ingest.close()
        await self.forward.close()
        await self.exec.close()
        await self.transcode.close()
        await self.supervisor.close()

    def kill_all(self) -> None:
        """A fast exit: SIGKILL every process group now, without waiting."""
        self.supervisor.kill_all()

    # ------------------------------------------------------------ reporting

    def describe(self, vhost: str, app: str, stream: str) -> dict[str, Any]:
        """For the stream's object in /api/v1/streams: its forwards and its processes."""
        key = (vhost, app, stream)
        forwards = [s.describe() for s in self.forward.sinks_of(*key)]
        processes = [p.describe() for p in itertools.chain(self.exec.processes(*key), self.transcode.processes(*key))]
        return {"forward": forwards, "processes": processes}

    def describe_all(self) -> dict[str, Any]:
        """Everything, e.g. for /api/v1/relays: forwards and every external process."""
        return {"forwards": self.forward.describe(), "processes": self.supervisor.describe()}

    def metrics(self) -> Iterator[Metric]:
        yield from self.supervisor.metrics()
        yield from self.forward.metrics()
