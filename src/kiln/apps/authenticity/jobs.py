"""Asynchronous cases: a job row in the store plus an in-process background task.

``JobTransport`` is the seam where the RabbitMQ transport (scale-out) plugs in later: it takes a
job id and the work, and the store's jobs table carries the state either way.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.serve.store import Store

log = logging.getLogger(__name__)

Work = Callable[[str], Awaitable[str]]  # job id → case id


class JobTransport(Protocol):
    async def submit(self, kind: str, work: Work) -> str:
        """Records a queued job, arranges for ``work`` to run, and returns the job id at once."""
        ...

    async def close(self) -> None: ...


class InProcessJobs:
    """Runs jobs as asyncio tasks in this process, bounded by ``concurrency``."""

    def __init__(self, store: Store, concurrency: int = 4) -> None:
        self.store = store
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    async def submit(self, kind: str, work: Work) -> str:
        job_id = uuid.uuid4().hex
        await asyncio.to_thread(self.store.create_job, job_id, kind)
        task = asyncio.create_task(self._run(job_id, work), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job_id

    async def _run(self, job_id: str, work: Work) -> None:
        async with self._slots:
            await asyncio.to_thread(self.store.update_job, job_id, "running")
            try:
                case_id = await work(job_id)
            except KilnError as exc:
                await asyncio.to_thread(self.store.update_job, job_id, "failed", error=str(exc), error_status=exc.status)
            except asyncio.CancelledError:
                await asyncio.to_thread(self.store.update_job, job_id, "failed", error="the server shut down before the job ran",
                                        error_status=503)
                raise
            except Exception:  # a bug: recorded on the job, logged with its traceback, never shown to clients
                log.exception("job %s failed", job_id)
                await asyncio.to_thread(self.store.update_job, job_id, "failed", error="internal error", error_status=500)
            else:
                await asyncio.to_thread(self.store.update_job, job_id, "done", case_id=case_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Waits until every submitted job has finished (tests and orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
