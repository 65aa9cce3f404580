"""The OIP infer routes as a plain ASGI endpoint, in front of FastAPI's router.

``POST /v2/models/{name}/infer`` and ``POST /v2/models/{name}/versions/{version}/infer`` are the
hot path of the server. Routed through FastAPI they pay for route matching over every route,
dependency solving and a ``Request`` object on each call, about half of the event loop's time
per request. This endpoint sits innermost among the server's middlewares (request id, security
headers, admission, body limit and access control still apply), answers those two routes itself
with the same code as the FastAPI routes (``oip_http.infer_response``) and the same error
mapping, and hands every other request to the app unchanged. The FastAPI routes stay: they
document the API and serve any request this endpoint leaves alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from kiln.errors import KilnError
from kiln.serve.http_errors import kiln_error_response
from kiln.serve.oip_http import HEADER_LENGTH, infer_response, receive_body

if TYPE_CHECKING:
    from kiln.serve.state import ServerState

_HEADER_LENGTH = HEADER_LENGTH.encode()


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version) when ``path`` is an infer route, else None (same segments FastAPI matches)."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    parts = path.split("/")  # "", "v2", "models", name, ["versions", version,] "infer"
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return parts[3], parts[5]
    return None


class InferEndpoint:
    """Pure ASGI: answers the infer routes, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            target = infer_target(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        declared = encoding = header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = declared if declared is not None else value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = encoding if encoding is not None else value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                header_length = header_length if header_length is not None else value.decode("latin-1")
        name, version = target
        try:
            response = await infer_response(
                self.state, name, version, lambda limit: receive_body(receive, declared, encoding, limit), header_length,
                arrived=scope.get("state", {}).get("arrived"),
            )
        except KilnError as exc:
            response = kiln_error_response(exc, scope["method"], scope["path"])
        await response(scope, receive, send)
