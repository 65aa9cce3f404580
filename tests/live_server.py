"""Helpers for tests that run a real server in a background thread."""

from __future__ import annotations

import time


def wait_until_ready(url: str, errors: list[BaseException], *, seconds: float, request_timeout: float) -> None:
    """Polls ``url``/v2/health/ready until it answers 200; raises if the server failed or the time ran out."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not errors:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=request_timeout).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready: {errors}")
