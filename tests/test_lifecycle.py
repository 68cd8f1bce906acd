"""Lifecycle with real processes and real signals: graceful quit, reload, ConfigMap auto-reload, daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.helpers import Publisher, TidecastProcess, free_port, http_get, wait_for, wait_stream_live
from testkit.players import RtmpPlayer
from testkit.rtmpclient import RtmpTestClient

Factory = Callable[..., TidecastProcess]


def _can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- graceful quit


def test_sigquit_drains_then_exits_zero(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(globals_="grace_start_wait 1500; grace_final_wait 300;")
    player = RtmpTestClient(srv.host, srv.rtmp_port)
    player.play("idle")
    player.wait_status("NetStream.Play.Start")
    srv.signal(signal.SIGQUIT)
    assert http_get(f"{srv.api}/readyz")[0] == 503
    assert _can_connect(srv.host, srv.rtmp_port), "listener closed during grace_start_wait"
    wait_for(lambda: not _can_connect(srv.host, srv.rtmp_port), timeout=5, what="listeners to close")
    # HTTP stays up through the drain: liveness passes, readiness fails, new FLV plays are refused.
    assert http_get(f"{srv.api}/healthz")[0] == 200
    assert http_get(f"{srv.http}/readyz")[0] == 503
    assert http_get(f"{srv.http}/live/idle.flv")[0] == 503
    time.sleep(1.5)
    assert srv.proc is not None and srv.proc.poll() is None, "exited while a player was connected"
    assert "wait for 1 conns to quit" in srv.log()
    left = time.monotonic()
    player.close()
    assert srv.proc.wait(10) == 0
    assert time.monotonic() - left >= 0.25, "grace_final_wait was skipped"
    assert "final wait for 300ms" in srv.log()


def test_sigterm_with_force_grace_quit_is_graceful(tidecast: Factory) -> None:
    srv = tidecast(globals_="force_grace_quit on; grace_start_wait 500; grace_final_wait 100;")
    player = RtmpTestClient(srv.host, srv.rtmp_port)
    player.play("idle")
    player.wait_status("NetStream.Play.Start")
    srv.signal(signal.SIGTERM)
    assert http_get(f"{srv.api}/readyz")[0] == 503
    time.sleep(1.5)
    assert srv.proc is not None and srv.proc.poll() is None
    player.close()
    assert srv.proc.wait(10) == 0
    assert "force gracefully quit, signo=15" in srv.log()


def test_sigterm_without_force_grace_quit_is_fast(tidecast: Factory) -> None:
    srv = tidecast(globals_="grace_start_wait 5000;")
    player = RtmpTestClient(srv.host, srv.rtmp_port)
    player.play("idle")
    player.wait_status("NetStream.Play.Start")
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.proc is not None and srv.proc.wait(5) == 0
    assert time.monotonic() - started < 3
    player.close()


def test_sigterm_is_fast_with_http_flv_players_too(tidecast: Factory, clip: Path) -> None:
    """A streaming HTTP-FLV request used to hold the HTTP server's shutdown, and the quit with it."""
    srv = tidecast(vhost="http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }")
    with Publisher(clip, f"{srv.rtmp}/live/fast"):
        wait_stream_live(srv, "fast")
        flv = socket.create_connection((srv.host, srv.http_port), timeout=5)
        flv.sendall(b"GET /live/fast.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        assert flv.recv(4096).startswith(b"HTTP/1.1 200"), "the FLV player did not start"
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.proc is not None and srv.proc.wait(5) == 0
        assert time.monotonic() - started < 3
        flv.close()


def test_drain_bound_closes_remaining_connections(tidecast: Factory) -> None:
    srv = tidecast(globals_="grace_start_wait 200; grace_final_wait 100; grace_drain_timeout 1500;")
    player = RtmpTestClient(srv.host, srv.rtmp_port)
    player.play("idle")
    player.wait_status("NetStream.Play.Start")
    started = time.monotonic()
    srv.signal(signal.SIGQUIT)
    assert srv.proc is not None and srv.proc.wait(10) == 0
    assert 1.5 <= time.monotonic() - started < 6
    assert "grace_drain_timeout=1500ms reached" in srv.log()
    player.close()


def test_grace_command_uses_the_pid_file(tidecast: Factory) -> None:
    srv = tidecast(globals_="grace_start_wait 100; grace_final_wait 100;")
    wait_for(lambda: (srv.workdir / "objs" / "srs.pid").exists(), what="the pid file")
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "grace", "-c", str(srv.conf)],
        cwd=srv.workdir,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert srv.proc is not None and srv.proc.wait(10) == 0
    assert "user start gracefully quit" in srv.log()


# ---------------------------------------------------------------- reload


def _configmap_dir(root: Path, text: str, stamp: str) -> Path:
    """Lay out a directory exactly as the kubelet's atomic writer does."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / f"..{stamp}"
    data_dir.mkdir()
    (data_dir / "srs.conf").write_text(text)
    tmp_link = root / "..data_tmp"
    os.symlink(data_dir.name, tmp_link)
    os.replace(tmp_link, root / "..data")
    link = root / "srs.conf"
    if not link.is_symlink():
        os.symlink("..data/srs.conf", link)
    return link


def _swap_configmap(root: Path, text: str, stamp: str) -> None:
    old = os.readlink(root / "..data")
    _configmap_dir(root, text, stamp)
    # The kubelet removes the old timestamped directory after the swap.
    for entry in (root / old).iterdir():
        entry.unlink()
    (root / old).rmdir()


def _reload_failures(srv: TidecastProcess) -> float:
    _, body, _ = http_get(f"{srv.api}/metrics")
    for line in body.decode().splitlines():
        if line.startswith("tidecast_reload_failures"):
            return float(line.split()[-1])
    raise AssertionError("tidecast_reload_failures missing from /metrics")


def test_configmap_swap_reloads_and_broken_config_is_refused(tidecast: Factory, clip: Path, tmp_path: Path) -> None:
    probe = TidecastProcess(tmp_path / "srv", globals_="inotify_auto_reload on;")
    text = probe.conf.read_text()
    extra_port = free_port()
    link = _configmap_dir(tmp_path / "configmap", text, "2026_11_23_10_00_00.1")
    probe.conf = link
    probe.start()
    try:
        with Publisher(clip, f"{probe.rtmp}/live/cm"):
            wait_stream_live(probe, "cm")
            player = RtmpPlayer.on(probe, "cm")
            try:
                time.sleep(1.0)
                new_text = text.replace(
                    f"listen {probe.host}:{probe.rtmp_port};",
                    f"listen {probe.host}:{probe.rtmp_port} {probe.host}:{extra_port};",
                )
                assert new_text != text
                _swap_configmap(tmp_path / "configmap", new_text, "2026_11_23_10_01_00.2")
                wait_for(lambda: _can_connect(probe.host, extra_port), timeout=10, what="the new listen port")
                # The new port is bound before the rest of the config applies: success follows at once.
                wait_for(lambda: "reload config success" in probe.log(), timeout=5, what="the reload to finish")

                failures = _reload_failures(probe)
                _swap_configmap(tmp_path / "configmap", new_text + "\nvhost broken {\n", "2026_11_23_10_02_00.3")
                wait_for(lambda: _reload_failures(probe) > failures, timeout=10, what="the refused reload")
                fetched = probe.api_json("/api/v1/raw?rpc=reload-fetch")["data"]
                assert fetched["err"] != 0 and "srs.conf:" in fetched["msg"], fetched
                assert "reload failed" in probe.log() and "keeping the running config" in probe.log()
                assert _can_connect(probe.host, extra_port), "the old config stopped serving"
                mark = time.monotonic()
                time.sleep(2.0)
                assert sum(1 for _, at in player.timestamps() if at >= mark) > 30, (
                    "the player stopped receiving during reloads"
                )
                assert player.error is None, player.error
            finally:
                player.close()
    finally:
        assert probe.stop() in (0, None)


def test_sighup_reload_applies_vhost_settings(tidecast: Factory, tmp_path: Path) -> None:
    srv = tidecast()
    assert srv.api_json("/api/v1/vhosts")["vhosts"][0]["hls"]["enabled"] is False
    srv.conf.write_text(
        srv.conf.read_text().replace("vhost __defaultVhost__ {", "vhost __defaultVhost__ {\nhls { enabled on; }")
    )
    srv.signal(signal.SIGHUP)
    wait_for(
        lambda: srv.api_json("/api/v1/vhosts")["vhosts"][0]["hls"]["enabled"] is True,
        what="hls enabled by SIGHUP reload",
    )
    assert "reload config success, state=90." in srv.log()


# ---------------------------------------------------------------- daemon


@pytest.mark.parametrize("in_docker", [False, True])
def test_daemon_on_detaches_unless_in_a_container(tmp_path: Path, in_docker: bool) -> None:
    srv = TidecastProcess(tmp_path / "d", env={"SRS_IN_DOCKER": "on" if in_docker else "off"})
    srv.conf.write_text(srv.conf.read_text().replace("daemon off;", "daemon on;"))
    srv.start(wait=False)
    assert srv.proc is not None
    if in_docker:
        try:
            srv.wait_ready()
            assert srv.proc.poll() is None, "a container server must stay in the foreground"
        finally:
            srv.stop()
        return
    try:
        assert srv.proc.wait(10) == 0, "the launching process should return once the daemon is detached"
    except subprocess.TimeoutExpired:
        srv.stop()  # it stayed in the foreground: do not leak it
        raise
    pid_file = srv.workdir / "objs" / "srs.pid"
    wait_for(pid_file.exists, what="the daemon's pid file")
    pid = int(pid_file.read_text())
    try:
        wait_for(lambda: http_get(f"{srv.api}/readyz")[0] == 200 if _can_connect(srv.host, srv.api_port) else False)
        assert pid != srv.proc.pid
        out = subprocess.run(
            [sys.executable, "-m", "tidecast", "stop", "-c", str(srv.conf)], cwd=srv.workdir, capture_output=True
        )
        assert out.returncode == 0
        wait_for(lambda: not _alive(pid), what="the daemon to stop")
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_paced_drain_closes_players_spread_out_then_exits_zero(tidecast: Factory) -> None:
    srv = tidecast(globals_="grace_start_wait 100; grace_final_wait 100; grace_drain_pace 4;")
    players = []
    for _ in range(8):
        client = RtmpTestClient(srv.host, srv.rtmp_port)
        client.play("idle")
        client.wait_status("NetStream.Play.Start")
        players.append(client)
    srv.signal(signal.SIGQUIT)
    closed_at: list[float] = []
    start = time.monotonic()
    pending = list(players)
    while pending and time.monotonic() - start < 10:
        for client in list(pending):
            client.sock.settimeout(0.05)
            try:
                if client.sock.recv(65536) == b"":
                    raise ConnectionError
            except TimeoutError:
                continue
            except OSError:
                closed_at.append(time.monotonic() - start)
                pending.remove(client)
    assert not pending, "every player is closed by the paced drain"
    spread = max(closed_at) - min(closed_at)
    assert 1.0 <= spread <= 4.0, f"8 players at 4/s leave over ~2 s, not at once: {sorted(closed_at)}"
    assert srv.proc is not None and srv.proc.wait(10) == 0
