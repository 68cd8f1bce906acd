"""The composition root: builds the hub, HLS, edge, origin cluster, listeners and the HTTP side, and wires them.

It is the only module that knows them all. Lifecycle follows SRS so Kubernetes
manifests written for SRS behave the same: SIGQUIT (or SIGTERM with
`force_grace_quit`) drains, SIGTERM and SIGINT quit fast, SIGHUP reloads; a
config that fails to load, or a listen that cannot bind, never takes the
server down: the reload is refused and the running config keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from tidecast import __version__
from tidecast.access import AccessControl, HookCaller
from tidecast.cluster.edge import EdgeManager
from tidecast.cluster.origin import OriginCluster
from tidecast.compiled import compiled_modules, stale_extensions
from tidecast.config import Config, ConfigError, Listen, load_config
from tidecast.config.watch import ConfigWatcher, auto_reload_enabled
from tidecast.dvr.manager import DvrManager
from tidecast.hls.manager import HlsManager
from tidecast.live.hub import Hub
from tidecast.log import SRS_LEVELS, RateLimitedLogger, reopen_log_files
from tidecast.multi.node import WorkerNode, relay_config
from tidecast.multi.role import WorkerRole
from tidecast.net import acceptor
from tidecast.net.hls_admission import HlsAdmission
from tidecast.net.hls_fetch import HlsFetcher
from tidecast.net.http import HlsServing, start_http
from tidecast.net.http_lane import PlayLane
from tidecast.net.llhls import LlHlsHandler
from tidecast.net.node import ApiRoutes, MetricSource, StreamDetails
from tidecast.net.rates import Rates
from tidecast.net.rtmp_server import RtmpConnection
from tidecast.pauses import Pauses
from tidecast.relay import Relays
from tidecast.relay.api import relay_routes
from tidecast.sysinfo import CpuSampler
from tidecast.wiring import AccessSlot, RelayObserver, file_backlog_metrics

log = logging.getLogger("tidecast.server")
_loop_errors = RateLimitedLogger(log)

# SRS's reload states, reported by /api/v1/raw?rpc=reload-fetch.
RELOAD_OK = 90
RELOAD_PARSE_FAILED = 10
RELOAD_CHECK_FAILED = 20
RELOAD_LISTEN_FAILED = 30
RELOAD_PARSE_BUDGET_S = 5.0
# A tick this late means the loop stalled: reads queued behind it go first, timeouts wait a tick.
TICK_STALL_S = 0.5
HOOK_DRAIN_S = 3.0
HTTP_PLAYERS = ("flv-play", "mp4-play")  # what a graceful drain waits for besides RTMP connections


class Service(Protocol):
    """What the root drives besides connections: a 1 s tick, config reloads, the final close."""

    def tick(self, now: float) -> None: ...

    def reload(self) -> None: ...

    def close(self) -> Any: ...


class App:
    def __init__(self, config: Config, role: WorkerRole | None = None) -> None:
        """`role`: set in a worker of a `workers N` server (its supervisor owns the pid file); None alone."""
        self.role = role
        self.worker: WorkerNode | None = None
        self.loop = asyncio.get_running_loop()
        self.started = time.time()
        self.hub = Hub(config, self.loop, server_id=f"vid-{os.getpid():x}{int(self.started) % 100000:05d}")
        self.connections: set[object] = set()
        self.rtmp_listeners: dict[Listen, acceptor.Acceptor] = {}
        self.http_listeners: list[acceptor.Acceptor] = []
        self.http_runners: list[web.AppRunner] = []
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
        self.counts: dict[str, int] = {}  # open connections by kind: rtmp, http, api, exporter
        self.rejected_connections = 0
        self._last_drop_log = 0.0
        self._housekeeping: asyncio.Task[None] | None = None
        self._watcher: ConfigWatcher | None = None
        self.cpu = CpuSampler()
        self.rates = Rates()
        self.pauses = Pauses()
        self.api_service_id = ""
        self.metric_sources: list[MetricSource] = []
        self.api_routes: list[ApiRoutes] = []
        self.stream_details: list[StreamDetails] = []
        self.relays: Relays | None = None
        self.dvr: DvrManager | None = None
        self.access: AccessSlot | None = None
        self.hls_admission: HlsAdmission | None = None
        self.services: list[Service] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def config(self) -> Config:
        return self.hub.config

    # ------------------------------------------------------------ connections (net.counted.Admission)

    def admit(self, conn: object) -> bool:
        if self.quitting:
            return False
        # RTMP, the HTTP port and the API port have a budget each, so idle sockets on one never starve another.
        kind = getattr(conn, "kind", "rtmp")
        if self.counts.get(kind, 0) >= self.config.max_connections:
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
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return True

    def release(self, conn: object) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            kind = getattr(conn, "kind", "rtmp")
            self.counts[kind] -= 1

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining

    # ------------------------------------------------------------ building

    async def start(self) -> None:
        self.loop.set_exception_handler(self._loop_error)
        self.pauses.install()
        self.metric_sources.append(self.pauses.metrics)
        hub = self.hub
        access = self.access = AccessSlot(hub, AccessControl(self.config, HookCaller(), service_id=hub.server_id))
        hub.gates.append(access)  # local checks and hooks before anything asks other nodes
        hub.notified.append(access)
        self.metric_sources.append(access.current.caller.metrics)
        hls = HlsManager(hub, on_hls=access.on_hls)
        edge = EdgeManager(hub)
        origin = OriginCluster(hub)
        dvr = self.dvr = DvrManager(lambda: hub.streams.values(), on_dvr=access.on_dvr)
        hub.observers += [hls, dvr, edge]
        self.services.append(_Tick(dvr.tick, dvr.reload, dvr.shutdown))
        self.metric_sources.append(file_backlog_metrics({"hls": hls.file_backlog, "dvr": dvr.file_backlog}))
        hub.gates += [edge, origin]
        self.metric_sources.append(edge.metrics)
        self.services += [_Tick(hls.tick, hls.reload, hls.close), _Tick(None, None, edge.close)]
        self.services.append(_Tick(None, None, origin.close))
        relays = self.relays = Relays(relay_config(self.config, self.role), server_id=hub.server_id)
        hub.observers.append(RelayObserver(hub, relays))
        self.metric_sources.append(relays.metrics)
        self.api_routes.append(lambda reply: relay_routes(lambda: self.relays, reply))
        self.stream_details.append(relays.describe)
        if self.role is not None:
            self.worker = WorkerNode(self, self.role, origin)
            self.worker.install()
        for listen in self.config.listen:
            await self._open_rtmp(listen)
        hls_live = LlHlsHandler(hls.store)
        fetch = HlsFetcher(lambda: hub.config)  # edges with hls_fetch on: HLS from the origins
        self.metric_sources.append(fetch.metrics)
        self.services.append(_Tick(None, fetch.reload, fetch.close))
        self.hls_admission = HlsAdmission(hub, access)  # HLS plays pass the same access checks
        serving = HlsServing(edge.keep_pulling, hls_live, fetch, hls.writing, self.hls_admission)
        lane = PlayLane(hub)  # HTTP-FLV plays below aiohttp
        self.services.append(_Tick(None, None, lane.close))
        if self.worker is not None:
            await self.worker.start()
            self.http_listeners, self.http_runners = await start_http(
                self, origin, serving, self.worker.middlewares, reuse_port=True, lane=lane
            )
        else:
            self.http_listeners, self.http_runners = await start_http(self, origin, serving, lane=lane)
        relays.start()  # ingests publish to our own RTMP listener
        self._housekeeping = asyncio.create_task(self._tick())
        self._install_signals()
        self._start_watcher()
        self.ready = True
        compiled = compiled_modules()
        log.info(
            "tidecast %s ready: rtmp %s, api %s, http %s, pid %d, %s",
            __version__,
            " ".join(str(x) for x in self.config.listen),
            self.config.http_api.listen if self.config.http_api.enabled else "off",
            self.config.http_server.listen if self.config.http_server.enabled else "off",
            os.getpid(),
            f"compiled ({len(compiled)} modules)" if compiled else "pure Python",
        )
        for stale in stale_extensions():
            log.warning("compiled module %s: its changes do not run; rebuild, or delete the .so", stale)

    async def _open_rtmp(self, listen: Listen) -> acceptor.Acceptor:
        server = acceptor.listen(
            lambda: RtmpConnection(self.hub, self),
            listen.host,
            listen.port,
            f"RTMP {listen}",
            reuse_port=self.role is not None,  # workers share the port; the kernel spreads connections
        )
        self.rtmp_listeners[listen] = server
        log.info("RTMP listen at %s", listen)
        return server

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors no one caught go to tidecast's log, rate-limited, not to a bare stderr traceback."""
        exc = context.get("exception")
        message = context.get("message", "unhandled error")
        if exc is not None:
            _loop_errors.error("%s: %s: %s", message, type(exc).__name__, exc, exc_info=exc)
        else:
            _loop_errors.error("%s", message)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_watcher(self) -> None:
        if self.config.path and auto_reload_enabled(self.config):
            self._watcher = ConfigWatcher(self.config.path, lambda: self._spawn(self.reload("inotify")))
            self._watcher.start()

    def _install_signals(self) -> None:
        loop = self.loop
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload("signal")))
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

    # ------------------------------------------------------------ signals

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
        expected = time.monotonic() + 1.0
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            late = now - expected
            stalled = late > TICK_STALL_S
            expected = now + 1.0
            self.pauses.tick(now, late)
            try:
                if not stalled:
                    for conn in list(self.connections):
                        check = getattr(conn, "check_timeouts", None)
                        if check is not None:
                            check(now)
                self.hub.sweep()
                self._sample(now)
                for service in self.services:
                    service.tick(now)
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

    async def reload(self, source: str = "api") -> bool:
        """Load the config file again; a bad file or an unbindable listen is refused and the old config serves on."""
        self.reloads += 1
        rid = f"{int(time.time() * 1000):x}"
        if source == "signal":
            log.info("reload config, signo=%d", signal.SIGHUP)
        log.info("starting reload config (%s).", source)
        state = RELOAD_PARSE_FAILED
        try:
            if not self.config.path:
                raise ConfigError("env-only mode: there is no config file to reload")
            # Parsing reads files (includes may name anything): off the loop, within a budget.
            async with asyncio.timeout(RELOAD_PARSE_BUDGET_S):
                new = await self.loop.run_in_executor(None, load_config, self.config.path)
            state = RELOAD_CHECK_FAILED
            self._check_reload(new)
            access = None
            if self.access is not None:  # a signed_url secret that cannot be read refuses the reload
                caller = self.access.current.caller
                access = AccessControl(new, caller, service_id=self.hub.server_id)
            state = RELOAD_LISTEN_FAILED
            await self._apply_listen(new)
        except TimeoutError:
            budget = f"parsing took longer than {RELOAD_PARSE_BUDGET_S:.0f} s (an include naming a pipe?)"
            return self._refuse(rid, state, budget)
        except ConfigError as exc:
            return self._refuse(rid, state, str(exc))
        except OSError as exc:
            return self._refuse(rid, state, f"listen: {exc}; the old listeners keep serving")
        except Exception as exc:  # never a 500 or a dead server for a reload
            log.exception("reload failed unexpectedly")
            return self._refuse(rid, state, f"{type(exc).__name__}: {exc}")
        if access is not None and self.access is not None:
            self.access.current = access
        if self.hls_admission is not None:
            self.hls_admission.forget_all()
        self._apply(new, rid)
        return True

    def _refuse(self, rid: str, state: int, message: str) -> bool:
        self.reload_failures += 1
        self.reload_state = {"err": 1, "msg": message, "state": state, "rid": rid}
        log.error("reload failed, state=%d, err %s; keeping the running config", state, message)
        return False

    def _check_reload(self, new: Config) -> None:
        for name, vhost in self.config.vhosts.items():
            other = new.vhosts.get(name)
            if other is not None and other.cluster.mode != vhost.cluster.mode:
                raise ConfigError(
                    f"{new.path}: vhost {name}: cluster.mode cannot change on reload "
                    f"({vhost.cluster.mode} -> {other.cluster.mode}); restart the server instead"
                )

    async def _apply_listen(self, new: Config) -> None:
        """Bind what is new before closing what is gone: a port in use fails the reload with nothing closed."""
        opened: list[Listen] = []
        try:
            for listen in [x for x in new.listen if x not in self.rtmp_listeners]:
                await self._open_rtmp(listen)
                opened.append(listen)
        except OSError:
            for listen in opened:
                self.rtmp_listeners.pop(listen).close()
            raise
        for listen in [x for x in self.rtmp_listeners if x not in new.listen]:
            self.rtmp_listeners.pop(listen).close()
            log.info("RTMP listener %s closed by reload", listen)

    def _apply(self, new: Config, rid: str) -> None:
        old = self.config
        if new.http_api != old.http_api or new.http_server != old.http_server:
            log.warning("reload: http_api and http_server changes need a restart (as in SRS 5); kept the running ones")
        if new.workers != old.workers:
            log.warning(
                "reload: %s: workers %s -> %s needs a restart; the running processes keep serving",
                new.path,
                old.workers,
                new.workers,
            )
        self.hub.apply_config(new)
        for service in self.services:
            service.reload()
        if self.relays is not None:
            self.relays.reload(relay_config(new, self.role))
        logging.getLogger("tidecast").setLevel(SRS_LEVELS.get(new.srs_log_level, logging.INFO))
        self.reload_state = {"err": 0, "msg": "", "state": RELOAD_OK, "rid": rid}
        log.info("reload config success, state=%d.", RELOAD_OK)

    # ------------------------------------------------------------ quitting

    async def run(self) -> int:
        await self._quit.wait()
        if self.draining and not self._fast:
            await self._graceful()
        else:
            log.info("cleanup for quit signal fast=1, grace=0")
            if self.relays is not None:
                self.relays.kill_all()
            await self._close_listeners()
            # Everyone goes now, as SRS drops them on a fast quit: an HTTP-FLV player left streaming
            # would hold the HTTP server's shutdown (it waits for running requests) and the quit with it.
            self._close_all_connections()
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
        self.hub.accepting = False
        for server in self.rtmp_listeners.values():
            server.close()
        self.rtmp_listeners.clear()

    def media_connections(self) -> int:
        """What a graceful quit waits for: RTMP connections and HTTP-FLV players, not API calls."""
        rtmp = sum(1 for conn in self.connections if isinstance(conn, RtmpConnection))
        return rtmp + sum(1 for client in self.hub.clients.values() if client.type in HTTP_PLAYERS)

    async def _sleep_unless_fast(self, seconds: float) -> None:
        """Sleep, but return early when SIGINT asks for a fast quit."""
        self._quit.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._quit.wait()
        except TimeoutError:
            pass

    async def _graceful(self) -> None:
        cfg = self.config
        log.info("cleanup for quit signal fast=0, grace=1")
        # Listeners stay open and new plays are still served: Kubernetes may still route new
        # connections here until the endpoint removal reaches every node (SRS #1595).
        await self._sleep_unless_fast(cfg.grace_start_wait / 1000.0)
        log.info("start wait for %dms", cfg.grace_start_wait)
        self._close_media_listeners()
        log.info("listeners closed")
        if self.relays is not None:
            await self.relays.ingest.close()  # as SRS stops its ingesters with its listeners
        started = time.monotonic()
        step = 1
        next_log = started
        bound = cfg.grace_drain_timeout / 1000.0
        pace = cfg.grace_drain_pace
        paced = 0.0  # players due to be closed so far
        while self.media_connections() and not self._fast:
            now = time.monotonic()
            if pace:
                due = int((now - started) * pace) - int(paced)
                if due > 0:
                    paced += self._close_some_players(due)
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
        if self.dvr is not None:
            self.dvr.close()  # recordings are closed properly before the final wait
        log.info("source disposed")
        await self._sleep_unless_fast(cfg.grace_final_wait / 1000.0)
        log.info("final wait for %dms", cfg.grace_final_wait)
        log.info("tidecast gracefully quit")

    def _close_some_players(self, count: int) -> int:
        """Close up to `count` players (publishers only once no player is left): a paced drain."""
        players = [c for c in self.hub.clients.values() if not c.is_publisher]
        chosen = players[:count] or [c for c in self.hub.clients.values() if c.is_publisher][:count]
        for client in chosen:
            client.kick()
        return max(len(chosen), count)

    def _close_all_connections(self) -> None:
        for conn in list(self.connections):
            if isinstance(conn, RtmpConnection):
                conn.close()
        for client in list(self.hub.clients.values()):
            client.kick()

    async def _dispose(self) -> None:
        self.pauses.uninstall()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._watcher is not None:
            self._watcher.stop()
        for service in self.services:
            result = service.close()
            if asyncio.iscoroutine(result):
                await result
        if self.relays is not None:
            await self.relays.close()
        if self.access is not None:
            await self.access.current.caller.close(drain=HOOK_DRAIN_S)  # queued notifications get a moment
        for runner in self.http_runners:
            await runner.cleanup()


class _Tick:
    """A Service made of plain callables, for parts that need only some of the lifecycle."""

    __slots__ = ("_close", "_reload", "_tick")

    def __init__(
        self,
        tick: Callable[[float], None] | None,
        reload: Callable[[], None] | None,
        close: Callable[[], Any] | None,
    ) -> None:
        self._tick = tick
        self._reload = reload
        self._close = close

    def tick(self, now: float) -> None:
        if self._tick is not None:
            self._tick(now)

    def reload(self) -> None:
        if self._reload is not None:
            self._reload()

    def close(self) -> Any:
        return self._close() if self._close is not None else None
