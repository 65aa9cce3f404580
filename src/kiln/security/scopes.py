"""Scopes of API keys and the scope each route needs."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    INFER = "infer"  # /v2 Open Inference Protocol (HTTP and gRPC)
    AUTHENTICATE = "authenticate"  # the authentication app: cases, reports, jobs
    PACKAGING = "packaging"  # the packaging app
    ADMIN = "admin"  # everything: /metrics, repository index, registering references


ALL_SCOPES = tuple(s.value for s in Scope)
ANY_KEY = "any"  # a route that needs a valid key but no particular scope

_PUBLIC = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v2/health/live", "/v2/health/ready"}
_AUTHENTICITY = ("/v1/authenticate", "/v1/cases", "/v1/jobs", "/v1/references", "/v1/authenticity")


def parse_scopes(text: str | list[str]) -> frozenset[str]:
    """``"infer,authenticate"`` → the set of scopes; unknown names are refused."""
    from kiln.errors import KilnError

    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = sorted(set(items) - set(ALL_SCOPES))
    if unknown or not items:
        raise KilnError(f"unknown scopes {unknown}" if unknown else "a key needs at least one scope",
                        hint="scopes: " + ", ".join(ALL_SCOPES))
    return frozenset(items)


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs: None for public routes (health, API docs, static pages)."""
    if path in _PUBLIC or path.startswith("/v2/health/"):
        return None
    if path == "/metrics" or path.startswith("/v2/repository"):
        return Scope.ADMIN
    if path == "/v2" or path.startswith("/v2/"):
        return Scope.INFER
    if path.startswith("/v1/packaging"):
        return Scope.PACKAGING
    if path.startswith("/v1/references") and method not in ("GET", "HEAD"):
        return Scope.ADMIN  # the verified reference set is shared by every tenant
    if path.startswith(_AUTHENTICITY):
        return Scope.AUTHENTICATE
    if path.startswith("/v1/"):
        return ANY_KEY
    return None  # web pages and their assets; the API calls they make carry the key


def grpc_scope(method: str) -> str | None:
    """The scope of a gRPC method (``/inference.GRPCInferenceService/ModelInfer``)."""
    name = method.rsplit("/", 1)[-1]
    if name in ("ServerLive", "ServerReady"):
        return None
    if name == "RepositoryIndex":
        return Scope.ADMIN
    return Scope.INFER


def allows(scopes: frozenset[str], needed: str) -> bool:
    return needed == ANY_KEY or Scope.ADMIN in scopes or needed in scopes
