"""``kiln worker``: consume case jobs, batch them on the engine, store each case once, then ack.

Up to ``prefetch`` jobs are in flight at once; each runs the authentication pipeline, and their
engine calls meet in the model's ``DynamicBatcher`` (the model's own ``config.json`` batching
settings), so a batch is formed from whatever is waiting. Per job:

1. count the attempt in the jobs table (a job already ``done`` is acknowledged without work:
   a redelivery after a worker died between storing and acknowledging);
2. past ``max_attempts`` → job ``failed`` with its last error, message rejected → dead-letter queue;
3. run the case; the case id is the job id and the store inserts it at most once;
4. job ``done`` → ack → reply to the gateway (if it waits) → webhook (if asked).

Webhooks of finished jobs whose worker died before delivering them are taken over by a live worker
(``webhook_recovery``), with the attempts they have left.

A client error (bad photo: 4xx) fails the job at once. A database outage requeues the job after
a pause without using up its attempts; any other error requeues it with the attempt counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError, UnavailableError
from kiln.scale import jobstore
from kiln.scale.broker import BrokerConnection, Topology
from kiln.scale.messages import CaseJob, JobResult, MalformedMessageError
from kiln.scale.webhook_recovery import WebhookRecovery
from kiln.scale.webhooks import WebhookSender

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from kiln.apps.authenticity.pipeline import AuthenticityService
    from kiln.config import StagePhotos
    from kiln.serve.repository import ModelRepository
    from kiln.serve.store import Store

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    broker_url: str
    db_url: str
    repo: Path
    model_name: str = "authenticity"
    queue_prefix: str = "kiln"
    prefetch: int = 16
    max_attempts: int = 3
    retry_pause_s: float = 1.0
    webhook_secret: str | None = None
    webhook_takeover_s: float | None = None  # None: the sender's lease (RetryPolicy.lease_s)
    freeze_heap: bool = False  # gc.freeze once the engine is warm (the CLI's own process; kiln.heap)
    stage_photos: StagePhotos = "off"  # with photo files, when a case's photos are written (KILN_STAGE_PHOTOS)
    decode_device: str = "auto"  # where photos are decoded (KILN_DECODE_DEVICE)


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    dead: int = 0
    retried: int = 0
    work_s: float = 0.0


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.stats = WorkerStats()
        self.store: Store | None = None
        self.repository: ModelRepository | None = None
        self.service: AuthenticityService | None = None
        self.broker: BrokerConnection | None = None
        self.webhooks: WebhookSender | None = None
        self.webhook_recovery: WebhookRecovery | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer_tag: str | None = None
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        """Opens the store, loads and warms the engine, then starts consuming."""
        from kiln.apps.authenticity.pipeline import AuthenticityService
        from kiln.serve.inference import BatchingInference
        from kiln.serve.repository import ModelRepository
        from kiln.serve.store import open_store

        o = self.options
        self.store = await asyncio.to_thread(open_store, o.db_url)
        self.repository = ModelRepository(o.repo, models=[o.model_name])
        self.repository.scan()
        await self.repository.load()
        inference = BatchingInference(self.repository)
        if not inference.is_ready(o.model_name):
            problems = [r for r in self.repository.index() if r.get("name") == o.model_name]
            raise KilnError(f"model {o.model_name!r} did not load from {o.repo}: {problems or 'no such folder'}",
                            hint="point --repo at a model repository holding REPO/authenticity/1/")
        self.service = AuthenticityService(inference, self.store, model_name=o.model_name, decode_device=o.decode_device,
                                           stage_photos=o.stage_photos)
        await self.service.start()
        if o.freeze_heap:
            from kiln.heap import freeze_heap

            freeze_heap()
        store = self.store
        self.webhooks = WebhookSender(
            o.webhook_secret,
            on_outcome=lambda job_id, status, n: asyncio.to_thread(jobstore.webhook_outcome, store, job_id, status, n),
            on_attempt=lambda job_id, n: asyncio.to_thread(jobstore.webhook_attempt, store, job_id, n),
        )
        if o.webhook_secret:
            self.webhook_recovery = WebhookRecovery(store, self.webhooks, self.service.get_case,
                                                    stale_after_s=o.webhook_takeover_s)
            self.webhook_recovery.start()
        self.broker = BrokerConnection(o.broker_url, Topology(o.queue_prefix), prefetch=o.prefetch)
        self.broker.on_ready(self._consume)
        await self.broker.start()

    async def _consume(self, broker: BrokerConnection) -> None:
        assert broker.cases is not None
        self._consumer_tag = await broker.cases.consume(self._on_message)
        log.info("worker consuming %s (prefetch %d, max attempts %d)", broker.topology.cases, self.options.prefetch,
                 self.options.max_attempts)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self.handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        assert self.store is not None and self.service is not None
        try:
            job = CaseJob.decode(message.body)
        except MalformedMessageError as exc:
            log.error("dead-lettering a malformed message: %s", exc)
            await _settle(message.reject, requeue=False)
            return
        o = self.options
        started = time.time()
        try:
            attempt = await asyncio.to_thread(jobstore.begin_attempt, self.store, job.job_id, job.kind, job.callback_url)
        except UnavailableError as exc:
            log.warning("job %s: database unavailable (%s); requeued", job.job_id, exc)
            await asyncio.sleep(o.retry_pause_s)
            await _settle(message.nack, requeue=True)
            return
        if attempt.status == "done":
            await _settle(message.ack)
            await self._reply(message, JobResult(job.job_id, "done", case_id=attempt.case_id, attempts=attempt.attempts))
            return
        if attempt.attempts > o.max_attempts:
            await self._dead_letter(message, job, attempt)
            return
        from kiln.apps.authenticity.pipeline import Upload
        from kiln.serve.context import Priority

        uploads = [Upload(f.name, f.data, f.content_type) for f in job.files]
        priority = Priority.BULK if job.priority == "bulk" else Priority.INTERACTIVE
        begin = time.perf_counter()
        try:
            response = await self.service.authenticate(uploads, job.views, job.brand, job.model, case_id=job.job_id,
                                                       priority=priority, tenant=job.tenant)
            await asyncio.to_thread(jobstore.finish, self.store, job.job_id, case_id=response.case_id)
        except UnavailableError as exc:  # database or engine queue: not the job's fault
            log.warning("job %s: %s; requeued", job.job_id, exc)
            with contextlib.suppress(KilnError):
                await asyncio.to_thread(jobstore.retry_later, self.store, job.job_id, str(exc), 503)
            self.stats.retried += 1
            await asyncio.sleep(o.retry_pause_s)
            await _settle(message.nack, requeue=True)
            return
        except KilnError as exc:
            if exc.status < 500:  # the client's photos or fields: retrying cannot help
                await self._fail(message, job, attempt.attempts, str(exc), exc.status)
                return
            await self._retry(message, job, str(exc), exc.status)
            return
        except Exception as exc:  # a bug or an engine crash: recorded and retried, dead-lettered after N
            log.exception("job %s failed (attempt %d)", job.job_id, attempt.attempts)
            await self._retry(message, job, f"internal error ({type(exc).__name__})", 500)
            return
        work_s = time.perf_counter() - begin
        self.stats.done += 1
        self.stats.work_s += work_s
        await _settle(message.ack)
        await self._reply(message, JobResult(job.job_id, "done", case_id=response.case_id, verdict=response.verdict,
                                             attempts=attempt.attempts, queue_wait_s=max(0.0, started - job.submitted_at),
                                             work_s=work_s))
        if job.callback_url and self.webhooks is not None:
            self.webhooks.send(job.job_id, job.callback_url, {
                "job_id": job.job_id, "status": "done", "case_id": response.case_id, "verdict": response.verdict,
                "result": response.model_dump(mode="json")})

    async def _retry(self, message: AbstractIncomingMessage, job: CaseJob, error: str, status: int) -> None:
        assert self.store is not None
        with contextlib.suppress(KilnError):
            await asyncio.to_thread(jobstore.retry_later, self.store, job.job_id, error, status)
        self.stats.retried += 1
        await asyncio.sleep(self.options.retry_pause_s)
        await _settle(message.nack, requeue=True)

    async def _fail(self, message: AbstractIncomingMessage, job: CaseJob, attempts: int, error: str, status: int) -> None:
        assert self.store is not None
        try:
            await asyncio.to_thread(jobstore.finish, self.store, job.job_id, error=error, error_status=status)
        except UnavailableError:
            await asyncio.sleep(self.options.retry_pause_s)
            await _settle(message.nack, requeue=True)
            return
        self.stats.failed += 1
        await _settle(message.ack)
        await self._report_failure(message, job, attempts, error, status)

    async def _dead_letter(self, message: AbstractIncomingMessage, job: CaseJob, attempt: jobstore.Attempt) -> None:
        """Gives up: the job fails with its last error and the message moves to the dead-letter queue."""
        assert self.store is not None
        tries = attempt.attempts - 1
        error = f"gave up after {tries} attempts; last error: {attempt.error or 'the worker stopped while running it'}"
        try:
            await asyncio.to_thread(jobstore.finish, self.store, job.job_id, error=error, error_status=500)
        except UnavailableError:
            await asyncio.sleep(self.options.retry_pause_s)
            await _settle(message.nack, requeue=True)
            return
        self.stats.dead += 1
        log.error("job %s dead-lettered: %s", job.job_id, error)
        await _settle(message.reject, requeue=False)  # the queue's dead-letter exchange moves it to PREFIX.dead
        await self._report_failure(message, job, tries, error, 500)

    async def _report_failure(self, message: AbstractIncomingMessage, job: CaseJob, attempts: int, error: str,
                              status: int) -> None:
        await self._reply(message, JobResult(job.job_id, "failed", error=error, error_status=status, attempts=attempts))
        if job.callback_url and self.webhooks is not None:
            self.webhooks.send(job.job_id, job.callback_url, {"job_id": job.job_id, "status": "failed", "error": error,
                                                              "error_status": status})

    async def _reply(self, message: AbstractIncomingMessage, result: JobResult) -> None:
        if not message.reply_to or self.broker is None:
            return
        try:
            await self.broker.publish(result.encode(), routing_key=message.reply_to, correlation_id=result.job_id)
        except UnavailableError as exc:  # the job is stored; the gateway's client can poll the job
            log.warning("job %s: could not reply to %s: %s", result.job_id, message.reply_to, exc)

    async def close(self) -> None:
        """Stops consuming, lets running jobs finish (unfinished ones are redelivered to other workers)."""
        if self.broker is not None and self.broker.cases is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):  # the channel may already be gone
                await self.broker.cases.cancel(self._consumer_tag)
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.broker is not None:
            await self.broker.close()
        if self.webhook_recovery is not None:
            await self.webhook_recovery.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.service is not None:  # photo writes in flight finish (or failed cases' files go) first
            await self.service.stop()
        if self.repository is not None:
            await self.repository.close()
        if self.store is not None:
            self.store.close()


async def _settle(action: Any, **kwargs: Any) -> None:
    """ack/nack/reject; on a channel that died meanwhile the broker redelivers the job anyway."""
    import aio_pika

    try:
        await action(**kwargs)
    except (aio_pika.exceptions.AMQPError, RuntimeError, OSError) as exc:
        log.warning("could not settle a message (%s); the broker will redeliver it", exc)


async def run_worker(options: WorkerOptions, *, on_started: Any = None) -> None:
    """Runs a worker until SIGINT/SIGTERM."""
    worker = Worker(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.start()
        if on_started is not None:
            on_started(worker)
        await worker.stopping.wait()
    finally:
        await worker.close()
