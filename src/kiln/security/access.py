"""Enforcement: who may call what, how often, and which cases they see.

``AccessControl`` holds the policy of one server: whether a key is required (by default whenever it
binds a non-loopback address), the key store, the rate limiter and the URL signer.
``AccessMiddleware`` (HTTP) and ``GrpcAccessInterceptor`` (gRPC) apply it to every request and leave
a ``Principal`` in the request scope; the app routes read it with ``principal(request)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from kiln.errors import KilnError, NotFoundError
from kiln.security.ratelimit import RateLimiter
from kiln.security.scopes import Scope as KeyScope
from kiln.security.scopes import allows, grpc_scope, required_scope
from kiln.security.signing import UrlSigner

if TYPE_CHECKING:
    from starlette.requests import Request

    from kiln.config import Settings
    from kiln.security.keys import KeyInfo, KeyStore

log = logging.getLogger(__name__)

# Paths a signed link may open without a key: a case's reports (they embed their photos) and its
# certificate page (verdict and photo hashes, no photos). Only the certificate takes a permanent
# signature: it is what the PDF certificate prints, and a certificate must stay verifiable.
SHAREABLE_SUFFIXES = ("/report.html", "/report.pdf", "/certificate")
PERMANENT_SUFFIXES = ("/certificate",)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key (its tenant and scopes) or a signed link to one path."""

    key_id: str | None
    tenant: str | None
    scopes: frozenset[str] = frozenset()
    signed_link: bool = False

    @property
    def is_admin(self) -> bool:
        return KeyScope.ADMIN in self.scopes


@dataclass
class Denied:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AccessControl:
    """The access policy of one server."""

    required: bool = False
    keys: KeyStore | None = None
    signer: UrlSigner | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    default_rate_per_s: float = 50.0  # per key; a key's own rate_per_s replaces it (0: unlimited)
    burst_factor: float = 2.0

    @classmethod
    def for_server(cls, settings: Settings, *, required: bool, cache_ttl_s: float = 5.0,
                   default_rate_per_s: float = 50.0) -> AccessControl:
        keys = None
        if required:
            from kiln.security.keys import KeyStore
            from kiln.serve.store import open_store

            keys = KeyStore(open_store(settings.database_url()), cache_ttl_s=cache_ttl_s)
        signer = UrlSigner.from_home(Path(settings.home), settings.secret_key)
        return cls(required=required, keys=keys, signer=signer, default_rate_per_s=default_rate_per_s)

    def url_signer(self) -> UrlSigner:
        if self.signer is None:
            from kiln.config import get_settings

            settings = get_settings()
            self.signer = UrlSigner.from_home(Path(settings.home), settings.secret_key)
        return self.signer

    async def authenticate(self, authorization: str | None, needed: str | None) -> Principal | Denied:
        """The principal of a request that needs scope ``needed`` (None: public), or why it is refused."""
        if needed is None or not self.required:
            return Principal(None, None)
        if not authorization:
            return Denied(401, "an API key is required: send 'Authorization: Bearer <key>'",
                          {"WWW-Authenticate": 'Bearer realm="kiln"'})
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Denied(401, "the Authorization header must be 'Bearer <key>'", {"WWW-Authenticate": 'Bearer realm="kiln"'})
        assert self.keys is not None
        token = token.strip()
        try:
            key = self.keys.verify(token) if self.keys.cached(token) else await asyncio.to_thread(self.keys.verify, token)
        except KilnError as exc:  # the database is down: say so rather than "unauthorized"
            return Denied(exc.status, str(exc), {"Retry-After": "2"})
        if key is None:
            return Denied(401, "the API key is unknown or revoked", {"WWW-Authenticate": 'Bearer realm="kiln", error="invalid_token"'})
        if not allows(key.scopes, needed):
            return Denied(403, f"the API key {key.id} lacks the '{needed}' scope (it has: {', '.join(sorted(key.scopes))})")
        wait = self._rate(key)
        if wait > 0:
            return Denied(429, f"rate limit of API key {key.id} exceeded; retry in {wait:.2f} s",
                          {"Retry-After": str(max(1, math.ceil(wait)))})
        return Principal(key.id, key.tenant, key.scopes)

    def _rate(self, key: KeyInfo) -> float:
        rate = self.default_rate_per_s if key.rate_per_s is None else key.rate_per_s
        return self.limiter.acquire(key.id, rate, rate * self.burst_factor)

    def check_signed_link(self, path: str, query: str) -> Principal | Denied | None:
        """A principal for a valid signed link, a refusal for a bad one, None when the URL is not signed."""
        if not path.endswith(SHAREABLE_SUFFIXES):
            return None
        params = parse_qs(query)
        if "sig" not in params:
            return None
        if "expires" not in params and path.endswith(PERMANENT_SUFFIXES):
            problem = self.url_signer().verify_permanent(path, params["sig"][0])
        else:
            problem = self.url_signer().verify(path, params.get("expires", [""])[0], params["sig"][0])
        if problem is not None:
            return Denied(403, problem)
        return Principal(None, None, signed_link=True)


class AccessMiddleware:
    """Applies an ``AccessControl`` to every HTTP request (pure ASGI: no body copy, no task)."""

    def __init__(self, app: ASGIApp, *, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        outcome: Principal | Denied | None = None
        if method in ("GET", "HEAD"):
            outcome = self.access.check_signed_link(path, scope.get("query_string", b"").decode("latin-1"))
        if outcome is None:
            authorization = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            outcome = await self.access.authenticate(authorization, required_scope(method, path))
        if isinstance(outcome, Denied):
            body = json.dumps({"error": outcome.message}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in outcome.headers.items()]
            await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["kiln_principal"] = outcome
        await self.app(scope, receive, send)


def principal(request: Request) -> Principal:
    """The caller of a request (an anonymous principal when access control is off)."""
    found = request.scope.get("state", {}).get("kiln_principal")
    return found if isinstance(found, Principal) else Principal(None, None)


def tenant_filter(request: Request) -> str | None:
    """Whose cases a request may see: its key's tenant; None (every case) for admins and open servers."""
    who = principal(request)
    return None if who.key_id is None or who.is_admin else who.tenant


def check_visible(owner: str | None, request: Request, what: str) -> None:
    """404 (never 403: the case's existence is not revealed) when the caller's tenant does not own it."""
    wanted = tenant_filter(request)
    if wanted is not None and owner != wanted:
        raise NotFoundError(f"{what} not found")


def url_signer(request: Request) -> UrlSigner:
    access = getattr(request.app.state, "kiln_access", None)
    if not isinstance(access, AccessControl):
        access = AccessControl()
        request.app.state.kiln_access = access
    return access.url_signer()


class GrpcAccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The same policy for gRPC: ``authorization: Bearer <key>`` metadata, scopes, rate limits."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        from kiln.serve.oip_grpc import _STATUS_CODES

        metadata = {k.lower(): v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        outcome = await self.access.authenticate(metadata.get("authorization"), grpc_scope(details.method))
        if isinstance(outcome, Principal):
            return await continuation(details)
        code = _STATUS_CODES.get(outcome.status, grpc.StatusCode.PERMISSION_DENIED)
        message = outcome.message

        async def deny(request: Any, context: Any) -> Any:
            await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(deny)
