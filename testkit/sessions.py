"""Two sans-I/O RTMP sessions wired to each other in memory, for protocol tests without sockets."""

from __future__ import annotations

from tidecast.rtmp.session import PublishRequest, RtmpSession, State


def pump(a: RtmpSession, b: RtmpSession) -> tuple[list[object], list[object]]:
    """Exchange bytes until both sides are quiet; returns the events seen by a and by b."""
    seen_a: list[object] = []
    seen_b: list[object] = []
    for _ in range(20):
        moved = False
        for src, dst, seen in ((a, b, seen_b), (b, a, seen_a)):
            for data in src.data_to_send():
                moved = True
                seen += dst.receive_data(data)
        if not moved:
            break
    return seen_a, seen_b


def handshaken() -> tuple[RtmpSession, RtmpSession]:
    """(server, client) past the handshake."""
    server, client = RtmpSession(), RtmpSession(client=True)
    pump(client, server)
    return server, client


def publishing_pair() -> tuple[RtmpSession, RtmpSession]:
    """(server, client): the client connected and publishes `cam`, and the server accepted it."""
    server, client = handshaken()
    client.connect("live", "rtmp://127.0.0.1/live")
    pump(client, server)
    server.accept_connect(4096, {})
    client.create_stream()
    pump(client, server)
    client.publish("cam")
    _, events = pump(client, server)
    assert any(isinstance(e, PublishRequest) for e in events)
    server.accept_publish("cam")
    assert server.state is State.PUBLISHING
    pump(client, server)
    return server, client
