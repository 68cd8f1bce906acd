"""The HAProxy tier of deploy/k8s/overlays/http-canary, run for real.

The config under test is the haproxy.cfg of the overlay's haproxy-config
ConfigMap (as `kubectl kustomize` renders it), with only the addresses
changed: the track Services become loopback backends and the binds move to
free loopback ports. Debian's haproxy checks it (`haproxy -c`) and then routes
requests by X-Traffic-Group to four backends that each name their track:
real tidecast processes serving a static file, or, as a second variant,
minimal stdlib HTTP servers.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from testkit.helpers import ROOT, TidecastProcess, free_port, wait_for

OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "http-canary"
TRACKS = ("internal", "free", "paid", "production")
INSTALL_HAPROXY = "apt-get install -y haproxy"


def configmap_haproxy_cfg() -> str:
    """haproxy.cfg from the overlay's haproxy-config ConfigMap."""
    kustomize = ["kubectl", "kustomize"] if shutil.which("kubectl") else None
    if kustomize is None and shutil.which("kustomize"):
        kustomize = ["kustomize", "build"]
    if kustomize is not None:
        out = subprocess.run([*kustomize, str(OVERLAY)], capture_output=True, text=True, timeout=60, check=True)
        for doc in yaml.safe_load_all(out.stdout):
            if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "haproxy-config":
                return str(doc["data"]["haproxy.cfg"])
        raise AssertionError("http-canary has no ConfigMap haproxy-config")
    # No kustomize here: read the file the overlay's configMapGenerator uses.
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for gen in kustomization["configMapGenerator"]:
        if gen["name"] == "haproxy-config":
            (entry,) = gen["files"]
            return (OVERLAY / entry.split("=")[-1]).read_text()
    raise AssertionError("http-canary generates no ConfigMap haproxy-config")


def render(cfg: str, backends: dict[str, int], binds: dict[int, int]) -> str:
    """The ConfigMap's config with loopback addresses; nothing else changes."""
    for track, port in backends.items():
        cfg, n = re.subn(rf"\bsrs-edge-{track}:8080\b", f"127.0.0.1:{port}", cfg)
        assert n, f"haproxy.cfg never routes to srs-edge-{track}"
    for port, local in binds.items():
        cfg, n = re.subn(rf"^(\s*bind\s+)\*:{port}\b", rf"\g<1>127.0.0.1:{local}", cfg, flags=re.M)
        assert n == 1, f"haproxy.cfg does not bind *:{port}"
    return cfg


def haproxy_bin() -> str:
    path = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/sbin"))
    if path is None:
        pytest.skip(f"haproxy is not installed: {INSTALL_HAPROXY}")
    return path


def test_configmap_config_passes_haproxy_check(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configmap_haproxy_cfg())
    out = subprocess.run([haproxy_bin(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    # The track Services do not resolve here; the config must still be valid
    # (init-addr none), exactly as a pod starting before its backends.
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr


@contextlib.contextmanager
def haproxy(tmp_path: Path, backends: dict[str, int]) -> Iterator[str]:
    http_port, health_port = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(configmap_haproxy_cfg(), backends, {8080: http_port, 8404: health_port}))
    check = subprocess.run([haproxy_bin(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(tmp_path / "haproxy.log", "wb") as log:
        proc = subprocess.Popen([haproxy_bin(), "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{http_port}"

        def all_up() -> bool:
            assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
            with contextlib.suppress(OSError):
                if fetch(f"http://127.0.0.1:{health_port}/healthz")[0] != 200:
                    return False
                return all(fetch(f"{base}/track.txt", group)[0] == 200 for group in ("INTERNAL", "ENTERPRISE"))
            return False

        wait_for(all_up, 15, what="haproxy and its backends")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(url: str, group: str | None = None, cookie: str | None = None) -> tuple[int, str, str]:
    """(status, body, Set-Cookie) of a GET on a fresh connection, no cookie jar."""
    req = urllib.request.Request(url)
    if group is not None:
        req.add_header("X-Traffic-Group", group)
    if cookie is not None:
        req.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode().strip(), resp.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""


def tracks_reached(base: str, group: str | None, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        status, body, _ = fetch(f"{base}/track.txt", group)
        assert status == 200, f"{group}: HTTP {status}"
        counts[body] += 1
    return counts


def check_routing(base: str) -> None:
    # Each traffic group reaches its track.
    assert tracks_reached(base, "INTERNAL", 20) == {"internal": 20}
    assert tracks_reached(base, "ENTERPRISE", 20) == {"production": 20}
    # FREE and PAID: 5% canary, 95% production (weights 5 / 95, round robin).
    for group, canary in (("FREE", "free"), ("free", "free"), ("PAID", "paid"), (None, "paid")):
        counts = tracks_reached(base, group, 100)
        assert set(counts) == {canary, "production"}, f"{group}: {counts}"
        assert 2 <= counts[canary] <= 10, f"{group}: {counts}"
    # The cookie keeps a player on the track it first reached.
    for _ in range(40):
        _, body, set_cookie = fetch(f"{base}/track.txt", "FREE")
        if body == "free":
            break
    assert body == "free" and "TCTRACK=free" in set_cookie, (body, set_cookie)
    for _ in range(10):
        assert fetch(f"{base}/track.txt", "FREE", cookie="TCTRACK=free")[1] == "free"


class _TrackHandler(http.server.BaseHTTPRequestHandler):
    track = ""

    def do_GET(self) -> None:
        body = {"/track.txt": f"{self.track}\n", "/readyz": "ready\n"}.get(self.path)
        self.send_response(200 if body else 404)
        payload = (body or "").encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks close without reading the answer


@contextlib.contextmanager
def stub_backends() -> Iterator[dict[str, int]]:
    servers = []
    for track in TRACKS:
        handler = type(f"Handler_{track}", (_TrackHandler,), {"track": track})
        server = _QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((track, server))
    try:
        yield {track: server.server_address[1] for track, server in servers}
    finally:
        for _, server in servers:
            server.shutdown()
            server.server_close()


def test_routes_traffic_groups_to_stub_tracks(tmp_path: Path) -> None:
    with stub_backends() as backends, haproxy(tmp_path, backends) as base:
        check_routing(base)


def _server_ready() -> str | None:
    out = subprocess.run(
        [sys.executable, "-c", "from tidecast.config import load_config"], capture_output=True, text=True, timeout=30
    )
    return None if out.returncode == 0 else out.stderr.strip().splitlines()[-1]


def test_routes_traffic_groups_to_tidecast_tracks(tmp_path: Path, tidecast: Callable[..., TidecastProcess]) -> None:
    why = _server_ready()
    if why:
        pytest.skip(f"server config package not landed yet ({why})")
    backends = {}
    for track in TRACKS:
        # Each track's http_server dir holds a file naming the track; /readyz is
        # what the ConfigMap's health checks ask tidecast.
        (tmp_path / track / "html").mkdir(parents=True)
        (tmp_path / track / "html" / "track.txt").write_text(f"{track}\n")
        server = tidecast(track)
        backends[track] = server.http_port
    with haproxy(tmp_path, backends) as base:
        check_routing(base)
        # HTTP playback paths also pass: the API's versions on the HTTP port.
        status, body, _ = fetch(f"{base}/api/v1/versions", "INTERNAL")
        assert status == 200 and '"code":0' in body.replace(" ", "")
