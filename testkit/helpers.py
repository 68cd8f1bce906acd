"""Real-process test helpers: a tidecast server on loopback, ffmpeg publishers and players."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testkit.media import make_clip

ROOT = Path(__file__).resolve().parent.parent


def child_python_path() -> str:
    """PYTHONPATH for a child process: the build under test first (the caller's PYTHONPATH: the compiled
    build in CI, scripts/test.sh), then this checkout's sources."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT / "src")) if p)


__all__ = ["ROOT", "Publisher", "TidecastProcess", "free_port", "http_get", "http_json", "make_clip", "wait_for"]


# Ports handed out come from below the kernel's ephemeral range (32768-60999 on Linux), where no
# outgoing connection of another test can take one between our check and the server's bind, and
# each pytest-xdist worker has a slice of its own so parallel workers never hand out the same port.
_PORT_SLICE = 2500
_handed_out: set[int] = set()


def _port_range() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = 20000 + (index % 4) * _PORT_SLICE
    return range(base, base + _PORT_SLICE)


def free_port(host: str = "127.0.0.1") -> int:
    ports = list(_port_range())
    random.shuffle(ports)
    for port in ports:
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    _handed_out.clear()  # every port of the slice was handed out once: reuse those free again
    return free_port(host)


def http_get(
    url: str, timeout: float = 5.0, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def http_json(url: str, timeout: float = 5.0, method: str = "GET") -> Any:
    status, body, _ = http_get(url, timeout=timeout, method=method)
    assert status == 200, f"{url}: HTTP {status} {body[:200]!r}"
    return json.loads(body)


class TidecastProcess:
    """A `tidecast serve` child process with its own config, ports and working dir."""

    def __init__(
        self,
        workdir: Path,
        vhost: str = "",
        globals_: str = "",
        host: str = "127.0.0.1",
        http: bool = True,
        env: dict[str, str] | None = None,
        config_text: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.rtmp_port = free_port(host)
        self.api_port = free_port(host)
        self.http_port = free_port(host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.html = self.workdir / "html"
        self.html.mkdir(exist_ok=True)
        self.conf = self.workdir / "tidecast.conf"
        self.log_path = self.workdir / "tidecast.log"
        if config_text is None:
            # globals_ first: with duplicate directives the first one wins, as in SRS.
            config_text = (
                f"{globals_}\n"
                f"listen {host}:{self.rtmp_port};\n"
                "max_connections 1000;\n"
                "daemon off;\n"
                "srs_log_tank console;\n"
                "pid ./objs/srs.pid;\n"
                f"http_api {{ enabled on; listen {host}:{self.api_port}; "
                "raw_api { enabled on; allow_reload on; } }\n"
            )
            if http:
                config_text += f"http_server {{ enabled on; listen {host}:{self.http_port}; dir ./html; }}\n"
            config_text += f"vhost __defaultVhost__ {{\n{vhost}\n}}\n"
        self.conf.write_text(config_text)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def rtmp(self) -> str:
        return f"rtmp://{self.host}:{self.rtmp_port}"

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, wait: bool = True) -> TidecastProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- open for the life of the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidecast", "serve", "-c", str(self.conf)],
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"tidecast exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                status, _, _ = http_get(f"{self.api}/readyz", timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"tidecast not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signo: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signo)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def rss_kb(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def api_json(self, path: str, method: str = "GET") -> Any:
        return http_json(f"{self.api}{path}", method=method)

    def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value}, the series spelled as the exposition writes them."""
        status, body, _ = http_get(f"{self.api}/metrics")
        assert status == 200, f"/metrics: HTTP {status} {body[:200]!r}"
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out


class Publisher:
    """ffmpeg looping a clip in real time to an RTMP URL."""

    def __init__(self, clip: Path, url: str, loops: int = -1, log: Path | None = None) -> None:
        self.url = url
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 -- the child writes it
        self.proc = subprocess.Popen(
            [
                "ffmpeg",
                "-v",
                "error",
                "-re",
                "-stream_loop",
                str(loops),
                "-i",
                str(clip),
                "-c",
                "copy",
                "-f",
                "flv",
                url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def config_check(
    path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`tidecast config check -c PATH` as a user runs it: the effective settings on stdout, errors on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "tidecast", "config", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_stream_live(server: TidecastProcess, name: str = "livestream", timeout: float = 10.0) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        for s in server.api_json("/api/v1/streams?count=100")["streams"]:
            if s["name"] == name and s["publish"]["active"] and s["video"] is not None:
                return dict(s)
        return None

    return dict(wait_for(live, timeout, what=f"stream {name} to be live"))


def ffprobe_json(url_or_path: str, *extra: str, timeout: float = 30.0) -> Any:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", *extra, url_or_path],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout)


def record(url: str, out: Path, seconds: float, timeout: float = 40.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-rw_timeout",
            "15000000",
            "-i",
            url,
            "-t",
            str(seconds),
            "-c",
            "copy",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def decode_errors(path: Path) -> str:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, timeout=60)
    return out.stderr.decode(errors="replace")


def media_duration(path: Path) -> float:
    info = ffprobe_json(str(path))
    return float(info["format"].get("duration", 0.0))


@contextlib.contextmanager
def running(server: TidecastProcess) -> Iterator[TidecastProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
