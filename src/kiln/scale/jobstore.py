"""Job-row operations of the scale-out path, on top of the store's sessions.

The jobs table is the source of truth for attempts: a worker counts an attempt before it starts a
job, so a job whose worker died (or that crashed every worker) is still counted, and gives up
after N attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kiln.errors import NotFoundError
from kiln.serve.store.models import JobRecord, utcnow

if TYPE_CHECKING:
    from kiln.serve.store import Store


@dataclass(frozen=True)
class Attempt:
    status: str  # the job's status before this attempt ("done" means: already finished, do not run again)
    attempts: int  # including this one
    case_id: str | None
    error: str | None


def create_job(store: Store, job_id: str, kind: str, callback_url: str | None = None) -> None:
    with store.session() as session:
        session.add(JobRecord(id=job_id, kind=kind, status="queued", attempts=0, callback_url=callback_url,
                              webhook_status="pending" if callback_url else None, webhook_attempts=0))


def begin_attempt(store: Store, job_id: str, kind: str, callback_url: str | None) -> Attempt:
    """Counts one more attempt and marks the job running (creating the row for jobs published
    straight to the broker, e.g. by ``kiln auth bulk`` without a database)."""
    with store.session() as session:
        job = session.get(JobRecord, job_id, with_for_update=True)
        if job is None:
            job = JobRecord(id=job_id, kind=kind, status="queued", attempts=0, callback_url=callback_url,
                            webhook_status="pending" if callback_url else None, webhook_attempts=0)
            session.add(job)
        before = job.status
        if before != "done":
            job.status = "running"
            job.attempts = (job.attempts or 0) + 1
            job.updated_at = utcnow()
        return Attempt(before, job.attempts, job.case_id, job.error)


def retry_later(store: Store, job_id: str, error: str, error_status: int) -> None:
    """Back to queued with the error of the attempt that failed (shown while it retries)."""
    store.update_job(job_id, "queued", error=error, error_status=error_status)


def finish(store: Store, job_id: str, *, case_id: str | None = None, error: str | None = None,
           error_status: int | None = None) -> None:
    if case_id is not None:
        store.update_job(job_id, "done", case_id=case_id)
    else:
        store.update_job(job_id, "failed", error=error, error_status=error_status)


def webhook_outcome(store: Store, job_id: str, status: str, attempts: int) -> None:
    with store.session() as session:
        job = session.get(JobRecord, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found")
        job.webhook_status = status
        job.webhook_attempts = attempts

