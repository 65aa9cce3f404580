"""``kiln worker``: a scale-out worker that consumes cases from RabbitMQ (see kiln.scale.worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kiln.errors import KilnError


def worker(
    broker: Annotated[str, typer.Option("--broker", envvar="KILN_BROKER", help="amqp:// URL of the broker")],
    db: Annotated[str, typer.Option("--db", envvar="KILN_DB", help="database URL shared with the gateways (postgresql://...)")],
    repo: Annotated[Path, typer.Option("--repo", help="model repository holding REPO/authenticity/<version>/")],
    model: Annotated[str, typer.Option("--model", help="model name of the authentication engine")] = "authenticity",
    prefetch: Annotated[int, typer.Option("--prefetch", help="jobs in flight at once; their engine calls are batched together")] = 16,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="attempts before a job goes to the dead-letter queue")] = 3,
    queue_prefix: Annotated[str, typer.Option("--queue-prefix", help="name prefix of the broker queues")] = "kiln",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    webhook_takeover_s: Annotated[float | None, typer.Option(
        "--webhook-takeover-s", envvar="KILN_WEBHOOK_TAKEOVER_S",
        help="seconds a finished job's webhook may go without a delivery attempt before this worker takes it over "
             "(default: twice the longest attempt plus pause, 80 s)")] = None,
) -> None:
    """Consume authentication cases from the broker, run them on the engine, store them in the database."""
    import asyncio

    from kiln.config import get_settings
    from kiln.scale.broker import check_url
    from kiln.scale.worker import WorkerOptions, run_worker
    from kiln.serve.process import configure_logging

    check_url(broker)
    if not repo.is_dir():
        raise KilnError(f"--repo {repo} is not a directory", hint="a model repository: REPO/authenticity/1/")
    if not 1 <= prefetch <= 1024:
        raise KilnError(f"--prefetch {prefetch} is not between 1 and 1024")
    if max_attempts < 1:
        raise KilnError("--max-attempts must be at least 1")
    if webhook_takeover_s is not None and not 1 <= webhook_takeover_s <= 86400:
        raise KilnError(f"--webhook-takeover-s {webhook_takeover_s} is not between 1 and 86400 seconds")
    configure_logging(log_level)
    settings = get_settings()
    options = WorkerOptions(broker_url=broker, db_url=db, repo=repo, model_name=model, queue_prefix=queue_prefix,
                            prefetch=prefetch, max_attempts=max_attempts, webhook_secret=settings.webhook_secret,
                            webhook_takeover_s=webhook_takeover_s, freeze_heap=True,
                            stage_photos=settings.stage_photos, decode_device=settings.decode_device)
    asyncio.run(run_worker(options))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
