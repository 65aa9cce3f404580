"""Per-key token buckets: ``rate`` requests per second on average, bursts of ``burst``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """In-process limits (one server process); a request over the limit learns how long to wait."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def acquire(self, key: str, rate: float, burst: float) -> float:
        """0 when the request may proceed, else the seconds until one more is allowed."""
        if rate <= 0:
            return 0.0
        burst = max(burst, 1.0)
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(burst, now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate
