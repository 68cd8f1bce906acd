"""SRS's HTTP hooks: POST a JSON body per event; the answer admits or refuses.

Verdict (SRS's `do_post`): HTTP 200 or 201 whose body is `0`, or a JSON object
whose integer `code` is 0, admits. Anything else refuses: another status, an
empty or non-JSON body, another number, an object without an integer `code`
or with a non-zero one, a timeout, a connection that fails. (tidecast ignores
whitespace around a bare `0`, which SRS would refuse.) Several URLs for one
hook are called in turn and the first refusal wins.

`on_connect`, `on_publish` and `on_play` hold the client until the verdict;
`on_close`, `on_unpublish`, `on_stop`, `on_dvr`, `on_hls` and the GET of
`on_hls_notify` are notifications: queued (bounded; a full queue drops and
counts) and sent by a few workers, never awaited by a client.

Bounds, so that a burst of joins or a dead hook server cannot run away: one
shared aiohttp session, at most `concurrency` admission calls in flight (plus
the notification workers), at most `queue_limit` more waiting for a slot (more
are refused at once), and the hook's `timeout` covers the wait and the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from tidecast import __version__
from tidecast.access._contract import JoinRequest, Refusal
from tidecast.config.model import DEFAULT_VHOST, HttpHooks

log = logging.getLogger("tidecast.hooks")

# SRS's error codes for the ways a hook call fails.
ERROR_SOCKET_TIMEOUT = 1011
ERROR_ST_CONNECT = 1018
ERROR_HTTP_DATA_INVALID = 3008
ERROR_RESPONSE_CODE = 3064
ERROR_HTTP_STATUS_INVALID = 4005

ADMISSION_HOOKS = {"connect": "on_connect", "publish": "on_publish", "play": "on_play"}
NOTIFY_EVENTS = {"close": "on_close", "unpublish": "on_unpublish", "stop": "on_stop"}
HLS_NOTIFY_TIMEOUT = 10.0  # SRS's fixed timeout for the on_hls_notify GET
MAX_ANSWER = 64 * 1024  # a verdict is a few bytes; more is read no further
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OK = "ok"
REFUSED = "refused"  # the hook server answered, and not with a yes
TIMEOUT = "timeout"
ERROR = "error"  # no answer: connection refused, DNS, TLS, reset
OVERLOAD = "overload"  # the waiting queue was full
DROPPED = "dropped"  # a notification found its queue full


# ---------------------------------------------------------------- bodies


def stream_url(vhost: str, app: str, stream: str) -> str:
    """SRS's `stream_url`: `/app/stream` on the default vhost, else `vhost/app/stream`."""
    name = stream.rsplit("/", 1)[-1]
    return f"{'' if vhost == DEFAULT_VHOST else vhost}/{app}/{name}"


def hook_body(
    action: str,
    request: JoinRequest,
    server_id: str | None = None,
    service_id: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """The JSON object SRS POSTs for `action` ("on_connect", "on_play", ...), with SRS's fields for it.

    `server_id` defaults to the request's; `extra` adds action-specific fields
    (on_close: send_bytes, recv_bytes; see `dvr_body`, `hls_body`).
    """
    body: dict[str, Any] = {
        "server_id": request.server_id if server_id is None else server_id,
        "service_id": service_id,
        "action": action,
        "client_id": request.client_id,
        "ip": request.ip,
        "vhost": request.vhost,
        "app": request.app,
    }
    if action == "on_close":
        body["send_bytes"] = int(extra.pop("send_bytes", 0))
        body["recv_bytes"] = int(extra.pop("recv_bytes", 0))
        body.update(extra)
        return body
    if action == "on_connect":
        body.update(stream=request.stream, param=request.param, tcUrl=request.tc_url, pageUrl=request.page_url, **extra)
        return body
    body.update(tcUrl=request.tc_url, stream=request.stream, param=request.param)
    if action == "on_play":
        body["pageUrl"] = request.page_url
    body.update(extra)
    body["stream_url"] = stream_url(request.vhost, request.app, request.stream)
    if request.stream_id:
        body["stream_id"] = request.stream_id
    return body


def dvr_body(
    request: JoinRequest, file: str, cwd: str | None = None, server_id: str | None = None, service_id: str = ""
) -> dict[str, Any]:
    """on_dvr: SRS's fields plus `cwd` (the server's working directory) and `file` (as written)."""
    return hook_body("on_dvr", request, server_id, service_id, cwd=os.getcwd() if cwd is None else cwd, file=file)


def hls_body(
    request: JoinRequest,
    file: str,
    url: str,
    m3u8: str,
    m3u8_url: str,
    seq_no: int,
    duration: float,
    cwd: str | None = None,
    server_id: str | None = None,
    service_id: str = "",
) -> dict[str, Any]:
    """on_hls: a segment was written. `url` is made relative to the playlist's directory, as SRS does."""
    url = segment_url(url, m3u8_url)
    return hook_body(
        "on_hls",
        request,
        server_id,
        service_id,
        duration=round(duration, 3),
        cwd=os.getcwd() if cwd is None else cwd,
        file=file,
        url=url,
        m3u8=m3u8,
        m3u8_url=m3u8_url,
        seq_no=seq_no,
    )


def segment_url(uri: str, m3u8_url: str) -> str:
    """A segment's URI as the playlist names it, made a path under hls_path (absolute URLs stay)."""
    prefix = m3u8_url.rsplit("/", 1)[0] if "/" in m3u8_url else ""
    if prefix and not uri.startswith(("http://", "https://")):
        return f"{prefix}/{uri}"
    return uri


def hls_notify_url(template: str, request: JoinRequest, ts_url: str, server_id: str = "", service_id: str = "") -> str:
    """on_hls_notify's GET URL: SRS's [server_id] [service_id] [app] [stream] [ts_url] [param] filled in."""
    if ts_url.startswith(("http://", "https://")):
        template = ts_url
    for key, value in (
        ("[server_id]", server_id or request.server_id),
        ("[service_id]", service_id),
        ("[app]", request.app),
        ("[stream]", request.stream),
        ("[ts_url]", ts_url),
        ("[param]", request.param),
    ):
        template = template.replace(key, value)
    return template


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: str  # OK, REFUSED, TIMEOUT, ERROR, OVERLOAD
    code: int  # SRS's error code, 0 when admitted
    detail: str  # what the hook server did, for the log line and the client's reason


def judge(status: int, body: bytes) -> Answer:
    """SRS's verdict on one HTTP answer."""
    if status not in (200, 201):
        return Answer(REFUSED, ERROR_HTTP_STATUS_INVALID, f"HTTP {status}")
    if not body:
        return Answer(REFUSED, ERROR_HTTP_DATA_INVALID, f"HTTP {status} with an empty body")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Answer(REFUSED, ERROR_HTTP_DATA_INVALID, f"HTTP {status} with a body that is not JSON")
    if not isinstance(doc, dict):
        if body.strip() == b"0":
            return Answer(OK, 0, f"HTTP {status} 0")
        return Answer(REFUSED, ERROR_HTTP_DATA_INVALID, f"HTTP {status} answering {_shown(body)}, not 0")
    code = doc.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        return Answer(REFUSED, ERROR_RESPONSE_CODE, f"HTTP {status} with no integer code")
    if code != 0:
        return Answer(REFUSED, ERROR_RESPONSE_CODE, f"HTTP {status} code {code}")
    return Answer(OK, 0, f"HTTP {status} code 0")


def _shown(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", "\\n")
    return json.dumps(text + ("…" if len(body) > limit else ""), ensure_ascii=False)


def safe_url(url: str) -> str:
    """A hook URL fit for logs: no user:password, no query values (either may carry a key)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = "&".join(f"{kv.split('=', 1)[0]}=…" for kv in parts.query.split("&") if kv) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "(unparsable URL)"


def _who(request: JoinRequest) -> str:
    where = f"{request.app}/{request.stream}" if request.stream else request.app
    return f"client {request.client_id} (ip {request.ip}, vhost {request.vhost}, {where})"


# ---------------------------------------------------------------- metrics


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


# ---------------------------------------------------------------- the caller


@dataclass(slots=True)
class _Notice:
    hook: str
    urls: Sequence[str]
    data: bytes | None  # None: a GET (on_hls_notify)
    timeout: float
    who: str


class HookCaller:
    """One per server: the shared session, the bounds, the notification workers and the counts."""

    def __init__(
        self,
        concurrency: int = 64,
        queue_limit: int = 1024,
        notify_workers: int = 4,
        notify_queue_limit: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.notify_workers = notify_workers
        self.ssl_context = ssl_context  # None: the system's CAs (SSL_CERT_FILE is honoured)
        self._slots = asyncio.Semaphore(concurrency)
        self._notices: asyncio.Queue[_Notice] = asyncio.Queue(notify_queue_limit)
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.waiting = 0
        self.in_flight = 0
        self.calls: dict[tuple[str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self._closed = False

    # -- the session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency + self.notify_workers,
                ssl=self.ssl_context if self.ssl_context is not None else True,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": f"tidecast/{__version__}"},
                auto_decompress=False,
            )
        return self._session

    async def close(self, drain: float = 0.0) -> None:
        """Stop; first give queued notifications up to `drain` seconds to go out (graceful quit)."""
        if drain > 0 and self._workers:
            try:
                async with asyncio.timeout(drain):
                    await self._notices.join()
            except TimeoutError:
                log.warning("hooks: %d notification(s) not sent at shutdown", self._notices.qsize())
        self._closed = True
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one HTTP call

    def _count(self, hook: str, verdict: str, seconds: float | None = None) -> None:
        key = (hook, verdict)
        self.calls[key] = self.calls.get(key, 0) + 1
        if seconds is not None:
            histogram = self.latency.get(hook)
            if histogram is None:
                histogram = self.latency[hook] = _Histogram()
            histogram.observe(seconds)

    async def _send(self, url: str, data: bytes | None, timeout: float) -> Answer:
        """One request, slot already held; the caller bounds the time."""
        session = self._get_session()
        try:
            if data is None:
                async with session.get(url, allow_redirects=False) as resp:
                    await _read_answer(resp)
                    return Answer(OK, 0, f"HTTP {resp.status}")
            async with session.post(
                url, data=data, headers={"Content-Type": "application/json"}, allow_redirects=False
            ) as resp:
                return judge(resp.status, await _read_answer(resp))
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
            return Answer(ERROR, ERROR_ST_CONNECT, f"no answer ({_reason(exc)})")
        except aiohttp.ClientError as exc:
            return Answer(ERROR, ERROR_ST_CONNECT, f"failed ({_reason(exc)})")

    async def call(self, hook: str, url: str, data: bytes | None, timeout: float) -> Answer:
        """One bounded call: waits for a slot (refused at once if too many wait), all within `timeout`."""
        if self._closed:
            return Answer(ERROR, ERROR_ST_CONNECT, "the server is shutting down")
        if self._slots.locked() and self.waiting >= self.queue_limit:
            self._count(hook, OVERLOAD)
            return Answer(OVERLOAD, ERROR_SOCKET_TIMEOUT, f"too many hook calls waiting ({self.waiting})")
        started = time.monotonic()
        holding = False
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    self.waiting -= 1
                    holding = True
                    self.in_flight += 1
                    try:
                        answer = await self._send(url, data, timeout)
                    finally:
                        self.in_flight -= 1
        except TimeoutError:
            if holding:
                answer = Answer(TIMEOUT, ERROR_SOCKET_TIMEOUT, f"no answer within {timeout:g} s")
            else:
                answer = Answer(TIMEOUT, ERROR_SOCKET_TIMEOUT, f"no free hook slot within {timeout:g} s")
        finally:
            if not holding:
                self.waiting -= 1
        self._count(hook, answer.verdict, time.monotonic() - started)
        return answer

    # -- admission

    async def check(
        self, hook: str, urls: Sequence[str], body: Mapping[str, Any], timeout: float, request: JoinRequest
    ) -> Refusal | None:
        """Call each URL in turn; the first that does not admit refuses, with one log line."""
        data = json.dumps(body, separators=(",", ":")).encode()
        for url in urls:
            answer = await self.call(hook, url, data, timeout)
            if answer.verdict != OK:
                log.warning("hook %s refused %s: %s %s", hook, _who(request), safe_url(url), answer.detail)
                return Refusal(answer.code, f"refused by the {hook} hook ({answer.detail})")
            if log.isEnabledFor(logging.DEBUG):  # the arguments cost more than the call's own bookkeeping
                log.debug("hook %s admitted %s: %s %s", hook, _who(request), safe_url(url), answer.detail)
        return None

    # -- notifications

    def notify(
        self, hook: str, urls: Sequence[str], body: Mapping[str, Any] | None, timeout: float, who: str = ""
    ) -> bool:
        """Queue a notification (POST `body`, or GET when `body` is None); False if it was dropped."""
        if not urls or self._closed:
            return False
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            loop = asyncio.get_running_loop()
            self._notices.put_nowait(_Notice(hook, list(urls), data, timeout, who))
        except (RuntimeError, asyncio.QueueFull) as exc:
            self._count(hook, DROPPED)
            dropped = sum(n for (_, verdict), n in self.calls.items() if verdict == DROPPED)
            if dropped == 1 or dropped % 1000 == 0:  # a flood of drops must not become a flood of lines
                why = "the notification queue is full" if isinstance(exc, asyncio.QueueFull) else "no event loop"
                log.warning("hooks: %s for %s dropped: %s (%d dropped so far)", hook, who, why, dropped)
            return False
        while len(self._workers) < self.notify_workers:
            self._workers.append(loop.create_task(self._notify_worker(), name="tidecast-hook-notify"))
        return True

    async def _notify_worker(self) -> None:
        while True:
            notice = await self._notices.get()
            try:
                for url in notice.urls:
                    answer = await self._notice_call(notice, url)
                    if answer.verdict != OK:
                        log.warning(
                            "hook %s for %s failed: %s %s", notice.hook, notice.who, safe_url(url), answer.detail
                        )
            except Exception:
                log.exception("hook %s for %s: unexpected error", notice.hook, notice.who)
            finally:
                self._notices.task_done()

    async def _notice_call(self, notice: _Notice, url: str) -> Answer:
        # Notifications have their own workers (and connections): a dead
        # on_stop server must not take the slots admission calls wait for.
        started = time.monotonic()
        try:
            async with asyncio.timeout(notice.timeout):
                answer = await self._send(url, notice.data, notice.timeout)
        except TimeoutError:
            answer = Answer(TIMEOUT, ERROR_SOCKET_TIMEOUT, f"no answer within {notice.timeout:g} s")
        self._count(notice.hook, answer.verdict, time.monotonic() - started)
        return answer

    @property
    def notify_pending(self) -> int:
        return self._notices.qsize()

    # -- metrics

    def metrics(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "tidecast_hook_calls", "HTTP hook calls by hook and verdict", labels=["hook", "verdict"]
        )
        for (hook, verdict), n in sorted(self.calls.items()):
            calls.add_metric([hook, verdict], n)
        yield calls
        latency = HistogramMetricFamily(
            "tidecast_hook_latency_seconds", "HTTP hook call time, queue wait included", labels=["hook"]
        )
        for hook, histogram in sorted(self.latency.items()):
            latency.add_metric([hook], histogram.buckets(), sum_value=histogram.sum)
        yield latency
        yield GaugeMetricFamily("tidecast_hook_in_flight", "admission hook calls in progress", value=self.in_flight)
        yield GaugeMetricFamily("tidecast_hook_waiting", "admission hook calls waiting for a slot", value=self.waiting)
        yield GaugeMetricFamily(
            "tidecast_hook_notify_queued", "notifications waiting to be sent", value=self.notify_pending
        )


async def _read_answer(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body up to MAX_ANSWER: one read() returns only what has arrived (one chunk, one segment)."""
    parts: list[bytes] = []
    size = 0
    while size < MAX_ANSWER:
        part = await resp.content.read(MAX_ANSWER - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's own text names the address; the errno's is the useful part.
        errno = exc.os_error.errno
        return f"cannot connect: {os.strerror(errno) if errno else type(exc.os_error).__name__}"
    return type(exc).__name__


# ---------------------------------------------------------------- gates and observers


class HookGate:
    """`Gate` for a vhost's on_connect / on_publish / on_play."""

    def __init__(self, caller: HookCaller, settings: HttpHooks, service_id: str = "") -> None:
        self.caller = caller
        self.settings = settings
        self.service_id = service_id

    async def check(self, request: JoinRequest) -> Refusal | None:
        hook = ADMISSION_HOOKS.get(request.action)
        if not self.settings.enabled or hook is None:
            return None
        urls: list[str] = getattr(self.settings, hook)
        if not urls:
            return None
        body = hook_body(hook, request, service_id=self.service_id)
        return await self.caller.check(hook, urls, body, self.settings.timeout, request)


class HookObserver:
    """`Observer` for a vhost's notification hooks; never blocks, never raises."""

    def __init__(self, caller: HookCaller, settings: HttpHooks, service_id: str = "", cwd: str | None = None) -> None:
        self.caller = caller
        self.settings = settings
        self.service_id = service_id
        self.cwd = cwd

    def _post(self, hook: str, body: Mapping[str, Any], request: JoinRequest) -> None:
        urls: list[str] = getattr(self.settings, hook)
        if self.settings.enabled and urls:
            self.caller.notify(hook, urls, body, self.settings.timeout, _who(request))

    def on_event(self, event: str, request: JoinRequest) -> None:
        """ "close", "unpublish" or "stop"; other events are ignored. on_close's byte counts come
        from `send_bytes`/`recv_bytes` attributes of the request when it has them (use `on_close`)."""
        try:
            hook = NOTIFY_EVENTS.get(event)
            if hook is None:
                return
            if hook == "on_close":
                sent, received = getattr(request, "send_bytes", 0), getattr(request, "recv_bytes", 0)
                self.on_close(request, sent, received)
                return
            self._post(hook, hook_body(hook, request, service_id=self.service_id), request)
        except Exception:
            log.exception("hook %s for %s: could not be queued", event, request.client_id)

    def on_close(self, request: JoinRequest, send_bytes: int, recv_bytes: int) -> None:
        body = hook_body("on_close", request, service_id=self.service_id, send_bytes=send_bytes, recv_bytes=recv_bytes)
        self._post("on_close", body, request)

    def on_dvr(self, request: JoinRequest, file: str) -> None:
        self._post("on_dvr", dvr_body(request, file, self.cwd, service_id=self.service_id), request)

    def on_hls(
        self, request: JoinRequest, file: str, url: str, m3u8: str, m3u8_url: str, seq_no: int, duration: float
    ) -> None:
        body = hls_body(request, file, url, m3u8, m3u8_url, seq_no, duration, self.cwd, service_id=self.service_id)
        self._post("on_hls", body, request)

    def on_hls_notify(self, request: JoinRequest, ts_url: str) -> None:
        """A GET to one of the on_hls_notify URLs, picked at random as SRS does; the answer is ignored."""
        templates = self.settings.on_hls_notify
        if not self.settings.enabled or not templates:
            return
        url = hls_notify_url(random.choice(templates), request, ts_url, service_id=self.service_id)
        self.caller.notify("on_hls_notify", [url], None, min(self.settings.timeout, HLS_NOTIFY_TIMEOUT), _who(request))
