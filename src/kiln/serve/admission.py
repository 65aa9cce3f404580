"""Admission control: a bound on HTTP requests in progress, so overload is refused at once.

Past ``max_inflight`` requests being handled, a new one gets ``503`` with ``Retry-After`` before any
work is done (health probes and /metrics are always let through). Without it an overloaded server
accepts everything and every request gets slower; with it the accepted ones keep their latency and
the excess learns at once to come back later. The model queues (``max_queue_size``) bound inference
the same way; this bounds the rest (JSON parsing, image decoding, database reads).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

_ALWAYS = ("/v2/health/", "/metrics")


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, max_inflight: int = 128, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.retry_after = str(retry_after_s).encode()
        self.inflight = 0
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_ALWAYS):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.rejected += 1
            body = json.dumps({"error": f"the server is at capacity ({self.max_inflight} requests in progress); retry shortly"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"retry-after", self.retry_after)]})
            await send({"type": "http.response.body", "body": body})
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
