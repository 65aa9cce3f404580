"""How long a thread may hold the GIL while others wait for it, in kiln's own server processes.

A thread that wakes (an engine host's link thread whose batch is done, a worker's event loop with a
gRPC call to answer) needs the GIL. Where the thread holding it runs Python without blocking, the
woken one waits until the holder's switch interval runs out: 5 ms by default, which is a third of a
15 ms latency bound. ``KILN_GIL_SWITCH_INTERVAL_US`` sets a shorter one (more hand-offs, each a few
microseconds of overhead) in the processes kiln owns (servers, server workers, the engine host),
never in a library caller's process. Unset, Python's default stands.
"""

from __future__ import annotations

import logging
import sys

from kiln.config import Settings, get_settings

log = logging.getLogger(__name__)


def apply_switch_interval(settings: Settings | None = None) -> float:
    """Sets the process's switch interval from the settings, if they name one; returns the interval in force (s)."""
    microseconds = (settings or get_settings()).gil_switch_interval_us
    if microseconds is not None:
        sys.setswitchinterval(microseconds / 1e6)
        log.info("GIL switch interval %d µs", microseconds)
    return sys.getswitchinterval()
