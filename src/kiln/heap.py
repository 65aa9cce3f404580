"""Long-lived processes move their start-up heap out of the garbage collector's reach.

A full (generation 2) collection walks every container object the process holds. After importing
torch, an app and its models that is ~430,000 objects, and one full collection took 231 ms on the
2-core machine (``gc.collect()`` timed in a process that had imported kiln's server and
authentication app); every thread waits on it (it holds the GIL), so each one lands in some
request's latency. ``gc.freeze`` after start-up moves those objects to a permanent generation that
collections skip (the same collection then takes well under a millisecond); objects made later are
collected as before. Only processes kiln owns call this (servers, the engine host, queue workers),
never a library caller's process: frozen objects are never collected, even once garbage.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_heap() -> int:
    """Collects what is garbage, then freezes the rest; returns how many objects are frozen.

    Frozen objects still go when their last reference does, but cycles among them are never
    collected; so each call first unfreezes the heap, and the collection that follows takes the
    cycles of whatever was dropped since the last call (the engine host calls this after each model
    load, so a model it closed earlier is collected then: one full collection per load)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's reach", count)
    return count
