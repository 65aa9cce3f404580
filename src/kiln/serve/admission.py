"""Admission control: overload is refused at once, before any work, so accepted requests keep their latency.

``AdmissionMiddleware`` is the outermost HTTP layer. A new request gets ``503`` with ``Retry-After``
before its body is read when either

- ``max_inflight`` requests are already in progress (a bound on concurrency), or
- the event loop runs late all the time (``LoopLag``: the least lateness over half a second): on a
  saturated CPU, requests wait in socket buffers and in the loop's ready queue before any handler
  sees them; the loop's lateness is that wait. Past ``max_lag_s`` a share of new requests is refused
  that grows with the lateness (all of them at twice ``max_lag_s``), which leaves CPU for the requests
  already accepted and keeps refusals fast; a passing stall refuses nobody. A few requests
  (``min_inflight``) are always let in, so a server that is late for another reason still makes progress.

Health probes and ``/metrics`` always pass. The refusal is a pre-encoded answer (security headers
included, since it leaves before the headers middleware). The time a request reached the gate is
put in ``scope["state"]["arrived"]`` (``time.monotonic()``), so that request timeouts count from
there and not from when a handler got round to the request.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from kiln.security.headers import CSP, STATIC_HEADERS
from kiln.serve.access_log import request_id_of

if TYPE_CHECKING:
    from kiln.serve.metrics import ServerMetrics

_ALWAYS = ("/v2/health/", "/metrics")


class LoopLag:
    """How late the event loop runs *persistently*: a timer every ``interval_s`` measures how late it fired,
    and ``current()`` is the smallest lateness of the ticks of the last ``window_s``.

    The minimum, not an average (as CoDel judges a packet queue): one stall (a garbage collection, a
    SQLite checkpoint, a burst of arrivals handled in one loop iteration) makes one tick late and its
    successors on time, and is no reason to refuse anyone; a CPU that cannot keep up makes every tick
    late, and the minimum rises with it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = 0.02, window_s: float = 0.5) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.window_s = window_s
        self._recent: deque[tuple[float, float]] = deque()  # (when, lateness) of the ticks of the window
        self.floor_s = 0.0
        self._due = loop.time() + interval_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self._recent.append((now, max(0.0, now - self._due)))
        while self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        self.floor_s = min(late for _, late in self._recent)
        self._due = now + self.interval_s
        self._handle = self.loop.call_at(self._due, self._tick)

    def current(self) -> float:
        return self.floor_s

    def stop(self) -> None:
        self._handle.cancel()


def _refusal(reason: str, retry_after_s: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": f"the server is overloaded ({reason}); retry after {retry_after_s} s"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(retry_after_s).encode()), *STATIC_HEADERS, (b"content-security-policy", CSP.encode())]
    return headers, body


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, max_inflight: int = 128, max_lag_s: float | None = 0.05, min_inflight: int = 8,
                 retry_after_s: int = 1, metrics: ServerMetrics | None = None) -> None:
        """``metrics``: refusals are counted in ``kiln_admission_refused{reason}`` and the loop's lateness is
        ``kiln_event_loop_lag_seconds`` (read at scrape time)."""
        self.app = app
        self.max_inflight = max_inflight
        self.max_lag_s = max_lag_s
        self.min_inflight = min_inflight
        self.inflight = 0
        self.rejected = {"inflight": 0, "loop_lag": 0}
        self._answers = {
            "inflight": _refusal(f"{max_inflight} requests in progress", retry_after_s),
            "loop_lag": _refusal("requests are waiting for the CPU", retry_after_s),
        }
        self.lag: LoopLag | None = None
        self._refused = {reason: metrics.admission_refused.labels(reason) for reason in self.rejected} if metrics else {}
        if metrics is not None:
            metrics.loop_lag.set_function(lambda: self.lag.current() if self.lag is not None else 0.0)

    def _refuse_because(self) -> str | None:
        if self.inflight >= self.max_inflight:
            return "inflight"
        if self.max_lag_s is None or self.inflight < self.min_inflight:
            return None
        loop = asyncio.get_running_loop()
        if self.lag is None or self.lag.loop is not loop:  # first request, or the app now runs on another loop (tests)
            if self.lag is not None:
                self.lag.stop()
            self.lag = LoopLag(loop)
            return None
        excess = self.lag.current() / self.max_lag_s - 1.0  # 0 at max_lag_s, 1 at twice it
        return "loop_lag" if excess > 0 and (excess >= 1 or random.random() < excess) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_ALWAYS):
            await self.app(scope, receive, send)
            return
        reason = self._refuse_because()
        if reason is not None:
            self.rejected[reason] += 1
            if self._refused:
                self._refused[reason].inc()
            headers, body = self._answers[reason]
            await send({"type": "http.response.start", "status": 503, "headers": [*headers, (b"x-request-id", request_id_of(scope))]})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["arrived"] = time.monotonic()
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
