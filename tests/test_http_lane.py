"""The play lane: HTTP-FLV plays answered below aiohttp, and everything else still answered by aiohttp."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

from testkit.helpers import Publisher, TidecastProcess, ffprobe_json, http_get, wait_for, wait_stream_live

from tidecast.net.http_lane import parse_head

Factory = Callable[..., TidecastProcess]
REMUX = "http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }"


def _connect(srv: TidecastProcess, port: int | None = None) -> socket.socket:
    sock = socket.create_connection((srv.host, port or srv.http_port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers with lower-case names, what followed the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, f"connection closed before a whole response head: {data!r}"
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, rest


def _dechunk(sock: socket.socket, rest: bytes, want: int) -> bytes:
    """At least `want` bytes of a chunked body (whole chunks)."""
    body, buffered = b"", rest
    while len(body) < want:
        while b"\r\n" not in buffered:
            buffered += sock.recv(65536)
        size_line, _, buffered = buffered.partition(b"\r\n")
        size = int(size_line, 16)
        assert size, "the body ended early"
        while len(buffered) < size + 2:
            got = sock.recv(65536)
            assert got, "closed inside a chunk"
            buffered += got
        assert buffered[size : size + 2] == b"\r\n", "a chunk without its CRLF"
        body, buffered = body + buffered[:size], buffered[size + 2 :]
    return body


def _closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closes the connection (after whatever it still sends)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_a_play_sent_a_byte_at_a_time_streams_flv_that_ffprobe_reads(
    tidecast: Factory, clip: Path, tmp_path: Path
) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/lane"):
        wait_stream_live(srv, "lane")
        sock = _connect(srv)
        request = b"GET /live/lane.flv?from=test HTTP/1.1\r\nHost: example.com:8080\r\nReferer: http://page/\r\n\r\n"
        for i in range(len(request)):  # a head in pieces: the lane waits for all of it
            sock.sendall(request[i : i + 1])
            time.sleep(0.002)
        status, headers, rest = _read_head(sock)
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "video/x-flv" and headers["transfer-encoding"] == "chunked"
        assert headers["server"].startswith("tidecast/") and headers["access-control-allow-origin"] == "*"
        assert "content-length" not in headers and "date" in headers
        body = _dechunk(sock, rest, 200_000)
        assert body.startswith(b"FLV\x01")
        clients = srv.api_json("/api/v1/clients")["clients"]
        player = next(c for c in clients if c["type"] == "flv-play")
        assert player["url"] == "/live/lane" and player["ip"] == "127.0.0.1", player
        sock.close()
        recorded = tmp_path / "lane.flv"
        recorded.write_bytes(body)
        assert sorted(s["codec_name"] for s in ffprobe_json(str(recorded))["streams"]) == ["aac", "h264"]
        wait_for(
            lambda: not any(c["type"] == "flv-play" for c in srv.api_json("/api/v1/clients")["clients"]),
            what="the closed player to leave /api/v1/clients",
        )
    assert "flv play /live/lane stopped" in srv.log()


def test_a_refused_play_gets_a_whole_answer_and_a_closed_connection(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/up"):
        wait_stream_live(srv, "up")
        watching = _connect(srv)
        watching.sendall(b"GET /live/up.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_head(watching)[0] == "HTTP/1.1 200 OK"
        for target, status in ((b"/live/absent.flv", "404 Not Found"), (b"/live/bad%0Aname.flv", "400 Bad Request")):
            sock = _connect(srv)
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            line, headers, rest = _read_head(sock)
            assert line == f"HTTP/1.1 {status}", line
            assert headers["connection"] == "close" and headers["access-control-allow-origin"] == "*"
            while len(rest) < int(headers["content-length"]):
                rest += sock.recv(4096)
            assert rest.decode().strip(), "the answer says why"
            assert _closed(sock)
            sock.close()
        # The player already watching never noticed.
        watching.settimeout(5)
        assert len(watching.recv(65536)) > 0
        watching.close()


def test_requests_the_lane_leaves_to_aiohttp_are_answered_as_before(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    (srv.html / "page.html").write_text("<p>hi</p>")
    with Publisher(clip, f"{srv.rtmp}/live/old"):
        wait_stream_live(srv, "old")
        # Live MP4 is a chunked stream only: HTTP/1.0 gets a clear 505, not a 500.
        sock = _connect(srv)
        sock.sendall(b"GET /live/old.mp4 HTTP/1.0\r\n\r\n")
        line, _, rest = _read_head(sock)
        assert line.endswith(" 505 HTTP Version Not Supported") and b"HTTP/1.1" in rest, (line, rest)
        sock.close()
        assert http_get(f"{srv.http}/live/old.flv", method="HEAD")[0] == 200
        # Bad heads are aiohttp's to refuse, as before the lane.
        for head in (
            b"GET /live/old.flv HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            b"GET /live/old.flv HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        ):
            sock = _connect(srv)
            sock.sendall(head)
            assert " 400 Bad Request" in _read_head(sock)[0], head
            sock.close()
        # A keep-alive connection that fetched a page first plays through aiohttp.
        sock = _connect(srv)
        sock.sendall(b"GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n")
        line, headers, rest = _read_head(sock)
        assert line == "HTTP/1.1 200 OK"
        while len(rest) < int(headers["content-length"]):
            rest += sock.recv(4096)
        sock.sendall(b"GET /live/old.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        line, headers, rest = _read_head(sock)
        assert line == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
        assert _dechunk(sock, rest, 13).startswith(b"FLV")
        sock.close()
        # A head too big for the lane still plays, through aiohttp.
        padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(10))
        sock = _connect(srv)
        sock.sendall(b"GET /live/old.flv HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n")
        line, headers, rest = _read_head(sock)
        assert line == "HTTP/1.1 200 OK" and _dechunk(sock, rest, 13).startswith(b"FLV")
        sock.close()


def test_an_http10_player_gets_a_plain_flv_body_that_its_close_ends(
    tidecast: Factory, clip: Path, tmp_path: Path
) -> None:
    srv = tidecast(vhost=REMUX)
    with Publisher(clip, f"{srv.rtmp}/live/ten"):
        wait_stream_live(srv, "ten")
        chunked = _connect(srv)  # a chunked player beside it, on its own timeline and batches
        chunked.sendall(b"GET /live/ten.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_head(chunked)[1]["transfer-encoding"] == "chunked"
        before = {c["id"] for c in srv.api_json("/api/v1/clients")["clients"]}
        sock = _connect(srv)
        sock.sendall(b"GET /live/ten.flv HTTP/1.0\r\nUser-Agent: old-box\r\n\r\n")
        status, headers, body = _read_head(sock)
        assert status == "HTTP/1.0 200 OK" and headers["content-type"] == "video/x-flv", (status, headers)
        assert "transfer-encoding" not in headers and "content-length" not in headers, headers
        assert headers["connection"].lower() == "close", headers
        while len(body) < 200_000:
            got = sock.recv(65536)
            assert got, "the body ended early"
            body += got
        assert body.startswith(b"FLV\x01") and b"\r\n" not in body[:13], body[:16]
        assert len(_dechunk(chunked, b"", 100_000)) >= 100_000, "the chunked player kept its framing"
        recorded = tmp_path / "ten.flv"
        recorded.write_bytes(body)
        assert sorted(s["codec_name"] for s in ffprobe_json(str(recorded))["streams"]) == ["aac", "h264"]
        # With no length and no last chunk, the close is what ends the body: kicked, it is closed.
        (ten,) = [c for c in srv.api_json("/api/v1/clients")["clients"] if c["id"] not in before]
        assert ten["type"] == "flv-play", ten
        assert srv.api_json(f"/api/v1/clients/{ten['id']}", method="DELETE")["code"] == 0
        assert _closed(sock)
        sock.close()
        chunked.settimeout(5)
        assert len(chunked.recv(65536)) > 0, "the chunked player did not notice"
        chunked.close()


def test_the_api_on_a_shared_port_keeps_its_auth_for_flv_looking_paths(tidecast: Factory, clip: Path) -> None:
    srv = tidecast(vhost=REMUX)
    srv.stop()
    text = srv.conf.read_text().replace(f"listen {srv.host}:{srv.http_port}", f"listen {srv.host}:{srv.api_port}")
    text = text.replace("raw_api {", "auth { enabled on; username admin; password s3cret; } raw_api {")
    srv.conf.write_text(text)
    srv.start(wait=False)

    def up() -> bool:
        try:
            return http_get(f"{srv.api}/healthz", timeout=1)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    wait_for(up, what="the server on one shared port")
    assert http_get(f"{srv.api}/api/v1/clients/x.flv")[0] == 401
    assert http_get(f"{srv.api}/console/x.flv")[0] == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    status, body, _ = http_get(f"{srv.api}/api/v1/clients/x.flv", headers=auth)
    assert status == 200 and b'"code"' in body, body  # the API's own answer, not a play
    with Publisher(clip, f"{srv.rtmp}/live/both"):

        def plays() -> bool:
            sock = _connect(srv, srv.api_port)
            try:
                sock.sendall(b"GET /live/both.flv HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, rest = _read_head(sock)
                return status == "HTTP/1.1 200 OK" and _dechunk(sock, rest, 13).startswith(b"FLV")
            finally:
                sock.close()

        wait_for(plays, what="an HTTP-FLV play on the shared port")


def test_parse_head_takes_only_plain_http11_gets() -> None:
    ok = parse_head(b"GET /live/a%20b.flv?token=x%3D1&vhost=v HTTP/1.1\r\nHost: h:80\r\nReferer: r\r\n\r\n")
    assert ok is not None
    # The query as aiohttp gives it: percent-escapes of delimiters stay escaped.
    assert (ok.path, ok.query, ok.query_vhost) == ("/live/a b.flv", "token=x%3D1&vhost=v", "v")
    assert (ok.host, ok.referer) == ("h:80", "r")
    for head in (
        b"GET /a/b.flv HTTP/1.0\r\nHost: h\r\n\r\n",  # HTTP/1.0
        b"POST /a/b.flv HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /a/b.flv HTTP/1.1\r\n\r\n",  # no Host
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",  # a body
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obsolete line folding
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\x01\r\n\r\n",  # a control byte
        b"GET /a/\xc3\xa9.flv HTTP/1.1\r\nHost: h\r\n\r\n",  # not ASCII
        b"GET http://h/a/b.flv HTTP/1.1\r\nHost: h\r\n\r\n",  # absolute form
        b"GET  /a/b.flv HTTP/1.1\r\nHost: h\r\n\r\n",  # two spaces
        b"GET /a/b.flv HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
    ):
        assert parse_head(head) is None, head
