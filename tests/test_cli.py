"""The command line and logging, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testkit.helpers import TidecastProcess, wait_for
from testkit.rtmpclient import RtmpTestClient

from tidecast import __version__

Factory = Callable[..., TidecastProcess]


def test_version_and_module_entry_points() -> None:
    for argv in (["tidecast", "--version"], [sys.executable, "-m", "tidecast", "--version"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == f"tidecast {__version__}"


def test_json_log_lines_carry_time_level_pid_and_connection_id(tidecast: Factory) -> None:
    srv = tidecast(globals_="log_format json;")
    player = RtmpTestClient(srv.host, srv.rtmp_port)
    player.play("j")
    player.wait_status("NetStream.Play.Start")
    player.close()
    wait_for(lambda: "play /live/j stopped" in srv.log(), what="the play log line")
    lines = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "pid", "cid", "msg"} <= set(doc) for doc in lines), lines[:2]
    play = next(doc for doc in lines if "play __defaultVhost__/live/j started" in doc["msg"])
    assert play["pid"] == srv.proc.pid and len(play["cid"]) == 8  # type: ignore[union-attr]


def test_file_log_tank_and_reopen_on_sigusr1(tidecast: Factory) -> None:
    srv = tidecast(globals_="srs_log_tank file; srs_log_file ./objs/tidecast.log;")
    log_file = srv.workdir / "objs" / "tidecast.log"
    wait_for(lambda: log_file.exists() and "ready" in log_file.read_text(), what="the log file")
    rotated = log_file.with_suffix(".log.1")
    os.rename(log_file, rotated)
    srv.signal(signal.SIGUSR1)
    wait_for(log_file.exists, what="the reopened log file")
    srv.signal(signal.SIGUSR2)  # SRS dies on it; tidecast logs and carries on
    wait_for(lambda: "SIGUSR2" in log_file.read_text(), what="the SIGUSR2 line")
    assert srv.proc is not None and srv.proc.poll() is None
    assert "ready" in Path(rotated).read_text()


def test_serve_refuses_a_broken_config_with_its_location(tmp_path: Path) -> None:
    conf = tmp_path / "srs.conf"
    conf.write_text("listen 1935;\nvhost x {\n")
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "serve", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    assert f'{conf}:2: unterminated block "vhost" opened here' in out.stderr
