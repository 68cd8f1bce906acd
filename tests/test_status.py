"""`tidecast status` against real tidecast processes: live, draining, killed, and a canary that refuses clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.helpers import Publisher, TidecastProcess, child_python_path, wait_stream_live
from testkit.players import RtmpPlayer

Factory = Callable[..., TidecastProcess]


def status(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": child_python_path()}
    out = subprocess.run(
        [sys.executable, "-m", "tidecast", "status", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return out.returncode, out.stdout, out.stderr


def status_json(*args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = status("--json", *args)
    return code, json.loads(out), err


def test_live_pods_by_track_with_streams_players_and_versions(tidecast: Factory, clip: Path) -> None:
    a = tidecast("a", globals_="exporter { enabled off; tag blue; }")
    b = tidecast("b", globals_="exporter { enabled off; tag green; }")
    with Publisher(clip, f"{a.rtmp}/live/livestream"):
        wait_stream_live(a)
        player = RtmpPlayer.on(a, "livestream")
        try:
            code, doc, err = status_json("--interval", "0.5", f"blue={a.api}", f"green={b.api}")
        finally:
            player.close()
    assert code == 0, err
    assert doc["problems"] == []
    blue, green = doc["tracks"]["blue"], doc["tracks"]["green"]
    assert blue["ready"] == 1 and blue["streams"] == 1 and blue["players"] == 1
    assert blue["versions"] == ["0.1.0+blue"] and green["versions"] == ["0.1.0+green"]
    assert green["streams"] == 0 and green["players"] == 0
    ep = next(e for e in doc["endpoints"] if e["track"] == "blue")
    assert ep["state"] == "ready" and ep["publishers"] == 1 and ep["uptime_s"] >= 0
    assert a.proc is not None and ep["pid"] == a.proc.pid
    assert ep["interval_s"] is not None and ep["errors"] == 0
    # The table names both tracks and their versions.
    code, out, _ = status("--interval", "0", f"blue={a.api}", f"green={b.api}")
    assert code == 0
    assert "track blue: 1/1 ready" in out and "0.1.0+green" in out


def test_a_dns_name_stands_for_every_address_it_resolves_to(tidecast: Factory) -> None:
    srv = tidecast()
    names = {str(info[4][0]) for info in socket.getaddrinfo("localhost", srv.api_port, type=socket.SOCK_STREAM)}
    code, doc, _ = status_json("--interval", "0", f"localhost:{srv.api_port}")
    urls = {e["url"] for e in doc["endpoints"]}
    assert f"http://127.0.0.1:{srv.api_port}" in urls
    assert len(urls) == len(names)
    assert doc["tracks"]["default"]["ready"] >= 1
    if names == {"127.0.0.1"}:
        assert code == 0


def test_a_draining_pod_is_named_and_fails_the_check(tidecast: Factory) -> None:
    live = tidecast("live")
    draining = tidecast("draining", globals_="grace_start_wait 30000; grace_final_wait 100;")
    draining.signal(signal.SIGQUIT)
    time.sleep(0.3)
    code, doc, err = status_json("--interval", "0", f"edges={live.api},{draining.api}")
    assert code == 1
    states = {e["url"]: e["state"] for e in doc["endpoints"]}
    assert states == {live.api: "ready", draining.api: "draining"}
    assert doc["tracks"]["edges"]["draining"] == 1 and doc["tracks"]["edges"]["ready"] == 1
    assert f"{draining.api} (track edges) is draining" in err
    code, out, err = status("--interval", "0", f"edges={live.api},{draining.api}")
    assert code == 1 and "draining" in out


def test_a_killed_pod_is_down_and_named(tidecast: Factory) -> None:
    live = tidecast("live")
    killed = tidecast("killed")
    assert killed.proc is not None
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(5)
    code, doc, err = status_json("--interval", "0", "--timeout", "1", f"{live.api},{killed.api}")
    assert code == 1
    down = [e for e in doc["endpoints"] if e["state"] == "down"]
    assert [e["url"] for e in down] == [killed.api]
    assert "Connection refused" in down[0]["error"]
    assert f"{killed.api} (track default) is down" in err
    # Only the live one: healthy.
    assert status("--interval", "0", live.api)[0] == 0


def _refused_burst(srv: TidecastProcess, start_after: float, count: int) -> threading.Thread:
    """Open more RTMP connections than max_connections allows, hold them a moment, close them."""

    def run() -> None:
        time.sleep(start_after)
        socks = []
        for _ in range(count):
            try:
                socks.append(socket.create_connection((srv.host, srv.rtmp_port), timeout=2))
            except OSError:
                pass
        time.sleep(0.5)
        for s in socks:
            s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_compare_promotes_a_good_canary_and_aborts_one_that_refuses_clients(tidecast: Factory) -> None:
    base1 = tidecast("base1")
    base2 = tidecast("base2")
    good = tidecast("good", globals_="exporter { enabled off; tag canary; }")
    code, doc, err = status_json(
        "--interval", "1", f"canary={good.api}", f"stable={base1.api},{base2.api}", "--compare", "canary", "stable"
    )
    assert code == 0, err
    assert doc["compare"]["verdict"] == "promote" and doc["compare"]["reasons"] == []

    # A canary whose config caps connections far too low refuses players: its error rate gives it away.
    bad = tidecast("bad", globals_="max_connections 8; exporter { enabled off; tag canary; }")
    burst = _refused_burst(bad, 0.8, 30)
    code, doc, err = status_json(
        "--interval", "3", f"canary={bad.api}", f"stable={base1.api},{base2.api}", "--compare", "canary", "stable"
    )
    burst.join()
    assert code == 3, (doc, err)
    assert doc["compare"]["verdict"] == "abort"
    assert any("error rate" in r for r in doc["compare"]["reasons"]), doc["compare"]
    assert doc["tracks"]["canary"]["errors"] >= 10
    assert doc["tracks"]["stable"]["errors"] == 0


def test_usage_errors_name_the_problem(tidecast: Factory) -> None:
    srv = tidecast()
    code, _, err = status("--interval", "0", f"a={srv.api}", "--compare", "a", "nope")
    assert code == 2 and "nope" in err
    code, _, err = status("--interval", "0", "no-such-host.invalid")
    assert code == 2 and "cannot resolve no-such-host.invalid" in err


def test_compare_aborts_a_canary_that_is_down(tidecast: Factory) -> None:
    base = tidecast("base")
    dead = tidecast("dead")
    assert dead.proc is not None
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait(5)
    code, doc, err = status_json(
        "--interval",
        "0.5",
        "--timeout",
        "1",
        f"canary={dead.api}",
        f"stable={base.api}",
        "--compare",
        "canary",
        "stable",
    )
    assert code == 3
    reasons = doc["compare"]["reasons"]
    assert any("0 of 1 canary endpoints are ready" in r for r in reasons), reasons
    assert any("no interval figures for the canary track" in r for r in reasons), reasons
    assert f"{dead.api} (track canary) is down" in err
