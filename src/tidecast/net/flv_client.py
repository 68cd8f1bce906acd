"""Pulling HTTP-FLV from an origin (`cluster { protocol flv|flvs; }`): the edge's other upstream."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aiohttp

from tidecast.codec import amf0
from tidecast.codec.flv import TAG_SCRIPT, FlvReader
from tidecast.errors import ProtocolError
from tidecast.net.rtmp_client import UpstreamError, UpstreamHandler

MAX_REDIRECTS = 3  # an origin cluster answers HTTP-FLV plays for other origins' streams with a 302


async def pull_flv(
    url: str,
    handler: UpstreamHandler,
    connect_timeout: float,
    receive_timeout: float,
    on_connected: Callable[[str], None],
    source_host: str | None = None,
) -> None:
    """Stream `url` into `handler` until it ends; always raises when it does (UpstreamError,
    OSError or TimeoutError), like an RTMP upstream that closed."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=receive_timeout)
    connector = aiohttp.TCPConnector(local_addr=(source_host, 0) if source_host else None, force_close=True)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as session,
            session.get(url, max_redirects=MAX_REDIRECTS, ssl=ssl.create_default_context()) as resp,
        ):
            if resp.status != 200:
                raise UpstreamError(f"HTTP {resp.status} for {url}")
            on_connected(str(resp.url))
            reader = FlvReader()
            async for chunk in resp.content.iter_any():
                for type_id, timestamp, payload in reader.feed(chunk):
                    if type_id == TAG_SCRIPT:
                        values = amf0.decode_all(payload)
                        if len(values) > 1 and values[0] == "onMetaData":
                            handler.on_upstream_metadata(amf0.without_bytes(values[1]))
                    else:
                        handler.on_upstream_media(type_id, timestamp, payload)
                handler.on_upstream_read()
    except aiohttp.TooManyRedirects:
        raise UpstreamError(f"more than {MAX_REDIRECTS} redirects for {url}") from None
    except (aiohttp.ClientError, ProtocolError) as exc:
        if isinstance(exc, asyncio.TimeoutError):
            raise TimeoutError(f"no data from {url} for {receive_timeout:.0f} s") from None
        raise UpstreamError(f"{url}: {exc}") from None
    raise UpstreamError(f"{url} ended the stream")
