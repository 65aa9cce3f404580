"""A global limit on request bodies, enforced before any route reads them.

Routes keep their own, tighter limits (per model, per upload); this one stops a client from making
the server buffer an unbounded body on a route that has none (a JSON brief, say).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.errors import PayloadTooLargeError

DEFAULT_MAX_BODY_BYTES = 160 << 20  # above the largest route limit (packaging briefs with 4 data URLs)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit():
                    await _reject(send, 400, "Content-Length is not a number")
                    return
                if int(value) > self.max_bytes:
                    await _reject(send, 413, f"request body of {int(value)} bytes is over the server's limit of {self.max_bytes} bytes")
                    return
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body is over the server's limit of {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
