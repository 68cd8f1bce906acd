"""Typed settings with SRS's defaults; attribute names are the directive names."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_VHOST = "__defaultVhost__"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class RawApi:
    enabled: bool = False
    allow_reload: bool = False
    allow_query: bool = False
    allow_update: bool = False


@dataclass
class ApiAuth:
    enabled: bool = False
    username: str = ""
    password: str = ""


@dataclass
class HttpApi:
    enabled: bool = False
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 1985))
    crossdomain: bool = True
    raw_api: RawApi = field(default_factory=RawApi)
    auth: ApiAuth = field(default_factory=ApiAuth)


@dataclass
class HttpServer:
    enabled: bool = False
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 8080))
    dir: str = "./objs/nginx/html"
    crossdomain: bool = True


@dataclass
class Exporter:
    enabled: bool = False
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 9972))
    label: str = ""
    tag: str = ""


@dataclass
class Cluster:
    mode: str = "local"
    origin: list[str] = field(default_factory=list)
    token_traverse: bool = False
    vhost: str = "[vhost]"
    protocol: str = "rtmp"
    origin_cluster: bool = False
    coworkers: list[str] = field(default_factory=list)
    coworkers_dns: str | None = None  # tidecast: every address of one DNS name is a coworker
    debug_srs_upnode: bool = True
    # tidecast: an edge serves HLS by fetching the origins' playlists and segments (shared, cached).
    hls_fetch: bool = False
    hls_fetch_port: int = 8080  # the origins' http_server port; hosts come from `origin`
    hls_fetch_cache: int = 64 * 1024 * 1024  # bytes of segments kept in memory


@dataclass
class HttpRemux:
    enabled: bool = False
    mount: str = "[vhost]/[app]/[stream].flv"
    has_audio: bool = True
    has_video: bool = True
    guess_has_av: bool = True


@dataclass
class Hls:
    enabled: bool = False
    hls_fragment: float = 10.0
    hls_td_ratio: float = 1.0
    hls_aof_ratio: float = 2.0
    hls_window: float = 60.0
    hls_path: str = "./objs/nginx/html"
    hls_m3u8_file: str = "[app]/[stream].m3u8"
    hls_ts_file: str = "[app]/[stream]-[seq].ts"
    hls_entry_prefix: str = ""
    hls_cleanup: bool = True
    hls_dispose: float = 120.0
    hls_wait_keyframe: bool = True
    # tidecast extensions: the segment format, and the partial-segment duration of low-latency HLS.
    hls_variant: str = "mpegts"  # mpegts | fmp4 | lowlatency
    hls_part: float = 0.2


@dataclass
class Dvr:
    enabled: bool = False
    dvr_apply: list[str] = field(default_factory=lambda: ["all"])  # "all", or app/stream names
    dvr_plan: str = "session"  # session | segment (SRS 2's append reads as session)
    dvr_path: str = "./objs/nginx/html/[app]/[stream].[timestamp].flv"
    dvr_duration: float = 30.0  # seconds, segment plan; 0 never cuts
    dvr_wait_keyframe: bool = True
    time_jitter: str = "full"
    dvr_mp4_faststart: bool = False  # tidecast: moov before mdat, in space reserved at the start


@dataclass
class Play:
    gop_cache: bool = True
    gop_cache_max_frames: int = 2500
    queue_length: float = 30.0
    mw_latency: int = 350
    mw_msgs: int = 8
    time_jitter: str = "full"
    atc: bool = False
    mix_correct: bool = False


@dataclass
class Publish:
    firstpkt_timeout: int = 20000
    normal_timeout: int = 5000
    mr: bool = False
    mr_latency: int = 350
    parse_sps: bool = True


# ---------------------------------------------------------------- relays: forward, exec, transcode, ingest
# SRS keeps these in the vhost; several of them repeat (`exec publish …;`,
# `transcode [scope] { … }`, `ingest NAME { … }`, `engine NAME { … }`), so they
# are lists here, in the order written.


@dataclass
class Forward:
    enabled: bool = False
    destination: list[str] = field(default_factory=list)  # host[:port] each
    backend: str = ""  # SRS 5: an HTTP URL that returns the destinations of each stream


@dataclass
class Exec:
    enabled: bool = False
    publish: list[list[str]] = field(default_factory=list)  # one command line (argv template) per `publish`
    where: str = field(default="", compare=False, repr=False)  # file:line, for error messages


@dataclass
class Engine:
    """A transcode engine with SRS's defaults. The option blocks (`perfile`, `vfilter`, `vparams`,
    `aparams`) are (name, value) pairs as written; each becomes `-name [value]` for ffmpeg."""

    name: str = ""
    enabled: bool = False
    perfile: list[tuple[str, str]] = field(default_factory=list)
    iformat: str = "flv"
    vfilter: list[tuple[str, str]] = field(default_factory=list)
    vcodec: str = ""
    vbitrate: int = 0
    vfps: float = 0.0
    vwidth: int = 0
    vheight: int = 0
    vthreads: int = 1
    vprofile: str = ""
    vpreset: str = ""
    vparams: list[tuple[str, str]] = field(default_factory=list)
    acodec: str = ""
    abitrate: int = 0
    asample_rate: int = 0
    achannels: int = 0
    aparams: list[tuple[str, str]] = field(default_factory=list)
    oformat: str = "flv"
    output: str = ""


@dataclass
class Transcode:
    scope: str = ""  # "" (every stream of the vhost), APP, or APP/STREAM
    enabled: bool = False
    ffmpeg: str = ""
    engine: list[Engine] = field(default_factory=list)
    where: str = field(default="", compare=False, repr=False)  # file:line, for error messages


@dataclass
class IngestInput:
    type: str = "file"  # file or stream (SRS's `device` is not supported by SRS either)
    url: str = ""


@dataclass
class Ingest:
    name: str = ""
    enabled: bool = False
    input: IngestInput = field(default_factory=IngestInput)
    ffmpeg: str = ""
    engine: list[Engine] = field(default_factory=list)
    where: str = field(default="", compare=False, repr=False)  # file:line, for error messages


@dataclass
class HttpHooks:
    """SRS's hooks: each `on_*` holds URLs called in turn (an empty list: no hook)."""

    enabled: bool = False
    on_connect: list[str] = field(default_factory=list)
    on_close: list[str] = field(default_factory=list)
    on_publish: list[str] = field(default_factory=list)
    on_unpublish: list[str] = field(default_factory=list)
    on_play: list[str] = field(default_factory=list)
    on_stop: list[str] = field(default_factory=list)
    on_dvr: list[str] = field(default_factory=list)
    on_hls: list[str] = field(default_factory=list)
    on_hls_notify: list[str] = field(default_factory=list)
    timeout: float = 30.0  # tidecast: seconds one hook call may take, SRS's fixed 30 s by default


@dataclass(frozen=True)
class SecurityRule:
    """`allow|deny publish|play all|IP|CIDR;`"""

    action: str  # allow or deny
    method: str  # publish or play
    target: str  # all, an address, or a network

    def words(self) -> list[str]:
        return [self.action, self.method, self.target]


@dataclass
class Security:
    enabled: bool = False
    rules: list[SecurityRule] = field(default_factory=list)  # in file order


@dataclass
class Refer:
    """Page-URL domain lists; None means no list, which allows everyone."""

    enabled: bool = False
    all: list[str] | None = None
    publish: list[str] | None = None
    play: list[str] | None = None


@dataclass
class SignedUrl:
    """tidecast: HMAC-signed publish/play URLs. The secret is never in the config itself."""

    enabled: bool = False
    secret_file: str = ""  # a file holding the secret (e.g. a mounted Kubernetes Secret)
    secret_env: str = ""  # or the name of an environment variable holding it
    publish: bool = True  # publishing needs a signed URL
    play: bool = True  # playing needs a signed URL


@dataclass
class Vhost:
    name: str = DEFAULT_VHOST
    enabled: bool = True
    chunk_size: int | None = None
    min_latency: bool = False
    tcp_nodelay: bool = False
    cluster: Cluster = field(default_factory=Cluster)
    http_remux: HttpRemux = field(default_factory=HttpRemux)
    hls: Hls = field(default_factory=Hls)
    dvr: Dvr = field(default_factory=Dvr)
    play: Play = field(default_factory=Play)
    publish: Publish = field(default_factory=Publish)
    forward: Forward = field(default_factory=Forward)
    exec: Exec = field(default_factory=Exec)
    transcode: list[Transcode] = field(default_factory=list)
    ingest: list[Ingest] = field(default_factory=list)
    http_hooks: HttpHooks = field(default_factory=HttpHooks)
    security: Security = field(default_factory=Security)
    refer: Refer = field(default_factory=Refer)
    signed_url: SignedUrl = field(default_factory=SignedUrl)


@dataclass
class Config:
    path: str | None = None
    listen: list[Listen] = field(default_factory=lambda: [Listen("0.0.0.0", 1935)])
    max_connections: int = 1000
    workers: int | str = 1  # tidecast: processes sharing the ports (SO_REUSEPORT); "auto" = CPUs available
    pid: str = "./objs/srs.pid"
    daemon: bool = True
    disable_daemon_for_docker: bool = True
    in_docker: bool = False
    srs_log_tank: str = "console"
    srs_log_level: str = "trace"
    srs_log_file: str = "./objs/srs.log"
    log_format: str = "text"  # tidecast: text or json
    chunk_size: int = 60000
    empty_ip_ok: bool = True
    handshake_timeout: int = 30000  # tidecast: ms from accept to publish or play
    grace_start_wait: int = 2300
    grace_final_wait: int = 3200
    force_grace_quit: bool = False
    grace_drain_timeout: int = 0  # tidecast: ms bound on a graceful drain; 0 waits forever, as SRS
    grace_drain_pace: int = 0  # tidecast: players closed per second once the listeners closed; 0: never, as SRS
    inotify_auto_reload: bool = False
    auto_reload_for_docker: bool = True
    http_api: HttpApi = field(default_factory=HttpApi)
    http_server: HttpServer = field(default_factory=HttpServer)
    exporter: Exporter = field(default_factory=Exporter)
    vhosts: dict[str, Vhost] = field(default_factory=lambda: {DEFAULT_VHOST: Vhost()})
    unsupported: list[str] = field(default_factory=list)

    def dump(self) -> str:
        """The effective settings in srs.conf syntax (what `tidecast config check` prints)."""
        from tidecast.config import dump

        return dump(self)

    def vhost(self, name: str) -> Vhost:
        """SRS's lookup: the exact vhost, else the default one."""
        found = self.vhosts.get(name)
        if found is None:
            found = self.vhosts.get(DEFAULT_VHOST)
        if found is None:
            found = self.vhosts[DEFAULT_VHOST] = Vhost()
        return found
