"""Webhooks outlive the process that started them: a finished job's webhook that nobody delivers any
more is claimed once, by one process, and delivered with the attempts it has left (SQLite, no services)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kiln.scale import jobstore
from kiln.serve.store import Store, open_store
from kiln.serve.store.models import JobRecord, utcnow
from tests.scale.conftest import case_form, wait_for, webhook_receiver


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'kiln.db'}")


def _job(store: Store, job_id: str, status: str, webhook_status: str | None, age_s: float, attempts: int = 0) -> None:
    jobstore.create_job(store, job_id, "authenticate", "http://127.0.0.1:9/hook" if webhook_status else None)
    with store.session() as session:
        job = session.get(JobRecord, job_id)
        assert job is not None
        job.status, job.webhook_status, job.webhook_attempts = status, webhook_status, attempts
        job.case_id = job_id if status == "done" else None
        job.error = "bad photo" if status == "failed" else None
        job.error_status = 422 if status == "failed" else None
    with store.session() as session:  # after the onupdate stamp of the change above
        job = session.get(JobRecord, job_id)
        assert job is not None
        job.updated_at = utcnow() - timedelta(seconds=age_s)


def test_only_finished_jobs_whose_webhook_went_quiet_are_claimed_and_only_once(store: Store) -> None:
    _job(store, "stale-done", "done", "pending", age_s=600)
    _job(store, "stale-sending", "failed", "sending", age_s=600, attempts=3)
    _job(store, "live-sending", "done", "sending", age_s=5)  # its sender is alive: attempts refresh the stamp
    _job(store, "still-running", "running", "pending", age_s=600)  # not finished: its worker sends when done
    _job(store, "delivered", "done", "delivered", age_s=600)
    _job(store, "no-callback", "done", None, age_s=600)

    claimed = {job.job_id: job for job in jobstore.claim_stale_webhooks(store, stale_after_s=60)}
    assert set(claimed) == {"stale-done", "stale-sending"}
    assert claimed["stale-sending"].attempts_made == 3 and claimed["stale-sending"].error_status == 422
    assert claimed["stale-done"].case_id == "stale-done"
    assert store.get_job("stale-done").webhook_status == "sending"
    assert jobstore.claim_stale_webhooks(store, stale_after_s=60) == []  # the claim itself is a sign of life


def test_two_processes_sweeping_at_once_claim_each_webhook_once(store: Store) -> None:
    for i in range(20):
        _job(store, f"job{i}", "done", "pending", age_s=600)

    async def race() -> list[list[jobstore.PendingWebhook]]:
        return list(await asyncio.gather(*[asyncio.to_thread(jobstore.claim_stale_webhooks, store, 60.0) for _ in range(4)]))

    results = asyncio.run(race())
    ids = [job.job_id for claimed in results for job in claimed]
    assert sorted(ids) == sorted(f"job{i}" for i in range(20))  # every one, none twice


async def test_a_webhook_left_undelivered_by_a_dead_server_is_taken_over_and_delivered(
        engine_dir: Path, synth_data: Path, tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.errors import KilnError
    from kiln.scale.bulk import read_catalogue
    from kiln.scale.webhooks import verify_signature
    from kiln.serve.context import AppContext, DirectInference

    def server(takeover_s: float | None) -> tuple[FastAPI, AppContext, AuthenticityPlugin]:
        app = FastAPI()

        @app.exception_handler(KilnError)
        async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

        settings = Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kiln.db'}", webhook_secret="embedded",
                            webhook_takeover_s=takeover_s)
        ctx = AppContext(settings=settings, inference=DirectInference.from_dirs({"authenticity": engine_dir}))
        plugin = AuthenticityPlugin()
        app.include_router(plugin.router(ctx))
        return app, ctx, plugin

    async with webhook_receiver(failures=2) as (url, received):
        # the first server: the receiver answers 503 twice, and the server "dies" during the retries
        app, ctx, first = server(takeover_s=None)
        await first.startup(ctx)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            form: dict[str, Any] = case_form(read_catalogue(synth_data)[0])
            form["data"]["callback_url"] = url
            response = await client.post("/v1/authenticate?mode=async", **form)
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]

        async def two_attempts() -> bool:
            return len(received) >= 2

        await wait_for(two_attempts, 60, "two failed attempts")
        assert first.jobs is not None
        sender = first.jobs.webhooks  # type: ignore[attr-defined]
        for task in list(sender._tasks):  # the process dies: no outcome is ever recorded
            task.cancel()
        await asyncio.gather(*list(sender._tasks), return_exceptions=True)
        store = ctx.state["store"]
        left = await asyncio.to_thread(store.get_job, job_id)
        assert left.status == "done" and left.webhook_status == "sending" and left.webhook_attempts == 2
        await first.shutdown(ctx)

        # the next server on the same database takes the webhook over once it has been quiet long enough
        _, ctx2, second = server(takeover_s=1)
        await second.startup(ctx2)
        try:
            store2 = ctx2.state["store"]

            async def delivered() -> bool:
                return (await asyncio.to_thread(store2.get_job, job_id)).webhook_status == "delivered"

            await wait_for(delivered, 30, "webhook delivered by the second server")
            job = await asyncio.to_thread(store2.get_job, job_id)
            assert job.webhook_attempts == 3  # the attempts continue where the dead server stopped
        finally:
            await second.shutdown(ctx2)
    assert len(received) == 3
    body, signature = received[-1]
    assert verify_signature("embedded", body, signature)
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == "done" and payload["result"]["case_id"] == job_id
    assert json.loads(received[0][0]) == payload  # the same body as the first attempts
