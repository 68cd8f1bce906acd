"""Signed URLs: publish and play without a hook server (tidecast's own, like nginx's secure_link).

A URL carries `expires` (Unix seconds), optionally `ip` (the one client address
it is good for) and `sign`: the unpadded base64url HMAC-SHA256, under the
vhost's secret, of `tidecast-sign-v1` followed by ACTION, VHOST, APP, STREAM,
EXPIRES (decimal) and IP, each as a 4-byte big-endian byte length and its UTF-8
bytes, where ACTION is `publish` or `play` (one play URL serves RTMP, HTTP-FLV and
HLS), VHOST the configured vhost name the request resolves to
(`__defaultVhost__` unless named vhosts are used) and IP is empty when the URL
is not bound to an address. Every field is in the signature, so changing any
of them, or moving the query to another stream, fails the check. The compare
is constant-time.

    rtmp://host/live/cam1?expires=1700000000&sign=3q2-7w...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from tidecast.access._contract import JoinRequest, Refusal
from tidecast.access.security import client_address
from tidecast.config.model import DEFAULT_VHOST, SignedUrl
from tidecast.config.parser import ConfigError

ERROR_SIGNED_URL = 1052  # SRS's "security check failed"; SRS has no signed URLs of its own
PARAMS = ("expires", "ip", "sign")
_DOMAIN = b"tidecast-sign-v1"


def signature(secret: bytes, action: str, vhost: str, app: str, stream: str, expires: int, ip: str = "") -> str:
    # Each field is length-prefixed, so no choice of names (a stream holding a
    # newline, say) can make two different requests sign the same bytes.
    message = bytearray(_DOMAIN)
    for field in (action, vhost, app, stream, str(expires), ip):
        data = field.encode("utf-8", "surrogatepass")
        message += len(data).to_bytes(4, "big") + data
    digest = hmac.new(secret, bytes(message), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_query(
    secret: bytes, action: str, app: str, stream: str, expires: int, ip: str = "", vhost: str = DEFAULT_VHOST
) -> str:
    """The query string (no leading "?") that makes a URL for `action` on app/stream valid until `expires`."""
    fields = [("expires", str(expires))]
    if ip:
        fields.append(("ip", ip))
    fields.append(("sign", signature(secret, action, vhost, app, stream, expires, ip)))
    return urlencode(fields)


def signed_url(
    base: str,
    secret: bytes,
    action: str,
    app: str,
    stream: str,
    ttl: int,
    ip: str = "",
    vhost: str = DEFAULT_VHOST,
    now: float | None = None,
) -> str:
    """`base/app/stream?expires=…[&ip=…]&sign=…`, valid for `ttl` seconds from `now`."""
    expires = int(time.time() if now is None else now) + ttl
    query = sign_query(secret, action, app, stream, expires, ip, vhost)
    return f"{base.rstrip('/')}/{app}/{stream}?{query}"


def _fields(param: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in parse_qsl(param.lstrip("?"), keep_blank_values=True):
        out.setdefault(key, value)  # the first of duplicates, so a second sign= cannot override
    return out


def verify(
    secret: bytes,
    action: str,
    vhost: str,
    app: str,
    stream: str,
    param: str,
    ip: str,
    now: float | None = None,
) -> str | None:
    """None if `param` (the query, with or without its "?") signs this request; else why not."""
    fields = _fields(param)
    sign, expires_text = fields.get("sign"), fields.get("expires")
    if not sign or not expires_text:
        return "signed URL required: add ?expires=…&sign=… (see tidecast sign)"
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        return "signed URL has a malformed expires"
    expires = int(expires_text)
    bound = fields.get("ip", "")
    expected = signature(secret, action, vhost, app, stream, expires, bound)
    if not hmac.compare_digest(expected.encode(), sign.encode("utf-8", "replace")):
        return f"signed URL does not match this {action} of {app}/{stream} (tampered, or signed for another)"
    # The order matters: only a genuine URL is told it expired or is bound elsewhere.
    current = time.time() if now is None else now
    if current > expires:
        return f"signed URL expired {int(current - expires)} s ago"
    if bound and not _same_address(bound, ip):
        return "signed URL is bound to another client address"
    return None


def _same_address(bound: str, peer: str) -> bool:
    """Equal addresses in any spelling; an IPv4 client on a dual-stack socket is `::ffff:a.b.c.d`."""
    a, b = client_address(bound), client_address(peer)
    return bound == peer if a is None or b is None else a == b


def strip_signature(param: str) -> str:
    """`param` without expires/ip/sign, for what is passed on (upstreams, stream URLs)."""
    kept = [(k, v) for k, v in parse_qsl(param.lstrip("?"), keep_blank_values=True) if k not in PARAMS]
    return f"?{urlencode(kept)}" if kept else ""


def load_secret(settings: SignedUrl, env: Mapping[str, str] | None = None, where: str = "signed_url") -> bytes:
    """The secret bytes from `secret_file` (surrounding whitespace removed) or `secret_env`."""
    environ = os.environ if env is None else env
    if settings.secret_file:
        try:
            with open(settings.secret_file, "rb") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the secret file {settings.secret_file}: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"{where}: the secret file {settings.secret_file} is empty")
        return secret
    if settings.secret_env:
        value = environ.get(settings.secret_env, "").strip()
        if not value:
            raise ConfigError(f"{where}: the environment variable {settings.secret_env} (secret_env) is not set")
        return value.encode()
    raise ConfigError(f"{where}: no secret; set secret_file PATH; or secret_env VARIABLE;")


class SignedUrlGate:
    """`Gate` for `signed_url`: publish and/or play need a valid signed URL."""

    def __init__(self, settings: SignedUrl, secret: bytes) -> None:
        self.settings = settings
        self._secret = secret

    @classmethod
    def from_settings(
        cls, settings: SignedUrl, vhost: str = DEFAULT_VHOST, env: Mapping[str, str] | None = None
    ) -> SignedUrlGate:
        """Raises ConfigError (naming the vhost) when the secret cannot be read."""
        return cls(settings, load_secret(settings, env, f"vhost {vhost} signed_url"))

    def __repr__(self) -> str:  # never the secret
        return f"SignedUrlGate(publish={self.settings.publish}, play={self.settings.play})"

    async def check(self, request: JoinRequest) -> Refusal | None:
        return self.verdict(request)

    def verdict(self, request: JoinRequest, now: float | None = None) -> Refusal | None:
        settings = self.settings
        if not settings.enabled or request.action not in ("publish", "play"):
            return None
        if not (settings.publish if request.action == "publish" else settings.play):
            return None
        why = verify(
            self._secret, request.action, request.vhost, request.app, request.stream, request.param, request.ip, now
        )
        return None if why is None else Refusal(ERROR_SIGNED_URL, why)
