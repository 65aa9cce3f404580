"""Job-row operations of the scale-out path, on top of the store's sessions.

The jobs table is the source of truth for attempts: a worker counts an attempt before it starts a
job, so a job whose worker died (or that crashed every worker) is still counted, and gives up
after N attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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


def _set_webhook(store: Store, job_id: str, status: str, attempts: int, *, touch: bool) -> None:
    with store.session() as session:
        job = session.get(JobRecord, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found")
        job.webhook_status = status
        job.webhook_attempts = attempts
        if touch:
            job.updated_at = utcnow()


def webhook_attempt(store: Store, job_id: str, attempt: int) -> None:
    """A delivery is under way (its heartbeat): ``sending``, the attempt count, and now."""
    _set_webhook(store, job_id, "sending", attempt, touch=True)


@dataclass(frozen=True)
class PendingWebhook:
    """A finished job whose webhook nobody is delivering (its process died before it was done)."""

    job_id: str
    status: str  # done | failed
    callback_url: str
    case_id: str | None
    error: str | None
    error_status: int | None
    attempts_made: int


def claim_stale_webhooks(store: Store, stale_after_s: float, limit: int = 32) -> list[PendingWebhook]:
    """Takes over webhooks of finished jobs that are ``pending`` or ``sending`` with no sign of life
    for ``stale_after_s``. Each row is claimed by a compare-and-set on (status, updated_at), so of
    several processes sweeping at once exactly one gets a given webhook, on SQLite and PostgreSQL alike."""
    from sqlalchemy import select

    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with store.session() as session:
        rows = session.execute(
            select(JobRecord.id, JobRecord.webhook_status, JobRecord.updated_at, JobRecord.status, JobRecord.callback_url,
                   JobRecord.case_id, JobRecord.error, JobRecord.error_status, JobRecord.webhook_attempts)
            .where(JobRecord.status.in_(("done", "failed")), JobRecord.callback_url.is_not(None),
                   JobRecord.webhook_status.in_(("pending", "sending")), JobRecord.updated_at < cutoff)
            .order_by(JobRecord.updated_at).limit(limit)
        ).all()
    return [
        PendingWebhook(row.id, row.status, row.callback_url, row.case_id, row.error, row.error_status, row.webhook_attempts or 0)
        for row in rows if _compare_and_claim(store, row.id, row.webhook_status, row.updated_at)
    ]


def _compare_and_claim(store: Store, job_id: str, webhook_status: str | None, updated_at: datetime) -> bool:
    from sqlalchemy import update

    with store.session() as session:
        result = session.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.webhook_status == webhook_status, JobRecord.updated_at == updated_at)
            .values(webhook_status="sending", updated_at=utcnow())
        )
        return bool(getattr(result, "rowcount", 0) == 1)  # a CursorResult for an UPDATE


def webhook_outcome(store: Store, job_id: str, status: str, attempts: int) -> None:
    """How the delivery ended (``delivered`` or ``failed``) after ``attempts``."""
    _set_webhook(store, job_id, status, attempts, touch=False)

