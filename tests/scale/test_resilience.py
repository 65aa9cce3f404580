"""Gateway and worker against the real RabbitMQ and PostgreSQL: sync cases, dead letters, webhooks,
a broker restart and a database outage (both answered with 503, then recovered without restarts)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.scale.conftest import (
    BROKER,
    Gateway,
    case_form,
    pg_url,
    queue_counts,
    start_gateway,
    stop_gateway,
    wait_for,
    webhook_receiver,
)

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

SECRET = "test-secret"


class TcpProxy:
    """Forwards a local port to PostgreSQL from its own thread and event loop (the store connects from
    blocking code); ``stop`` makes the database unreachable, ``start`` brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def start(self) -> None:
        await asyncio.to_thread(self._call, self._start())

    async def stop(self) -> None:
        await asyncio.to_thread(self._call, self._stop())

    def shutdown(self) -> None:
        if self.server is not None and self.server.is_serving():
            self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self.tasks.discard(task)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(repo: Path, database: str, queue_prefix: str) -> AsyncIterator[Any]:
    from kiln.scale.worker import Worker, WorkerOptions

    w = Worker(WorkerOptions(broker_url=BROKER, db_url=pg_url(database), repo=repo, queue_prefix=queue_prefix,
                             prefetch=4, max_attempts=2, retry_pause_s=0.2, webhook_secret=SECRET,
                             stage_photos="decoded"))
    await w.start()
    assert w.broker is not None
    await w.broker.wait_connected(30)
    yield w
    await w.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(repo: Path, database: str, queue_prefix: str, worker: Any) -> AsyncIterator[Gateway]:
    g = await start_gateway(repo, pg_url(database), queue_prefix, secret=SECRET)
    yield g
    await stop_gateway(g)


@pytest.fixture(scope="module")
def catalogue(synth_data: Path) -> list[Any]:
    from kiln.scale.bulk import read_catalogue

    return read_catalogue(synth_data)


async def _job(gateway: Gateway, job_id: str) -> dict[str, Any]:
    response = await gateway.client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _wait_job(gateway: Gateway, job_id: str, states: tuple[str, ...] = ("done", "failed"), timeout_s: float = 60) -> dict[str, Any]:
    async def finished() -> bool:
        return (await _job(gateway, job_id))["status"] in states

    await wait_for(finished, timeout_s, f"job {job_id}")
    return await _job(gateway, job_id)


async def test_the_worker_passes_its_store_settings_to_the_service(worker: Any) -> None:
    assert worker.service.stage_photos == "decoded", "KILN_STAGE_PHOTOS reaches the worker's service"
    assert worker.service.decode_device == "auto"


async def test_sync_case_runs_on_a_worker_and_is_stored(gateway: Gateway, catalogue: list[Any]) -> None:
    response = await gateway.client.post("/v1/authenticate", **case_form(catalogue[0]))
    assert response.status_code == 200, response.text
    case = response.json()
    assert case["verdict"] in ("authentic", "counterfeit", "inconclusive")
    stored = (await gateway.client.get(f"/v1/cases/{case['case_id']}")).json()
    assert stored["case_id"] == case["case_id"] and stored["verdict"] == case["verdict"]
    job = await _job(gateway, case["case_id"])  # the case id is the job id
    assert job["status"] == "done" and job["attempts"] == 1


async def test_job_that_keeps_failing_is_dead_lettered_with_its_error(
        gateway: Gateway, worker: Any, catalogue: list[Any], queue_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = worker.service.authenticate

    async def explodes_for_one_brand(uploads: Any, views: Any, brand: str, model: str, **kw: Any) -> Any:
        if brand == "exploding":
            raise RuntimeError("the engine crashed")
        return await original(uploads, views, brand, model, **kw)

    monkeypatch.setattr(worker.service, "authenticate", explodes_for_one_brand)
    form = case_form(catalogue[1])
    form["data"]["brand"] = "exploding"
    response = await gateway.client.post("/v1/authenticate?mode=async", **form)
    assert response.status_code == 202, response.text
    job = await _wait_job(gateway, response.json()["job_id"], states=("failed",))
    assert job["error_status"] == 500
    assert "gave up after 2 attempts" in job["error"] and "RuntimeError" in job["error"]
    assert (await queue_counts(queue_prefix, "dead"))[0] == 1, "the message moved to the dead-letter queue"
    ok = await gateway.client.post("/v1/authenticate", **case_form(catalogue[2]))  # other jobs are unaffected
    assert ok.status_code == 200, ok.text


async def test_client_error_fails_the_job_once_without_retries(gateway: Gateway, catalogue: list[Any]) -> None:
    form = case_form(catalogue[3])
    _, data, content_type = form["files"][0][1]
    form["files"][0] = ("images", ("broken.jpg", data[: len(data) // 2], content_type))
    response = await gateway.client.post("/v1/authenticate?mode=async", **form)
    if response.status_code == 400:  # the gateway's header check already saw the damage
        assert "broken.jpg" in response.json()["error"]
        return
    assert response.status_code == 202, response.text
    job = await _wait_job(gateway, response.json()["job_id"])
    assert job["status"] == "failed" and job["error_status"] == 400 and job["attempts"] == 1
    assert "broken.jpg" in job["error"]


async def test_webhook_is_signed_and_retried_until_delivered(gateway: Gateway, catalogue: list[Any]) -> None:
    from kiln.scale.webhooks import verify_signature
    from kiln.serve.store.models import JobRecord

    async with webhook_receiver(failures=1) as (url, received):  # the first try fails
        form = case_form(catalogue[4])
        form["data"]["callback_url"] = url
        response = await gateway.client.post("/v1/authenticate?mode=async", **form)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]

        def webhook_state() -> tuple[str | None, int]:
            with gateway.store.session() as session:
                job = session.get(JobRecord, job_id)
                return (job.webhook_status, job.webhook_attempts) if job else (None, 0)

        async def delivered() -> bool:
            return (await asyncio.to_thread(webhook_state))[0] == "delivered"

        await wait_for(delivered, 60, "webhook delivered")
        assert await asyncio.to_thread(webhook_state) == ("delivered", 2)
        assert len(received) == 2
        body, signature = received[-1]
        assert verify_signature(SECRET, body, signature)
        assert not verify_signature("another-secret", body, signature)
        assert not verify_signature(SECRET, body.replace(b"done", b"dona"), signature)
        import json

        payload = json.loads(body)
        assert payload["job_id"] == job_id and payload["status"] == "done" and payload["case_id"] == job_id


async def test_callback_needs_async_mode_and_an_http_url(gateway: Gateway, catalogue: list[Any]) -> None:
    form = case_form(catalogue[0])
    form["data"]["callback_url"] = "file:///etc/passwd"
    response = await gateway.client.post("/v1/authenticate?mode=async", **form)
    assert response.status_code == 400 and "callback_url" in response.json()["error"]
    form["data"]["callback_url"] = "https://example.com/hook"
    response = await gateway.client.post("/v1/authenticate", **form)
    assert response.status_code == 400 and "mode=async" in response.json()["error"]


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec("rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def test_broker_restart_gives_503_then_both_sides_reconnect(gateway: Gateway, worker: Any, catalogue: list[Any]) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed here: cannot restart the broker")
    await _rabbitmqctl("stop_app")
    try:
        async def gateway_lost() -> bool:
            return not gateway.broker.connected

        await wait_for(gateway_lost, 30, "the gateway noticing the broker is gone")
        for url in ("/v1/authenticate?mode=async", "/v1/authenticate"):
            response = await gateway.client.post(url, **case_form(catalogue[5]))
            assert response.status_code == 503, response.text
            assert "broker" in response.json()["error"] and response.headers.get("Retry-After")
    finally:
        await _rabbitmqctl("start_app")

    async def both_back() -> bool:
        return bool(gateway.broker.connected and worker.broker.connected)

    await wait_for(both_back, 90, "gateway and worker reconnected")

    async def sync_case_works() -> bool:
        response = await gateway.client.post("/v1/authenticate", **case_form(catalogue[6]))
        return response.status_code == 200

    await wait_for(sync_case_works, 60, "a sync case after the restart", interval_s=1.0)


async def test_database_outage_gives_503_then_recovers(repo: Path, database: str, queue_prefix: str, worker: Any,
                                                        catalogue: list[Any]) -> None:
    proxy = TcpProxy(5432)
    await proxy.start()
    proxied = await start_gateway(repo, pg_url(database, port=proxy.port), queue_prefix, secret=SECRET)
    try:
        before = await proxied.client.post("/v1/authenticate?mode=async", **case_form(catalogue[7]))
        assert before.status_code == 202, before.text
        await proxy.stop()
        down = await proxied.client.post("/v1/authenticate?mode=async", **case_form(catalogue[8]))
        assert down.status_code == 503, down.text
        assert "database" in down.json()["error"] and down.headers.get("Retry-After")
        status = await proxied.client.get(f"/v1/jobs/{before.json()['job_id']}")
        assert status.status_code == 503 and "database" in status.json()["error"]
        await proxy.start()  # same port: the database is back

        async def accepted() -> bool:
            response = await proxied.client.post("/v1/authenticate?mode=async", **case_form(catalogue[9]))
            return response.status_code == 202

        await wait_for(accepted, 30, "the gateway recovering", interval_s=0.5)
        job = await _wait_job(proxied, before.json()["job_id"])
        assert job["status"] == "done"
    finally:
        await stop_gateway(proxied)
        await asyncio.to_thread(proxy.shutdown)


async def test_bulk_command_submits_a_catalogue_and_summarises(worker: Any, queue_prefix: str, synth_data: Path,
                                                               tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kiln.cli import app

    rows = ["case_id,brand,model,view,path"]
    cases = (await asyncio.to_thread(_catalogue, synth_data))[:5]
    for case in cases:
        rows += [f"{case.case_id},{case.brand},{case.model},{view},{path}" for view, path in case.photos]
    rows.append(f"bad,aurelle,celeste,not_a_view,{cases[0].photos[0][1]}")  # rejected locally, never published
    catalogue_csv = tmp_path / "catalogue.csv"
    catalogue_csv.write_text("\n".join(rows) + "\n")
    summary_json = tmp_path / "summary.json"
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "auth", "bulk", str(catalogue_csv), "--broker", BROKER, "--queue-prefix", queue_prefix, "--timeout", "60",
        "--json", str(summary_json)])
    assert result.exit_code == 1, result.output  # one case failed its local check
    assert "5/6 cases done" in result.output and "1 rejected" in result.output and "not_a_view" in result.output
    summary = json.loads(summary_json.read_text())
    assert summary["done"] == 5 and summary["rejected"] == 1 and sum(summary["verdicts"].values()) == 5
    assert set(summary["jobs"]) == {case.case_id for case in cases}


def _catalogue(data: Path) -> list[Any]:
    from kiln.scale.bulk import read_catalogue

    return read_catalogue(data)
