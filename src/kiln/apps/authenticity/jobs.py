"""Asynchronous cases: a job row in the store plus an in-process background task.

``CaseTransport`` is the seam the routes use: ``InProcessCases`` (default, this module) or the
RabbitMQ gateway of ``kiln.scale``; the store's jobs table carries the state either way.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.apps.authenticity.pipeline import AuthenticityService, Upload
    from kiln.apps.authenticity.schemas import CaseResponse
    from kiln.scale.webhooks import WebhookSender
    from kiln.serve.context import Priority
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
        self.start(job_id, work)
        return job_id

    def start(self, job_id: str, work: Work) -> None:
        """Runs ``work`` for a job whose row already exists."""
        task = asyncio.create_task(self._run(job_id, work), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


@dataclass
class CaseSubmission:
    """A checked case as the routes hand it to a ``CaseTransport``."""

    uploads: list[Upload]
    views: list[str]
    brand: str
    model: str
    priority: str = "interactive"  # or "bulk"
    callback_url: str | None = None
    tenant: str | None = None  # the API key's tenant that owns the case (None on an open server)


class CaseTransport(Protocol):
    """How the routes run cases: here in-process (``InProcessCases``), or over the broker
    (``kiln.scale.gateway.BrokerCases``) when ``kiln serve --broker`` is given."""

    async def run(self, case: CaseSubmission) -> CaseResponse:
        """Synchronous: the stored case."""
        ...

    async def submit(self, case: CaseSubmission) -> str:
        """Asynchronous: a job id at once; the job row says how it went."""
        ...

    async def close(self) -> None: ...


class InProcessCases:
    """Cases on this server's own engines: sync runs inline, async through ``InProcessJobs``."""

    def __init__(self, service: AuthenticityService, jobs: InProcessJobs, webhooks: WebhookSender | None = None) -> None:
        self.service = service
        self.jobs = jobs
        self.webhooks = webhooks

    async def run(self, case: CaseSubmission) -> CaseResponse:
        return await self.service.authenticate(case.uploads, case.views, case.brand, case.model, checked=True,
                                               priority=_priority(case.priority), tenant=case.tenant)

    async def submit(self, case: CaseSubmission) -> str:
        from kiln.scale.jobstore import create_job

        webhooks = self.webhooks if case.callback_url else None
        if webhooks is not None:
            webhooks.require_secret()

        async def work(job_id: str) -> str:
            try:
                result = await self.service.authenticate(case.uploads, case.views, case.brand, case.model, case_id=job_id,
                                                         checked=True, priority=_priority(case.priority),
                                                         tenant=case.tenant)
            except KilnError as exc:
                if webhooks is not None and case.callback_url:
                    webhooks.send(job_id, case.callback_url, {"job_id": job_id, "status": "failed", "error": str(exc),
                                                              "error_status": exc.status})
                raise
            if webhooks is not None and case.callback_url:
                webhooks.send(job_id, case.callback_url, {"job_id": job_id, "status": "done", "case_id": result.case_id,
                                                          "verdict": result.verdict, "result": result.model_dump(mode="json")})
            return result.case_id

        job_id = uuid.uuid4().hex
        await asyncio.to_thread(create_job, self.jobs.store, job_id, "authenticate", case.callback_url)
        if case.tenant is not None:
            await asyncio.to_thread(self.jobs.store.set_job_tenant, job_id, case.tenant)
        self.jobs.start(job_id, work)
        return job_id

    async def drain(self) -> None:
        """Waits until every submitted job (and its webhook) has finished (tests and orderly shutdown)."""
        await self.jobs.drain()
        if self.webhooks is not None:
            await self.webhooks.drain()

    async def close(self) -> None:
        await self.jobs.close()
        if self.webhooks is not None:
            await self.webhooks.close()


def _priority(name: str) -> Priority:
    from kiln.serve.context import Priority

    return Priority.BULK if name == "bulk" else Priority.INTERACTIVE
