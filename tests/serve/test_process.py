"""``kiln serve`` process helpers that need no server."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

from kiln.serve.process import freeze_heap_when_started


async def test_heap_is_frozen_once_start_up_is_over() -> None:
    state = SimpleNamespace(started=False, startup_error=None)
    gc.unfreeze()
    task = asyncio.create_task(freeze_heap_when_started(state, poll_s=0.01))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not task.done() and gc.get_freeze_count() == 0, "nothing is frozen while models still load"
    state.started = True
    try:
        await asyncio.wait_for(task, 5)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
