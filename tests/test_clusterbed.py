"""The cluster bed, short: a rolling update of two edges behind HAProxy with a few dozen players.

The full run (>= 1,000 players, origin update, rollback, canary) is
`python3 bench/clusterbed --players 1000` (docs/kubernetes.md). This one runs
the same code on a smaller cluster and checks what an operator would: the
rollout finished with every old pod gone by a graceful exit, cut players
played again quickly, and nothing was left behind on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.helpers import ROOT, child_python_path

pytestmark = [
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is needed (scripts/test.sh installs it)"),
    # One worker runs them all: each makes tcb* links, and one checks that none is left.
    pytest.mark.xdist_group("clusterbed"),
]

sys.path.insert(0, str(ROOT / "bench"))

from clusterbed import netbed  # noqa: E402
from clusterbed.report import analyse  # noqa: E402


def _bed(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the bed in a session of its own. Past `timeout` it gets SIGTERM, so that its clean-up removes
    the pods, HAProxy and namespaces it made, then the whole group SIGKILL. A plain `run(timeout=)` kills
    the bed alone and leaves its pods running: they broke every later run on the machine."""
    env = {**os.environ, "PYTHONPATH": child_python_path()}
    cmd = [sys.executable, str(ROOT / "bench" / "clusterbed"), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the cluster bed took over {timeout:.0f}s; stdout: {stdout[-2000:]} stderr: {stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _run_bed(out: Path, *args: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    proc = _bed(["--out", str(out), *args], timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = out.glob("clusterbed-*.json")
    return json.loads(path.read_text()), proc.stdout


def test_rolling_update_of_two_edges_under_load(tmp_path: Path) -> None:
    doc, summary = _run_bed(
        tmp_path,
        "--players", "36", "--churn", "4", "--ops", "edge-rolling-update",
        "--min-ready", "2", "--grace-start-wait", "2000", "--grace-drain-timeout", "2000",
        "--endpoint-lag", "1", "--settle", "3", "--rate", "100",
    )  # fmt: skip
    [op] = doc["operations"]
    result = op["result"]
    assert result["ok"] and len(result["created"]) == 2 and len(result["deleted"]) == 2
    # Every old pod went through preStop + SIGTERM and exited 0 before terminationGracePeriodSeconds.
    assert [t["exit_code"] for t in result["terminated"]] == [0, 0]
    assert not any(t["killed"] for t in result["terminated"])
    # The drain bound cut the players still on the old pods; each played again, quickly.
    assert op["players_cut"] > 0
    assert op["cut_not_playing_again"] == 0
    assert op["reconnect_gap_p99_s"] is not None and op["reconnect_gap_p99_s"] <= 1.5, op
    # HLS players followed their pod's replacement without a failed fetch.
    assert op["hls_fetch_errors"] == 0, op["hls_fetch_error_kinds"]
    # New plays kept arriving during the rollout; nearly all of them played.
    assert op["new_plays"] >= 30
    assert op["new_plays_failed"] <= max(3, op["new_plays"] // 10), op["new_play_failures"]
    # Both terminating pods were probed directly during grace_start_wait: RTMP kept its listener.
    probes = doc["terminating_pod_probes"]
    assert len(probes) == 2
    for rows in probes.values():
        assert rows and rows[0]["rtmp"] == "playing"
    assert "| edge-rolling-update |" in summary
    assert doc["network_mode"] in ("netns", "loopback")
    if doc["network_mode"] == "netns":
        assert netbed.leftovers() == []


def test_loopback_mode_and_the_analysis_of_a_cut(tmp_path: Path) -> None:
    """Without namespaces the bed still runs, on 127.x addresses, and says so."""
    net = netbed.Network("loopback")
    try:
        assert net.mode == "loopback" and net.service_ip.startswith("127.")
        pod = net.pod("p")
        assert pod.netns is None and pod.ip.startswith(net.prefix) and pod.wrap(["x"]) == ["x"]
    finally:
        net.close()
    # A cut player that reconnects 0.3 s after its last frame; a new play that failed.
    events = [
        {"t": 10.0, "ev": "play_ok", "sid": 1, "proto": "rtmp", "at": 9.9, "first": 10.0, "reconnect": False},
        {"t": 12.0, "ev": "cut", "sid": 1, "proto": "rtmp", "last": 11.9, "error": "closed by the server"},
        {"t": 12.2, "ev": "play_ok", "sid": 1, "proto": "rtmp", "at": 12.0, "first": 12.2, "reconnect": True},
        {"t": 12.5, "ev": "play_fail", "sid": 2, "proto": "flv", "at": 12.4, "error": "HTTP 503", "churn": True},
        {"t": 13.0, "ev": "gap", "sid": 3, "proto": "flv", "start": 11.0, "end": 12.5},
    ]
    [op] = analyse([{"name": "x", "t0": 11.0, "t1": 13.0, "t_end": 14.0, "result": {}}], events, [], [])
    assert op["players_cut"] == 1 and op["cut_not_playing_again"] == 0
    assert op["reconnect_gap_p99_s"] == pytest.approx(0.3)
    assert op["new_plays"] == 1 and op["new_plays_failed"] == 1
    assert op["players_with_media_gap_over_1s"] == 1 and op["media_gap_max_s"] == pytest.approx(1.5)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="namespaces need root and iproute2")
def test_namespaces_are_removed_even_when_the_run_fails(tmp_path: Path) -> None:
    """A bad flag value after start-up makes the bed fail; it must still remove what it made."""
    proc = _bed(
        ["--out", str(tmp_path), "--players", "2", "--net", "netns", "--ops", "baseline", "--streams", "0"],
        timeout=60,
    )
    assert proc.returncode != 0
    assert netbed.leftovers() == []
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert " tcb" not in out
