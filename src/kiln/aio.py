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
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
