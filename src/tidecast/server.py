"""The server: listeners, signals, reload, graceful drain.

Lifecycle follows SRS so Kubernetes manifests written for SRS behave the same:
SIGQUIT (or SIGTERM with `force_grace_quit`) drains, SIGTERM and SIGINT quit
fast, SIGHUP reloads; a config that fails to load never takes the server down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tidecast import __version__
from tidecast.config import Config, ConfigError, Listen, load_config
from tidecast.live.client import Client
from tidecast.live.hub import Hub
from tidecast.live.player import Player
from tidecast.live.stream import LiveStream
from tidecast.log import SRS_LEVELS, reopen_log_files
from tidecast.net.rates import Rates
from tidecast.net.urls import StreamTarget
from tidecast.sysinfo import CpuSampler

log = logging.getLogger("tidecast.server")

# SRS's reload states, reported by /api/v1/raw?rpc=reload-fetch.
RELOAD_OK = 90
RELOAD_PARSE_FAILED = 10
RELOAD_CHECK_FAILED = 20


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.hub = Hub(config)
        self.started = time.time()
        self.connections: set[object] = set()
        self.max_message_size = 8 * 1024 * 1024
        self.rtmp_listeners: dict[Listen, asyncio.AbstractServer] = {}
        self.http_listeners: list[asyncio.AbstractServer] = []
        self.ready = False
        self.draining = False
        self.quitting = False
        self._quit = asyncio.Event()
        self._fast = False
        self.exit_code = 0
        self.reloads = 0
        self.reload_failures = 0
        self.reload_state: dict[str, Any] = {"err": 0, "msg": "", "state": 0, "rid": ""}
        self.connections_total = 0
        self.connection_errors = 0
        self.rejected_connections = 0
        self._last_drop_log = 0.0
        self._housekeeping: asyncio.Task[None] | None = None
        self.cpu = CpuSampler()
        self.rates = Rates()
        self.api_service_id = ""
        self.metric_sources: list[Callable[[], Any]] = []
        self.http_redirects: list[Callable[[str, str, str, Any], Awaitable[str | None]]] = []
        self._watcher: Any = None
        # Extension points used by the HLS muxers, the edge and the origin cluster.
        self.publish_checks: list[Callable[[LiveStream, StreamTarget], str | None]] = []
        # Gates may ask other nodes (the origin cluster), hence awaitable.
        self.play_gates: list[Callable[[str, StreamTarget, str], Awaitable[dict[str, Any] | None]]] = []
        self.publish_gates: list[Callable[[LiveStream, StreamTarget], Awaitable[str | None]]] = []
        self.edge: Any = None
        self.clusters_query: Callable[[Any], dict[str, Any]] | None = None
        self.cluster_view: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]] | None = None
        self.play_hooks: list[Callable[[LiveStream, Player], None]] = []
        self.stop_play_hooks: list[Callable[[LiveStream, Player], None]] = []
        self.publish_hooks: list[Callable[[LiveStream, Client], None]] = []
        self.unpublish_hooks: list[Callable[[LiveStream, Client], None]] = []
        self.tick_hooks: list[Callable[[float], None]] = []
        self.close_hooks: list[Callable[[], Any]] = []
        self.reload_hooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------ connections

    def admit(self, conn: object) -> bool:
        if self.quitting:
            return False
        if len(self.connections) >= self.config.max_connections:
            self.rejected_connections += 1
            now = time.monotonic()
            # A connection storm must not become a log storm: one line a second.
            if now - self._last_drop_log >= 1.0:
                log.warning(
                    "drop connection: %d connections reached max_connections %d (%d dropped so far); "
                    "raise max_connections or add nodes",
                    len(self.connections),
                    self.config.max_connections,
                    self.rejected_connections,
                )
                self._last_drop_log = now
            return False
        self.connections.add(conn)
        self.connections_total += 1
        return True

    def release(self, conn: object) -> None:
        self.connections.discard(conn)

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining

    def static_root_for(self, rel: str) -> str:
        """HLS files come from the vhost's hls_path; everything else from http_server.dir."""
        if rel.endswith((".m3u8", ".ts")):
            vhost = self.config.vhost("__defaultVhost__")
            if vhost is not None and vhost.hls.enabled:
                candidate = os.path.join(vhost.hls.hls_path, rel)
                if os.path.exists(candidate):
                    return vhost.hls.hls_path
        return self.config.http_server.dir

    async def http_play_redirect(self, vhost: str, app: str, name: str, request: Any) -> str | None:
        for redirect in self.http_redirects:
            url = await redirect(vhost, app, name, request)
            if url is not None:
                return url
        return None

    def check_publish(self, stream: LiveStream, target: StreamTarget) -> str | None:
        if stream.publisher is not None:
            return f"stream {stream.vhost}{stream.url} is already being published"
        for check in self.publish_checks:
            reason = check(stream, target)
            if reason is not None:
                return reason
        return None

    async def check_publish_remote(self, stream: LiveStream, target: StreamTarget) -> str | None:
        for gate in self.publish_gates:
            reason = await gate(stream, target)
            if reason is not None:
                return reason
        return None

    async def check_play(self, vhost: str, target: StreamTarget, asked_host: str) -> dict[str, Any] | None:
        for gate in self.play_gates:
            info = await gate(vhost, target, asked_host)
            if info is not None:
                return info
        return None

    def on_publish(self, stream: LiveStream, client: Client) -> None:
        for hook in self.publish_hooks:
            hook(stream, client)

    def on_unpublish(self, stream: LiveStream, client: Client) -> None:
        for hook in self.unpublish_hooks:
            hook(stream, client)

    def on_play(self, stream: LiveStream, player: Player) -> None:
        for hook in self.play_hooks:
            hook(stream, player)

    def on_stop_play(self, stream: LiveStream, player: Player) -> None:
        for hook in self.stop_play_hooks:
            hook(stream, player)

    def advertised_ip(self, asked_host: str = "") -> str:
        """The address other nodes should use for this one (SRS #1501)."""
        for listen in self.config.listen:
            if listen.host not in ("0.0.0.0", "::", "127.0.0.1", ""):
                return listen.host
        pod_ip = os.environ.get("POD_IP", "")
        if pod_ip:
            return pod_ip
        if asked_host:
            return asked_host
        for listen in self.config.listen:
            if listen.host not in ("0.0.0.0", "::", ""):
                return listen.host
        return "127.0.0.1"

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        from tidecast.cluster.edge import EdgeManager
        from tidecast.cluster.origin import OriginCluster
        from tidecast.live.hls_sink import HlsManager
        from tidecast.net.http import start_http

        HlsManager(self)
        EdgeManager(self)
        OriginCluster(self)
        for listen in self.config.listen:
            await self._open_rtmp(listen)
        await start_http(self)
        self._housekeeping = asyncio.create_task(self._tick())
        self._install_signals()
        self._start_watcher()
        self.ready = True
        log.info(
            "tidecast %s ready: rtmp %s, api %s, http %s, pid %d",
            __version__,
            " ".join(str(x) for x in self.config.listen),
            self.config.http_api.listen if self.config.http_api.enabled else "off",
            self.config.http_server.listen if self.config.http_server.enabled else "off",
            os.getpid(),
        )

    async def _open_rtmp(self, listen: Listen) -> None:
        from tidecast.net.rtmp_server import RtmpConnection

        server = await self.loop.create_server(
            lambda: RtmpConnection(self), listen.host, listen.port, reuse_address=True, backlog=1024
        )
        self.rtmp_listeners[listen] = server
        log.info("RTMP listen at %s", listen)

    def _start_watcher(self) -> None:
        from tidecast.config.watch import ConfigWatcher, auto_reload_enabled

        if self.config.path and auto_reload_enabled(self.config):
            self._watcher = ConfigWatcher(self.config.path, lambda: self.reload("inotify"))
            self._watcher.start()

    def _install_signals(self) -> None:
        loop = self.loop
        loop.add_signal_handler(signal.SIGHUP, self.reload, "signal")
        loop.add_signal_handler(signal.SIGQUIT, self._on_graceful_signal, signal.SIGQUIT)
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_fast_signal, signal.SIGINT)
        loop.add_signal_handler(signal.SIGUSR1, self._on_reopen)
        loop.add_signal_handler(signal.SIGUSR2, self._on_usr2)
        log.info(
            "signal installed, reload=%d, reopen=%d, fast_quit=%d, grace_quit=%d",
            signal.SIGHUP,
            signal.SIGUSR1,
            signal.SIGTERM,
            signal.SIGQUIT,
        )

    def _on_term(self) -> None:
        if self.config.force_grace_quit:
            log.info("force gracefully quit, signo=%d", signal.SIGTERM)
            self._on_graceful_signal(signal.SIGTERM)
        else:
            log.info("sig=%d, user terminate program, fast quit", signal.SIGTERM)
            self._on_fast_signal(signal.SIGTERM)

    def _on_graceful_signal(self, signo: int) -> None:
        if signo == signal.SIGQUIT:
            log.info("sig=%d, user start gracefully quit", signo)
        self.request_graceful_quit()

    def _on_fast_signal(self, signo: int) -> None:
        if signo == signal.SIGINT:
            log.info("sig=%d, user terminate program, fast quit", signo)
        self._fast = True
        self._quit.set()

    def _on_reopen(self) -> None:
        log.info("reopen log files, signo=%d", signal.SIGUSR1)
        reopen_log_files()

    def _on_usr2(self) -> None:
        log.warning("sig=%d (SIGUSR2) ignored: in-place upgrade is not supported; roll out a new pod", signal.SIGUSR2)

    def request_graceful_quit(self) -> None:
        if not self.draining:
            self.draining = True
            self._quit.set()

    # ------------------------------------------------------------ housekeeping

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            try:
                for conn in list(self.connections):
                    check = getattr(conn, "check_timeouts", None)
                    if check is not None:
                        check(now)
                self.hub.sweep()
                self._sample(now)
                for hook in self.tick_hooks:
                    hook(now)
            except Exception:
                log.exception("housekeeping failed")

    def _sample(self, now: float) -> None:
        self.cpu.sample()
        rates = self.rates
        by_vhost: dict[str, list[int]] = {}
        for stream in self.hub.streams.values():
            sent = stream.send_bytes
            rates.add(stream.id, stream.recv_bytes, sent, now)
            totals = by_vhost.setdefault(stream.vhost, [0, 0])
            totals[0] += stream.recv_bytes
            totals[1] += sent
        for name, (recv, sent) in by_vhost.items():
            rates.add(f"vhost:{name}", recv, sent, now)
        rates.forget({s.id for s in self.hub.streams.values()} | {f"vhost:{n}" for n in by_vhost})

    # ------------------------------------------------------------ reload

    def reload(self, source: str = "api") -> bool:
        """Load the config file again; a bad file is refused and the old one keeps serving."""
        self.reloads += 1
        rid = f"{int(time.time() * 1000):x}"
        if source == "signal":
            log.info("reload config, signo=%d", signal.SIGHUP)
        log.info("starting reload config (%s).", source)
        try:
            if not self.config.path:
                raise ConfigError("env-only mode: there is no config file to reload")
            new = load_config(self.config.path)
            self._check_reload(new)
        except ConfigError as exc:
            self.reload_failures += 1
            state = RELOAD_PARSE_FAILED
            self.reload_state = {"err": 1, "msg": str(exc), "state": state, "rid": rid}
            log.error("reload failed, state=%d, err %s; keeping the running config", state, exc)
            return False
        self.loop.create_task(self._apply(new, rid))
        return True

    def _check_reload(self, new: Config) -> None:
        for name, vhost in self.config.vhosts.items():
            other = new.vhosts.get(name)
            if other is not None and other.cluster.mode != vhost.cluster.mode:
                raise ConfigError(
                    f"{new.path}: vhost {name}: cluster.mode cannot change on reload "
                    f"({vhost.cluster.mode} -> {other.cluster.mode}); restart the server instead"
                )

    async def _apply(self, new: Config, rid: str) -> None:
        old = self.config
        try:
            for listen in [x for x in self.rtmp_listeners if x not in new.listen]:
                server = self.rtmp_listeners.pop(listen)
                server.close()
                log.info("RTMP listener %s closed by reload", listen)
            for listen in [x for x in new.listen if x not in self.rtmp_listeners]:
                await self._open_rtmp(listen)
        except OSError as exc:
            self.reload_failures += 1
            self.reload_state = {"err": 1, "msg": f"listen: {exc}", "state": 30, "rid": rid}
            log.error("reload failed while applying listen, state=30, err %s; other settings applied", exc)
        if new.http_api != old.http_api or new.http_server != old.http_server:
            log.warning("reload: http_api and http_server changes need a restart (as in SRS 5); kept the running ones")
        self.config = new
        self.hub.apply_config(new)
        for hook in self.reload_hooks:
            hook()
        logging.getLogger("tidecast").setLevel(SRS_LEVELS.get(new.srs_log_level, logging.INFO))
        if self.reload_state.get("rid") != rid:
            self.reload_state = {"err": 0, "msg": "", "state": RELOAD_OK, "rid": rid}
        log.info("reload config success, state=%d.", RELOAD_OK)

    # ------------------------------------------------------------ quitting

    async def run(self) -> int:
        await self._quit.wait()
        if self.draining and not self._fast:
            await self._graceful()
        else:
            log.info("cleanup for quit signal fast=1, grace=0")
            await self._close_listeners()
        await self._dispose()
        log.info("tidecast terminated")
        return self.exit_code

    async def _close_listeners(self) -> None:
        self.quitting = True
        self._close_media_listeners()
        for server in self.http_listeners:
            server.close()
        self.http_listeners.clear()

    def _close_media_listeners(self) -> None:
        """Refuse new publishers and players; HTTP stays up so probes and scrapes keep answering
        (a liveness probe failing mid-drain would get the pod killed before its players left)."""
        for server in self.rtmp_listeners.values():
            server.close()
        self.rtmp_listeners.clear()

    def media_connections(self) -> int:
        """What a graceful quit waits for: RTMP connections and HTTP-FLV players, not API calls."""
        from tidecast.net.rtmp_server import RtmpConnection

        rtmp = sum(1 for conn in self.connections if isinstance(conn, RtmpConnection))
        return rtmp + sum(1 for client in self.hub.clients.values() if client.type == "flv-play")

    async def _sleep_unless_fast(self, seconds: float) -> None:
        """Sleep, but return early when SIGINT asks for a fast quit."""
        self._quit.clear()
        try:
            await asyncio.wait_for(self._quit.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _graceful(self) -> None:
        cfg = self.config
        log.info("cleanup for quit signal fast=0, grace=1")
        # Listeners stay open: Kubernetes may still route new connections here
        # until the Service update reaches every node (SRS #1595).
        await self._sleep_unless_fast(cfg.grace_start_wait / 1000.0)
        log.info("start wait for %dms", cfg.grace_start_wait)
        self._close_media_listeners()
        log.info("listeners closed")
        started = time.monotonic()
        step = 1
        next_log = started
        bound = cfg.grace_drain_timeout / 1000.0
        while self.media_connections() and not self._fast:
            now = time.monotonic()
            if bound and now - started >= bound:
                log.warning(
                    "drain bound grace_drain_timeout=%dms reached, closing %d connections",
                    cfg.grace_drain_timeout,
                    self.media_connections(),
                )
                self._close_all_connections()
                await asyncio.sleep(0.2)
                break
            if now >= next_log:
                log.info("wait for %d conns to quit", self.media_connections())
                next_log = now + step
                step = (step * 2) % 33 or 1
            await self._sleep_unless_fast(0.1)
        if self._fast:
            return
        log.info("source disposed")
        await self._sleep_unless_fast(cfg.grace_final_wait / 1000.0)
        log.info("final wait for %dms", cfg.grace_final_wait)
        log.info("tidecast gracefully quit")

    def _close_all_connections(self) -> None:
        for conn in list(self.connections):
            close = getattr(conn, "close", None)
            if close is not None:
                close()
            transport = getattr(getattr(conn, "inner", None), "transport", None)
            if transport is not None:
                transport.close()

    async def _dispose(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._watcher is not None:
            self._watcher.stop()
        for hook in self.close_hooks:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
