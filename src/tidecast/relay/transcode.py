"""`transcode [scope] { enabled; ffmpeg; engine NAME { … } }`: one ffmpeg per engine per live stream.

The ffmpeg command line is built in SRS's order, so an engine written for SRS
produces the same process:

    ffmpeg [iparams] [perfile] [-f iformat] -i INPUT [vfilter]
           (-vcodec V [-b:v] [-r] [-s -aspect] [-threads] [-profile:v] [-preset] [vparams] | -vn)
           (-acodec A [-b:a] [-ar] [-ac] [aparams] | -an)
           [-f oformat] -y OUTPUT

The input is this server's own stream over RTMP, the output by default a new
stream `[stream]_[engine]` in the same app, which is then an ordinary live
stream (played, recorded, sent to HLS). Scopes apply as in SRS: the vhost's
`transcode` block, then `transcode APP`, then `transcode APP/STREAM`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidecast.config import Config, Engine
from tidecast.net.urls import rtmp_target
from tidecast.pathvars import date_vars, substitute
from tidecast.relay.base import Key, ProcessRelay, Spec
from tidecast.relay.supervisor import RestartPolicy, Supervisor
from tidecast.relay.vars import StreamInfo, stream_values

COPY = "copy"
NO_VIDEO = "vn"
NO_AUDIO = "an"
PNG = "png"

DEFAULT_OUTPUT = "rtmp://127.0.0.1:[port]/[app]?vhost=[vhost]/[stream]_[engine]"


class EngineError(ValueError):
    """An engine SRS would refuse to start; the message says which setting."""


def _options(pairs: Sequence[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for name, value in pairs:
        out.append(name if name.startswith("-") else f"-{name}")
        if value:
            out.append(value)
    return out


def _fps(value: float) -> str:
    return f"{value:.2f}"


def check_engine(engine: Engine) -> None:
    """SRS's checks of a transcode engine before it starts."""
    where = f"engine {engine.name or '(unnamed)'}"
    if engine.vcodec == NO_VIDEO and engine.acodec == NO_AUDIO:
        raise EngineError(f"{where}: vcodec vn and acodec an leave nothing to transcode; keep one of them")
    if engine.vcodec not in (COPY, NO_VIDEO, PNG):
        if not engine.vprofile:
            raise EngineError(f"{where}: vcodec {engine.vcodec or '(none)'} needs vprofile, e.g. vprofile main;")
        if not engine.vpreset:
            raise EngineError(f"{where}: vcodec {engine.vcodec or '(none)'} needs vpreset, e.g. vpreset medium;")


def engine_argv(
    ffmpeg: str, engine: Engine, input_url: str, output: str, iparams: Sequence[str] = (), copy: bool = False
) -> list[str]:
    """The ffmpeg command line for one engine (or a plain copy with `copy=True`, as ingest does)."""
    if not output:
        raise EngineError(f"engine {engine.name or '(unnamed)'}: empty output")
    vcodec, acodec = (COPY, COPY) if copy else (engine.vcodec, engine.acodec)
    if not copy:
        check_engine(engine)
    argv = [ffmpeg, *[p for p in iparams if p]]
    if not copy:
        argv += _options(engine.perfile)
    # SRS names the input format only for its own RTMP input ("-f flv" before a udp:// input breaks it).
    iformat = engine.iformat if input_url.startswith("rtmp://") and not copy else ""
    if iformat and iformat != "off":
        argv += ["-f", iformat]
    argv += ["-i", input_url]
    if not copy:
        argv += _options(engine.vfilter)
    if vcodec != NO_VIDEO:
        argv += ["-vcodec", vcodec]
    else:
        argv.append("-vn")
    if vcodec not in (COPY, NO_VIDEO):
        width, height = engine.vwidth - engine.vwidth % 2, engine.vheight - engine.vheight % 2
        if engine.vbitrate > 0:
            argv += ["-b:v", str(engine.vbitrate * 1000)]
        if engine.vfps > 0:
            argv += ["-r", _fps(engine.vfps)]
        if width > 0 and height > 0:
            argv += ["-s", f"{width}x{height}", "-aspect", f"{width}:{height}"]
        if engine.vthreads > 0:
            argv += ["-threads", str(engine.vthreads)]
        if engine.vprofile:
            argv += ["-profile:v", engine.vprofile]
        if engine.vpreset:
            argv += ["-preset", engine.vpreset]
        argv += _options(engine.vparams)
    if acodec != NO_AUDIO:
        argv += ["-acodec", acodec]
    else:
        argv.append("-an")
    if acodec not in (COPY, NO_AUDIO):
        if engine.abitrate > 0:
            argv += ["-b:a", str(engine.abitrate * 1000)]
        if engine.asample_rate > 0:
            argv += ["-ar", str(engine.asample_rate)]
        if engine.achannels > 0:
            argv += ["-ac", str(engine.achannels)]
        argv += _options(engine.aparams)
    elif acodec == COPY and not copy:
        # With audio copied, SRS keeps only the ADTS-to-ASC bitstream filter of the aparams.
        options = _options(engine.aparams)
        for i in range(len(options) - 1):
            if options[i] == "-bsf:a" and options[i + 1] == "aac_adtstoasc":
                argv += ["-bsf:a", "aac_adtstoasc"]
                break
    oformat = "flv" if copy else engine.oformat
    if oformat and oformat != "off":
        argv += ["-f", oformat]
    argv += ["-y", output]
    return argv


def local_host(config: Config) -> str:
    """Where this server's RTMP listener is reached from itself: the first `listen` host, unless a wildcard."""
    host = config.listen[0].host if config.listen else ""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def input_url(info: StreamInfo, host: str = "127.0.0.1") -> str:
    """This server's own stream, as SRS's transcoder reads it."""
    return f"rtmp://{host}:{info.port}/{info.app}?vhost={info.vhost}/{info.stream}"


def output_url(engine: Engine, info: StreamInfo) -> str:
    return date_vars(substitute(engine.output or DEFAULT_OUTPUT, stream_values(info, engine.name)))


def stream_of_url(url: str) -> Key | None:
    """(vhost, app, stream) an rtmp:// output publishes to; None for other outputs (files, …).

    As ffmpeg reads it, the stream is what follows the last "/", so SRS's
    `rtmp://h:p/app?vhost=v/stream` and `rtmp://h:p/app/stream?vhost=v` are the same stream.
    """
    if not url.startswith("rtmp://"):
        return None
    hostport, _, rest = url[len("rtmp://") :].partition("/")
    app, _, stream = rest.rpartition("/")
    if not app or not stream:
        return None
    host = hostport.rpartition("@")[2].partition(":")[0] if not hostport.startswith("[") else hostport
    target = rtmp_target(f"rtmp://{host}/{app}", app, stream)
    return (target.vhost, target.app, target.stream)


class TranscodeManager(ProcessRelay):
    kind = "transcode"
    policy = RestartPolicy(initial=1.0, cap=30.0, max_failures=10)

    def __init__(self, config: Config, supervisor: Supervisor | None = None, cwd: str | None = None) -> None:
        super().__init__(config, supervisor, cwd)
        # Streams our own engines publish: they are not transcoded again (SRS's loop check),
        # else `[stream]_[engine]` would beget `[stream]_[engine]_[engine]` forever.
        self.outputs: dict[Key, Key] = {}

    def scopes(self, info: StreamInfo, config: Config) -> list[tuple[str, str, list[Engine]]]:
        """(scope, ffmpeg, enabled engines) of every enabled transcode block that applies."""
        settings = config.vhost(info.vhost)
        names = ("", info.app, f"{info.app}/{info.stream}")
        found = []
        for scope in names:
            for t in settings.transcode:
                if t.scope == scope and t.enabled and t.ffmpeg:
                    found.append((scope, t.ffmpeg, [e for e in t.engine if e.enabled]))
                    break  # SRS reads the first block of each scope
        return found

    def wanted(self, info: StreamInfo, config: Config) -> list[Spec]:
        if self._is_own_output(info):
            return []
        specs = []
        for scope, ffmpeg, engines in self.scopes(info, config):
            for i, engine in enumerate(engines):
                output = output_url(engine, info)
                argv = engine_argv(ffmpeg, engine, input_url(info, local_host(config)), output)
                target = stream_of_url(output)
                if target is not None:
                    self.outputs[self._normalize(target, config)] = info.key
                name = engine.name or f"{scope or 'vhost'}#{i}"
                labels = (("vhost", info.vhost), ("app", info.app), ("stream", info.stream), ("engine", engine.name))
                specs.append(Spec(name, tuple(argv), labels=labels, policy=self.policy))
        return specs

    @staticmethod
    def _normalize(target: Key, config: Config) -> Key:
        """The vhost the output's publish resolves to, as for any client (127.0.0.1: the default one)."""
        vhost, app, stream = target
        return (config.vhost(vhost).name, app, stream)

    def _is_own_output(self, info: StreamInfo) -> bool:
        source = self.outputs.get(info.key)
        return source is not None and source != info.key
