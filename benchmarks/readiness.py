"""Waiting for a `kiln serve` started by a benchmark: ready on new connections from every worker."""

from __future__ import annotations

import subprocess
import time
import urllib.request


def wait_ready(url: str, seconds: float, *, workers: int = 1, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until /v2/health/ready answers 200 from ``workers`` distinct worker pids (``X-Kiln-Worker``;
    one server process sends none); fails early when ``process`` has exited."""
    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} (see its log)")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    seen.add(response.headers.get("X-Kiln-Worker") or "")
                    if len(seen) >= workers:
                        return
                    time.sleep(0.05)
                    continue
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} was not ready after {seconds:.0f} s")
