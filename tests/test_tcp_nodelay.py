"""`tcp_nodelay`, per vhost as in SRS: players' sockets keep Nagle's algorithm unless it is on.

The option is read off the server's own end of each connection (testkit.peersock), for RTMP and
HTTP-FLV players, before and after a reload that turns it on.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

from testkit.helpers import TidecastProcess, wait_for, wait_stream_live
from testkit.peersock import peer_sockopt
from testkit.rtmpclient import RtmpTestClient, SyntheticPublisher

Factory = Callable[..., TidecastProcess]


def _nodelay(srv: TidecastProcess, client: socket.socket) -> int:
    assert srv.proc is not None
    return peer_sockopt(srv.proc.pid, client, socket.IPPROTO_TCP, socket.TCP_NODELAY)


def _flv_player(srv: TidecastProcess, path: str) -> socket.socket:
    sock = socket.create_connection((srv.host, srv.http_port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def test_players_keep_nagle_by_default_and_a_reload_turns_it_off(tidecast: Factory) -> None:
    srv = tidecast(vhost="http_remux { enabled on; }")
    publisher = SyntheticPublisher(srv.host, srv.rtmp_port, "show", kbps=300)
    players: list[RtmpTestClient] = []
    flv: list[socket.socket] = []
    try:
        wait_stream_live(srv, "show")
        waiting = RtmpTestClient(srv.host, srv.rtmp_port)  # connected, not playing
        assert _nodelay(srv, waiting.sock) == 1, "the handshake and commands leave without Nagle's delay"
        players.append(RtmpTestClient(srv.host, srv.rtmp_port))
        players[0].play("show")
        players[0].wait_status("NetStream.Play.Start")
        flv.append(_flv_player(srv, "/live/show.flv"))
        # `tcp_nodelay off`, SRS's default: a player's small writes may wait for the ACK of the last ones.
        wait_for(lambda: _nodelay(srv, players[0].sock) == 0, timeout=5, what="RTMP player with Nagle on")
        wait_for(lambda: _nodelay(srv, flv[0]) == 0, timeout=5, what="HTTP-FLV player with Nagle on")
        assert _nodelay(srv, publisher.client.sock) == 1, "a publisher's socket is not a player's"

        srv.conf.write_text(
            srv.conf.read_text().replace("vhost __defaultVhost__ {", "vhost __defaultVhost__ {\ntcp_nodelay on;")
        )
        srv.signal(signal.SIGHUP)
        wait_for(lambda: _nodelay(srv, players[0].sock) == 1, timeout=10, what="reload: RTMP player without Nagle")
        wait_for(lambda: _nodelay(srv, flv[0]) == 1, timeout=5, what="reload: HTTP-FLV player without Nagle")
        players.append(RtmpTestClient(srv.host, srv.rtmp_port))
        players[1].play("show")
        players[1].wait_status("NetStream.Play.Start")
        flv.append(_flv_player(srv, "/live/show.flv"))
        assert _nodelay(srv, players[1].sock) == 1 and _nodelay(srv, flv[1]) == 1
        # The players kept playing through it all.
        seen = len(players[0].read_for(0.5).media)
        assert len(players[0].read_for(1.0).media) > seen
        waiting.close()
    finally:
        for player in players:
            player.close()
        for sock in flv:
            sock.close()
        publisher.close()
