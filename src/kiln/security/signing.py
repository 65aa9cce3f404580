"""Signed, expiring URLs: a buyer opens a case's report without an API key, until it expires.

``sign(path, expires_at)`` → ``path?expires=<unix>&sig=<hmac>``; the HMAC-SHA256 covers the path and
the expiry, so neither can be changed. ``sign_permanent(path)`` → ``path?sig=<hmac>`` for links that must
outlive any expiry (the verification link printed on a PDF certificate); its HMAC covers the path and a
marker that no expiry can take, so a permanent signature never passes as an expiring one or back. The secret is ``KILN_SECRET_KEY`` (set the same value on every
replica), else a random one kept in ``KILN_HOME/secret.key`` (mode 0600), made on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from kiln.errors import KilnError

MAX_TTL_S = 30 * 24 * 3600


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise KilnError("the URL signing secret must be at least 16 bytes", hint="set KILN_SECRET_KEY to a long random value")
        self._secret = secret

    @classmethod
    def from_home(cls, home: Path, env_secret: str | None = None) -> UrlSigner:
        secret = env_secret if env_secret is not None else os.environ.get("KILN_SECRET_KEY")
        if secret:
            return cls(secret.encode())
        path = home / "secret.key"
        if not path.exists():
            # Written aside then linked into place: processes starting at once (kiln serve --workers)
            # never read a half-written key, and the first one's key is everybody's.
            home.mkdir(parents=True, exist_ok=True)
            draft = home / f".secret.key.{os.getpid()}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return cls(path.read_text().strip().encode())

    def _mac(self, path: str, expires: int) -> str:
        digest = hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, path: str, ttl_s: float, *, now: float | None = None) -> tuple[str, int]:
        """The signed URL (path and query) and its expiry as a Unix time."""
        if not 0 < ttl_s <= MAX_TTL_S:
            raise KilnError(f"a link may live between 1 second and {MAX_TTL_S // 86400} days, not {ttl_s} s")
        expires = int((now if now is not None else time.time()) + ttl_s)
        return f"{path}?{urlencode({'expires': expires, 'sig': self._mac(path, expires)})}", expires

    def sign_permanent(self, path: str) -> str:
        """The signed URL (path and query) of a link that does not expire."""
        return f"{path}?{urlencode({'sig': self._mac_permanent(path)})}"

    def verify_permanent(self, path: str, sig: str) -> str | None:
        """None when ``sig`` is the permanent signature of ``path``, else why not."""
        if not hmac.compare_digest(self._mac_permanent(path), sig):
            return "the link's signature does not match"
        return None

    def _mac_permanent(self, path: str) -> str:
        digest = hmac.new(self._secret, f"{path}\npermanent".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, path: str, expires: str, sig: str, *, now: float | None = None) -> str | None:
        """None when valid, else why not."""
        if not expires.isdigit():
            return "the link's expiry is not a time"
        if not hmac.compare_digest(self._mac(path, int(expires)), sig):
            return "the link's signature does not match"
        if int(expires) < (now if now is not None else time.time()):
            return "the link has expired"
        return None
