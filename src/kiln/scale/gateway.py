"""Gateway mode of ``kiln serve --broker``: routes validate cases and publish them as jobs.

The gateway runs no engines. It checks each request (counts, views, sizes, image headers), writes
the job row, publishes the photos as a persistent job and either returns the job id (async) or
waits for the worker's reply on its own reply queue and reads the stored case (sync). Decoding and
inference happen in the workers, where they scale with the number of workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import DeadlineExceededError, KilnError, NotFoundError, UnavailableError
from kiln.scale import jobstore
from kiln.scale.broker import BrokerConnection, Topology, amqp_priority
from kiln.scale.messages import CaseJob, JobFile, JobResult, MalformedMessageError
from kiln.serve.context import Priority

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from kiln.apps.authenticity.jobs import CaseSubmission
    from kiln.apps.authenticity.pipeline import AuthenticityService
    from kiln.apps.authenticity.schemas import CaseResponse
    from kiln.engine.manifest import EngineManifest
    from kiln.serve.state import ServerState
    from kiln.serve.store import Store

log = logging.getLogger(__name__)


class ManifestInference:
    """The gateway's ``InferenceClient``: engine manifests read from the repository, no engines loaded.

    Apps read calibration, preprocessing and the embedding space from the manifest; inference
    itself happens in the workers, so ``infer`` says so.
    """

    def __init__(self, repo: Path) -> None:
        from kiln.serve.repository import ModelRepository

        self.repository = ModelRepository(repo)
        self._manifests: dict[str, EngineManifest] = {}

    def load(self, names: list[str]) -> None:
        from kiln.engine.manifest import EngineManifest

        self.repository.scan()
        for name in names:
            versions = self.repository.versions(name)
            newest = versions[max(versions, key=int)]
            self._manifests[name] = EngineManifest.read(newest.engine_dir)

    async def infer(self, model: str, inputs: dict[str, np.ndarray], *, version: str | None = None,
                    priority: Priority = Priority.INTERACTIVE, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        raise UnavailableError("this gateway runs no engines: cases go to the workers through the broker")

    def manifest(self, model: str, version: str | None = None) -> EngineManifest:
        if model not in self._manifests:
            raise NotFoundError(f"model {model!r} has no engine in the repository")
        return self._manifests[model]

    def is_ready(self, model: str) -> bool:
        return model in self._manifests


@dataclass
class GatewayStats:
    """Where the gateway spends its time (the scale-out benchmark reads these)."""

    published: int = 0
    publish_s: float = 0.0  # job row + publish with confirm
    replies: int = 0
    queue_wait_s: float = 0.0  # reported by workers
    work_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class BrokerCases:
    """``CaseTransport`` over RabbitMQ: the gateway side."""

    def __init__(self, broker: BrokerConnection, service: AuthenticityService, store: Store, *,
                 webhook_secret: str | None, sync_timeout_s: float = 60.0) -> None:
        self.broker = broker
        self.service = service
        self.store = store
        self.webhook_secret = webhook_secret
        self.sync_timeout_s = sync_timeout_s
        self.reply_queue = broker.topology.reply_queue()
        self._waiting: dict[str, asyncio.Future[JobResult]] = {}
        self.stats = GatewayStats()
        broker.on_ready(self._consume_replies)
        broker.on_lost(self._fail_waiting)

    async def _consume_replies(self, broker: BrokerConnection) -> None:
        await broker.consume(self.reply_queue, self._on_reply, exclusive=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            result = JobResult.decode(message.body)
        except MalformedMessageError as exc:
            log.warning("ignoring a reply that is not a kiln result: %s", exc)
            return
        self.stats.replies += 1
        self.stats.queue_wait_s += result.queue_wait_s
        self.stats.work_s += result.work_s
        waiter = self._waiting.pop(result.job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UnavailableError(
                    "lost the message broker while the case was being processed",
                    hint="the job may still finish: see GET /v1/jobs/{id}; or retry", retry_after_s=2.0))

    def _job(self, case: CaseSubmission) -> CaseJob:
        return CaseJob(
            job_id=uuid.uuid4().hex, views=case.views, brand=case.brand, model=case.model,
            files=[JobFile(u.name, u.content_type, u.data) for u in case.uploads], priority=case.priority,
            callback_url=case.callback_url, tenant=case.tenant,
        )

    async def _publish(self, job: CaseJob, *, reply: bool) -> None:
        self.broker.check()  # fail fast, before a job row is written
        start = time.perf_counter()
        await asyncio.to_thread(jobstore.create_job, self.store, job.job_id, job.kind, job.callback_url)
        if job.tenant is not None:
            await asyncio.to_thread(self.store.set_job_tenant, job.job_id, job.tenant)
        try:
            await self.broker.publish(job.encode(), routing_key=self.broker.topology.cases,
                                      priority=amqp_priority(job.priority), correlation_id=job.job_id,
                                      reply_to=self.reply_queue if reply else None)
        except UnavailableError as exc:
            try:
                await asyncio.to_thread(jobstore.finish, self.store, job.job_id, error=str(exc), error_status=503)
            except KilnError:
                log.warning("job %s: could not record that the broker refused it", job.job_id)
            raise
        self.stats.published += 1
        self.stats.publish_s += time.perf_counter() - start

    async def submit(self, case: CaseSubmission) -> str:
        if case.callback_url and not self.webhook_secret:
            raise KilnError("this server has no webhook secret, so it cannot sign callbacks",
                            hint="start it with KILN_WEBHOOK_SECRET set, or leave out callback_url")
        job = self._job(case)
        await self._publish(job, reply=False)
        return job.job_id

    async def run(self, case: CaseSubmission) -> CaseResponse:
        job = self._job(case)
        waiter: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._waiting[job.job_id] = waiter
        try:
            await self._publish(job, reply=True)
            async with asyncio.timeout(self.sync_timeout_s):
                result = await waiter
        except TimeoutError as exc:
            raise DeadlineExceededError(
                f"no worker finished the case within {self.sync_timeout_s:.0f} s",
                hint=f"it is still queued as job {job.job_id}: see GET /v1/jobs/{job.job_id}") from exc
        finally:
            self._waiting.pop(job.job_id, None)
        if result.status != "done" or result.case_id is None:
            raise KilnError(result.error or "the case failed", status=result.error_status or 500)
        return await self.service.get_case(result.case_id)

    async def close(self) -> None:
        self._fail_waiting()
        st = self.stats
        log.info("gateway stats: %s", json.dumps({
            "published": st.published, "publish_s": round(st.publish_s, 4), "replies": st.replies,
            "queue_wait_s": round(st.queue_wait_s, 4), "work_s": round(st.work_s, 4)}))


def enable_gateway(state: ServerState, *, broker_url: str, db_url: str, queue_prefix: str = "kiln",
                   sync_timeout_s: float = 60.0) -> BrokerConnection:
    """Turns a server into a gateway: no engines, cases published to ``broker_url``, store on ``db_url``."""
    from kiln.serve.store import open_store

    store = open_store(db_url)
    broker = BrokerConnection(broker_url, Topology(queue_prefix))
    inference = ManifestInference(state.repository.root)
    required = sorted({m for plugin in state.plugins for m in plugin.required_models()})
    inference.load(required)
    state.repository.only = set()  # the gateway loads no engines; /v2 inference is the workers' job
    state.context.inference = inference
    state.context.state["store"] = store
    state.context.state["broker"] = broker
    secret = state.settings.webhook_secret

    def make_transport(service: AuthenticityService, store: Store) -> Any:
        transport = BrokerCases(broker, service, store, webhook_secret=secret, sync_timeout_s=sync_timeout_s)
        state.context.state["gateway_stats"] = transport.stats
        return transport

    state.context.state["case_transport"] = make_transport

    async def stop_broker() -> None:
        await broker.close()
        store.close()

    state.before_shutdown.append(stop_broker)
    return broker
