"""Structured access log (one JSON line per request) and the ``X-Request-ID`` header in and out."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("kiln.access")
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def request_id_of(scope: Scope) -> bytes:
    """The client's ``X-Request-Id`` when it is well-formed, else a new one (32 hex digits)."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            if _VALID_ID.fullmatch(value):
                return value
            break
    return os.urandom(16).hex().encode()  # like uuid4().hex, cheaper


class RequestIdMiddleware:
    """Gives every HTTP request an id (the client's ``X-Request-ID`` when well formed) and logs it.

    A pure ASGI middleware: no per-request task or body copy, unlike ``BaseHTTPMiddleware``.
    """

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                record: dict[str, Any] = {
                    "request_id": request_id.decode(),
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                    "client": scope["client"][0] if scope.get("client") else None,
                }
                access_log.info(json.dumps(record))
