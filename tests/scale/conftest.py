"""Fixtures for the scale-out tests: the real RabbitMQ and PostgreSQL of this machine, isolated per run.

Each test module gets its own PostgreSQL database (created and dropped here) and its own queue
prefix, so parallel runs never see each other's jobs. Without the services the tests skip and say
which one is missing and how to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.apps.authenticity.conftest import engine_dir, registered_model, synth_data, trained

__all__ = ["engine_dir", "registered_model", "synth_data", "trained"]

PG_ADMIN = os.environ.get("KILN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("KILN_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_services() -> None:
    if not _reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 "
                    "(start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)")
    if not _reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672 (start it: rabbitmq-server -detached)")


def pg_url(database: str, host: str = "127.0.0.1", port: int = 5432) -> str:
    return f"postgresql+psycopg://postgres@{host}:{port}/{database}"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    require_services()
    import psycopg

    name = f"kiln_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queue_prefix() -> AsyncIterator[str]:
    """A unique queue prefix for this module; its queues are deleted afterwards."""
    require_services()
    prefix = f"kiln-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    import aio_pika

    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        for name in (f"{prefix}.cases", f"{prefix}.dead"):
            await channel.queue_delete(name)


@pytest.fixture(scope="module")
def repo(engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the tiny engine, with its batching settings."""
    root = tmp_path_factory.mktemp("repo")
    (root / "authenticity").mkdir()
    (root / "authenticity" / "1").symlink_to(engine_dir, target_is_directory=True)
    (root / "authenticity" / "config.json").write_text(json.dumps(
        {"max_batch_size": 8, "max_queue_delay_us": 2000, "engine_options": {"threads": 1}}))
    return root


async def queue_counts(prefix: str, which: str = "cases") -> tuple[int, int]:
    """(messages ready, consumers) of one of the module's queues."""
    import aio_pika

    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.{which}", passive=True)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0


@dataclass
class Gateway:
    client: Any  # httpx.AsyncClient on the gateway app
    state: Any
    broker: Any
    store: Any


async def start_gateway(repo: Path, db_url: str, prefix: str, secret: str | None = "test-secret") -> Gateway:
    """A gateway (``kiln serve --broker`` without uvicorn) on an httpx client."""
    import httpx

    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.scale.gateway import enable_gateway
    from kiln.serve.app import create_app, server_state

    state = server_state(repo, apps=[AuthenticityPlugin()])
    state.settings = Settings(webhook_secret=secret)
    state.context.settings = state.settings
    broker = enable_gateway(state, broker_url=BROKER, db_url=db_url, queue_prefix=prefix, sync_timeout_s=60)
    app = create_app(state, access_log=False)
    await broker.start()
    await state.start()
    assert state.started, state.startup_error
    await broker.wait_connected(30)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=90)
    return Gateway(client, state, broker, state.context.state["store"])


async def stop_gateway(gateway: Gateway) -> None:
    await gateway.client.aclose()
    await gateway.state.stop()


async def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(interval_s)
    _ = what


def case_form(case: Any) -> dict[str, Any]:
    """httpx arguments posting one catalogue case (kiln.scale.bulk.BulkCase) as a form."""
    return {
        "files": [("images", (path.name, path.read_bytes(), "image/png" if path.suffix == ".png" else "image/jpeg"))
                  for _, path in case.photos],
        "data": {"views": [view for view, _ in case.photos], "brand": case.brand, "model": case.model},
    }


@contextlib.asynccontextmanager
async def webhook_receiver(failures: int = 0) -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    """A local webhook endpoint: its URL and every (body, signature) it received; the first
    ``failures`` deliveries are answered 503."""
    from aiohttp import web

    from kiln.scale.webhooks import SIGNATURE_HEADER

    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=503 if len(received) <= failures else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()
