"""`ingest NAME { enabled; input { type; url; } ffmpeg; engine { … } }`: pull a source into the server.

One ffmpeg per engine of each enabled ingest (one plain copy when the ingest
has no engine, or for an engine that is disabled or names no vcodec/acodec, as
SRS does), started with the server and kept running with backoff whatever
happens to the source. A file is read in real time and looped
(`-re -stream_loop -1`: one continuous stream, where SRS restarts ffmpeg at the
end of the file and so republishes); a stream URL is read with `-re` as SRS
does, which keeps HLS sources at their pace.
"""

from __future__ import annotations

from tidecast.config import Config, Engine, Ingest
from tidecast.pathvars import date_vars, substitute
from tidecast.relay.base import Key, ProcessRelay, Spec
from tidecast.relay.supervisor import RestartPolicy, Supervisor
from tidecast.relay.transcode import engine_argv
from tidecast.relay.vars import DEFAULT_VHOST, StreamInfo


def ingest_output(template: str, vhost: str, port: int) -> str:
    out = date_vars(substitute(template, {"vhost": vhost, "port": str(port)}))
    # SRS drops a vhost parameter naming the default vhost, and the separators it leaves.
    out = out.replace(f"vhost={DEFAULT_VHOST}", "").replace("?&", "?").replace("?/", "/")
    return out.rstrip("?")


def ingest_specs(ingest: Ingest, vhost: str, port: int) -> list[Spec]:
    if not ingest.enabled:
        return []
    where = f"ingest {ingest.name} (vhost {vhost})"
    if not ingest.ffmpeg:
        raise ValueError(f"{where}: no ffmpeg; add one, e.g. ffmpeg /usr/bin/ffmpeg;")
    if not ingest.input.url:
        raise ValueError(f"{where}: no input url; add input {{ type file; url ./file.flv; }}")
    iparams = ["-re", "-stream_loop", "-1"] if ingest.input.type == "file" else ["-re"]
    specs = []
    for i, engine in enumerate(ingest.engine or [None]):
        template = engine.output if engine is not None else ""
        output = ingest_output(template, vhost, port)
        if not output:
            raise ValueError(f"{where}: engine {i + 1} has no output; add output rtmp://127.0.0.1:[port]/live/NAME;")
        copy = engine is None or not engine.enabled or not engine.vcodec or not engine.acodec
        argv = engine_argv(ingest.ffmpeg, engine or Engine(), ingest.input.url, output, iparams, copy=copy)
        name = engine.name if engine is not None and engine.name else f"engine#{i + 1}"
        labels = (("vhost", vhost), ("ingest", ingest.name))
        policy = RestartPolicy(initial=1.0, cap=30.0, max_failures=None)
        specs.append(Spec(name, tuple(argv), labels=labels, policy=policy))
    return specs


class IngestManager(ProcessRelay):
    """Ingests belong to the config, not to a stream: `start()` and `reload()` keep them in step."""

    kind = "ingest"

    def __init__(self, config: Config, supervisor: Supervisor | None = None, cwd: str | None = None) -> None:
        super().__init__(config, supervisor, cwd)

    def _configured(self, config: Config) -> dict[Key, StreamInfo]:
        port = config.listen[0].port if config.listen else 1935
        out: dict[Key, StreamInfo] = {}
        for vhost in config.vhosts.values():
            if not vhost.enabled:
                continue
            for ingest in vhost.ingest:
                if ingest.enabled:
                    info = StreamInfo(vhost.name, "ingest", ingest.name, port)
                    out.setdefault(info.key, info)  # a repeated name: the first one, as SRS's get() does
        return out

    def start(self) -> None:
        self.streams = self._configured(self.config)
        for key in self.streams:
            self._sync(key)

    def reload(self, config: Config) -> None:
        self.config = config
        self.streams = self._configured(config)
        for key in {*self.streams, *self.running}:
            self._sync(key)

    def wanted(self, info: StreamInfo, config: Config) -> list[Spec]:
        settings = config.vhost(info.vhost)
        ingest = next((i for i in settings.ingest if i.name == info.stream), None)
        return ingest_specs(ingest, info.vhost, info.port) if ingest is not None else []
