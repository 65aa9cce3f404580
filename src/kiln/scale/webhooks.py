"""Webhooks: POST a finished job's result to its callback URL, signed, with retries and backoff.

The body is JSON; the header ``X-Kiln-Signature: t=<unix seconds>,v1=<hex>`` carries
HMAC-SHA256(secret, "<t>.<body>"), so a receiver can check origin and reject replays
(``verify_signature``). A 2xx answer is success; 4xx other than 408/429 is final; anything
else (5xx, timeouts, refused connections) is retried after 0.5, 1, 2, 4 ... seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kiln.errors import KilnError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kiln-Signature"


def check_callback_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2048:
        raise KilnError(f"callback_url {url[:100]!r} is not an http(s) URL of at most 2048 characters",
                        hint="for example https://example.com/kiln-results")
    return url


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0) -> bool:
    """What a receiver runs: the signature matches and is no older than ``tolerance_s``."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1)))


    def lease_s(self) -> float:
        """How long a delivery in progress may go without a sign of life (one attempt and the pause
        after it, twice over) before another process may take it over (``webhook_recovery``)."""
        return 2 * (self.timeout_s + self.max_delay_s)


class WebhookSender:
    """Delivers webhooks in background tasks; ``on_outcome(job_id, status, attempts)`` records the result,
    ``on_attempt(job_id, attempt)`` is called before each attempt (a heartbeat for ``webhook_recovery``)."""

    def __init__(self, secret: str | None, policy: RetryPolicy | None = None,
                 on_outcome: Callable[[str, str, int], Any] | None = None,
                 on_attempt: Callable[[str, int], Any] | None = None) -> None:
        self.secret = secret
        self.policy = policy or RetryPolicy()
        self.on_outcome = on_outcome
        self.on_attempt = on_attempt
        self._tasks: set[asyncio.Task[bool]] = set()
        self._session: Any = None

    def require_secret(self) -> None:
        if not self.secret:
            raise KilnError("this server has no webhook secret, so it cannot sign callbacks",
                            hint="start it with KILN_WEBHOOK_SECRET set, or leave out callback_url", status=400)

    def send(self, job_id: str, url: str, payload: dict[str, Any], *, attempts_made: int = 0) -> None:
        task = asyncio.create_task(self.deliver(job_id, url, payload, attempts_made=attempts_made), name=f"webhook-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, job_id: str, url: str, payload: dict[str, Any], *, attempts_made: int = 0) -> bool:
        """Up to ``policy.attempts`` tries in all, ``attempts_made`` of them already made elsewhere (a
        delivery taken over from a process that died)."""
        import aiohttp

        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s))
        attempt = attempts_made
        status = "failed"
        while attempt < self.policy.attempts:
            attempt += 1
            if self.on_attempt is not None:
                await self._call(self.on_attempt, job_id, attempt)
            headers = {"Content-Type": "application/json", "User-Agent": "kiln-webhook",
                       SIGNATURE_HEADER: sign(self.secret or "", body), "X-Kiln-Job": job_id}
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        status = "delivered"
                        break
                    final = 400 <= response.status < 500 and response.status not in (408, 429)
                    log.warning("webhook for job %s: %s answered %d (attempt %d)", job_id, url, response.status, attempt)
                    if final:
                        break
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("webhook for job %s: %s unreachable (%s, attempt %d)", job_id, url, exc, attempt)
            if attempt < self.policy.attempts:
                await asyncio.sleep(self.policy.delay(attempt))
        if self.on_outcome is not None:
            await self._call(self.on_outcome, job_id, status, attempt)
        return status == "delivered"

    @staticmethod
    async def _call(hook: Callable[..., Any], job_id: str, *args: Any) -> None:
        try:
            result = hook(job_id, *args)
            if asyncio.iscoroutine(result):
                await result
        except KilnError as exc:  # the database may be down: the delivery goes on (or happened)
            log.warning("webhook for job %s: could not record progress %s: %s", job_id, args, exc)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.drain()
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
