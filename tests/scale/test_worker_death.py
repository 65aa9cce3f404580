"""200 async cases through 2 worker processes while one is killed: all complete, none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale.conftest import (
    BROKER,
    case_form,
    pg_url,
    queue_counts,
    start_gateway,
    stop_gateway,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

CASES = 200


def _start_worker(repo: Path, db_url: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", "worker", "--broker", BROKER, "--db", db_url, "--repo", str(repo),
         "--queue-prefix", prefix, "--prefetch", "8", "--max-attempts", "3", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )


async def test_killed_worker_loses_no_job_and_stores_none_twice(repo: Path, database: str, queue_prefix: str,
                                                                   synth_data: Path, tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from kiln.scale.bulk import read_catalogue
    from kiln.serve.store.models import CaseRecord, JobRecord

    db_url = pg_url(database)
    gateway = await start_gateway(repo, db_url, queue_prefix)
    store = gateway.store
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # The whole backlog is queued first, so the worker that is killed always holds unacknowledged jobs.
        catalogue = read_catalogue(synth_data)
        job_ids = []
        for i in range(CASES):
            response = await gateway.client.post("/v1/authenticate?mode=async", **case_form(catalogue[i % len(catalogue)]))
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["job_id"])
        assert (await queue_counts(queue_prefix))[0] == CASES
        def done_count() -> int:
            with store.session() as session:
                return int(session.scalar(select(func.count()).select_from(JobRecord).where(JobRecord.status == "done")) or 0)

        async def consumers(n: int) -> bool:
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    raise AssertionError(f"worker {i} exited early: {(tmp_path / f'worker{i}.log').read_text()[-2000:]}")
            return (await queue_counts(queue_prefix))[1] == n

        def running_count() -> int:
            with store.session() as session:
                return int(session.scalar(select(func.count()).select_from(JobRecord).where(JobRecord.status == "running")) or 0)

        # The victim consumes alone and dies early in the run while it is running a job (its attempt
        # counted, so the redelivery shows as a second attempt), holding more unacknowledged jobs
        # (prefetch 8) while most of the backlog is still queued; then the survivor starts. Killed at
        # any moment instead, it could die between a job's commit and its ack, and the survivor's
        # redelivery of a finished job counts no attempt.
        workers.append(_start_worker(repo, db_url, queue_prefix, tmp_path / "worker0.log"))
        await wait_for(lambda: consumers(1), 120, "the first worker consuming")

        async def some_done_one_running() -> bool:
            return await asyncio.to_thread(done_count) >= 20 and await asyncio.to_thread(running_count) > 0

        await wait_for(some_done_one_running, 120, "the first cases done and one running", interval_s=0.02)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        assert await asyncio.to_thread(done_count) < CASES, "the kill must happen mid-run"
        workers.append(_start_worker(repo, db_url, queue_prefix, tmp_path / "worker1.log"))

        async def all_done() -> bool:
            return await asyncio.to_thread(done_count) >= CASES

        await wait_for(all_done, 150, "all cases done by the surviving worker")

        with store.session() as session:
            jobs = {j.id: j for j in session.scalars(select(JobRecord).where(JobRecord.id.in_(job_ids)))}
            case_ids = list(session.scalars(select(CaseRecord.id)))
        assert len(jobs) == CASES and all(j.status == "done" for j in jobs.values())
        assert all(j.case_id == j.id for j in jobs.values()), "each case is stored under its job id"
        assert sorted(case_ids) == sorted(job_ids), "every job stored exactly one case, and no other case exists"
        redelivered = [j for j in jobs.values() if j.attempts >= 2]
        assert redelivered, "the killed worker's unacknowledged jobs were redelivered to the other worker"
        assert (await queue_counts(queue_prefix, "dead"))[0] == 0
        one = (await gateway.client.get(f"/v1/jobs/{redelivered[0].id}")).json()
        assert one["status"] == "done" and one["attempts"] >= 2
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        await stop_gateway(gateway)
