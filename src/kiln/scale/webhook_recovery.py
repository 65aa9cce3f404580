"""Webhooks outlive the process that started them: a finished job's webhook that nobody is delivering
(its worker or server died during the retries, or between storing the job and the first try) is
taken over by another process and delivered with the attempts it has left.

Every process that sends webhooks runs a ``WebhookRecovery``: every ``interval_s`` it claims the
finished jobs whose webhook is ``pending`` or ``sending`` with no heartbeat for the sender's lease
(``RetryPolicy.lease_s``: each attempt refreshes it), rebuilds the payload from the stored job and
case, and hands it to its ``WebhookSender``. Delivery is therefore at least once: a receiver that
must not act twice deduplicates on the ``X-Kiln-Job`` header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kiln.aio import cancel_and_wait
from kiln.errors import KilnError
from kiln.scale import jobstore

if TYPE_CHECKING:
    from kiln.scale.webhooks import WebhookSender
    from kiln.serve.store import Store

log = logging.getLogger(__name__)


def webhook_payload(job: jobstore.PendingWebhook, case: Any | None) -> dict[str, Any]:
    """The body the job's first webhook carried: ``case`` is its ``CaseResponse`` when it is done."""
    if job.status == "done" and case is not None:
        return {"job_id": job.job_id, "status": "done", "case_id": case.case_id, "verdict": case.verdict,
                "result": case.model_dump(mode="json")}
    return {"job_id": job.job_id, "status": "failed", "error": job.error or "the job failed",
            "error_status": job.error_status or 500}


class WebhookRecovery:
    def __init__(self, store: Store, sender: WebhookSender, load_case: Callable[[str], Awaitable[Any]],
                 *, stale_after_s: float | None = None, interval_s: float | None = None) -> None:
        self.store = store
        self.sender = sender
        self.load_case = load_case
        self.stale_after_s = stale_after_s if stale_after_s is not None else sender.policy.lease_s()
        self.interval_s = interval_s if interval_s is not None else max(1.0, self.stale_after_s / 4)
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> int:
        """Claims and restarts every stale webhook; returns how many."""
        claimed = await asyncio.to_thread(jobstore.claim_stale_webhooks, self.store, self.stale_after_s)
        for job in claimed:
            case = None
            if job.status == "done" and job.case_id:
                try:
                    case = await self.load_case(job.case_id)
                except KilnError as exc:  # the case is gone: say so to the receiver rather than nothing
                    log.warning("webhook for job %s: case %s could not be loaded (%s)", job.job_id, job.case_id, exc)
            log.info("webhook for job %s: taken over after %d attempt(s) elsewhere", job.job_id, job.attempts_made)
            self.sender.send(job.job_id, job.callback_url, webhook_payload(job, case), attempts_made=job.attempts_made)
        return len(claimed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-recovery")

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except KilnError as exc:  # the database is down: try again at the next sweep
                log.warning("webhook recovery: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
