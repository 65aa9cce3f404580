"""Small asyncio helpers shared by the server, the apps and the scale-out layer."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancels ``task`` and waits until it has finished.

    The task's own ``CancelledError`` is absorbed; a cancellation of the caller while it waits is not
    (``contextlib.suppress(CancelledError)`` around the ``await`` would swallow that too, and the
    caller would carry on as if it had not been cancelled). Any other exception the task ended with
    propagates.
    """
    current = asyncio.current_task()
    # Cleanup that runs because the caller was cancelled sees cancelling() > 0 all along: only a
    # cancellation that arrives during this wait is the caller's to re-raise.
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise
