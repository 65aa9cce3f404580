"""The RabbitMQ side: queue names, their declaration, and a connection that reconnects by itself.

Topology (``prefix`` defaults to ``kiln``; tests use a unique one per run)::

    PREFIX.cases   durable, x-max-priority 2 (interactive 2 before bulk 1),
                   dead-letters to PREFIX.dead (a job rejected after its last attempt)
    PREFIX.dead    durable: jobs that kept failing, with their error in the x-kiln-error header
    PREFIX.reply.* exclusive, one per gateway or bulk run: results of the jobs it published

Messages are persistent and published with confirms, so a job the gateway accepted survives a
broker restart. While the connection is down ``BrokerConnection.check`` raises 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.aio import cancel_and_wait
from kiln.errors import KilnError, UnavailableError

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )

log = logging.getLogger(__name__)

PRIORITIES = {"interactive": 2, "bulk": 1}
PUBLISH_TIMEOUT_S = 5.0


def redact(url: str) -> str:
    """The broker URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def check_url(url: str) -> str:
    if not url.startswith(("amqp://", "amqps://")):
        raise KilnError(f"--broker {redact(url)!r} is not an AMQP URL", hint="for example amqp://guest:guest@127.0.0.1:5672/")
    return url


@dataclass(frozen=True)
class Topology:
    prefix: str = "kiln"

    @property
    def cases(self) -> str:
        return f"{self.prefix}.cases"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def reply_queue(self) -> str:
        return f"{self.prefix}.reply.{uuid.uuid4().hex[:12]}"

    async def declare(self, channel: AbstractRobustChannel) -> AbstractQueue:
        """Declares the dead-letter queue and the cases queue (idempotent); returns the cases queue."""
        await channel.declare_queue(self.dead, durable=True)
        return await channel.declare_queue(self.cases, durable=True, arguments={
            "x-max-priority": max(PRIORITIES.values()),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead,
        })


class BrokerConnection:
    """A robust aio-pika connection and one channel; reconnects after broker restarts.

    ``start`` returns at once; the first connection is retried in the background, so a gateway
    starts (and answers 503) while the broker is still down.
    """

    def __init__(self, url: str, topology: Topology, *, prefetch: int = 0, retry_s: float = 1.0) -> None:
        self.url = check_url(url)
        self.topology = topology
        self.prefetch = prefetch
        self.retry_s = retry_s
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self.cases: AbstractQueue | None = None
        self._on_ready: list[Callable[[BrokerConnection], Awaitable[None]]] = []
        self._on_lost: list[Callable[[], None]] = []
        self._connecting: asyncio.Task[None] | None = None
        self.first_connected = asyncio.Event()
        self._closing = False

    def on_ready(self, hook: Callable[[BrokerConnection], Awaitable[None]]) -> None:
        """Runs once after the first connection (declare consumers and reply queues here)."""
        self._on_ready.append(hook)

    def on_lost(self, hook: Callable[[], None]) -> None:
        """Runs each time the connection drops (fail requests waiting on replies)."""
        self._on_lost.append(hook)

    @property
    def connected(self) -> bool:
        c = self.connection
        return c is not None and not c.is_closed and c.connected.is_set() and self.first_connected.is_set()

    def check(self) -> None:
        if not self.connected:
            raise UnavailableError(f"the message broker {redact(self.url)} is unreachable",
                                   hint="retry shortly; the server reconnects by itself", retry_after_s=2.0)

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect_loop(), name="kiln-broker-connect")

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self.first_connected.wait()

    async def _connect_loop(self) -> None:
        import aio_pika

        while True:
            try:
                connection = await aio_pika.connect_robust(self.url, reconnect_interval=self.retry_s, timeout=10)
                break
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("broker %s unreachable (%s); retrying in %.1f s", redact(self.url), exc, self.retry_s)
                await asyncio.sleep(self.retry_s)
        self.connection = connection
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._reconnected)
        self.channel = await connection.channel(publisher_confirms=True)  # type: ignore[assignment]
        assert self.channel is not None
        if self.prefetch:
            await self.channel.set_qos(prefetch_count=self.prefetch)
        self.cases = await self.topology.declare(self.channel)
        for hook in self._on_ready:
            await hook(self)
        self.first_connected.set()
        log.info("connected to broker %s (queue %s)", redact(self.url), self.topology.cases)

    def _lost(self, *_: Any) -> None:
        if self._closing:
            return
        log.warning("lost the broker %s; reconnecting", redact(self.url))
        for hook in self._on_lost:
            hook()

    def _reconnected(self, *_: Any) -> None:
        log.info("reconnected to broker %s", redact(self.url))

    async def publish(self, body: bytes, *, routing_key: str, priority: int = 0, correlation_id: str | None = None,
                      reply_to: str | None = None, headers: dict[str, Any] | None = None) -> None:
        """Publishes a persistent message and waits for the broker's confirm; 503 when it cannot."""
        import aio_pika

        self.check()
        assert self.channel is not None
        message = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=priority, correlation_id=correlation_id,
            reply_to=reply_to, headers=headers or {}, content_type="application/octet-stream",
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.channel.default_exchange.publish(message, routing_key=routing_key)
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
            raise UnavailableError(f"the message broker {redact(self.url)} did not accept the job: {exc or type(exc).__name__}",
                                   hint="retry shortly", retry_after_s=2.0) from exc

    async def consume(self, queue_name: str, callback: Callable[[AbstractIncomingMessage], Awaitable[None]], *,
                      exclusive: bool = False) -> AbstractQueue:
        """Declares ``queue_name`` (an exclusive auto-delete reply queue when ``exclusive``) and consumes it."""
        assert self.channel is not None
        if queue_name == self.topology.cases:
            assert self.cases is not None
            queue = self.cases
        else:
            queue = await self.channel.declare_queue(queue_name, exclusive=exclusive, auto_delete=exclusive,
                                                     durable=not exclusive)
        await queue.consume(callback, no_ack=exclusive)
        return queue

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None and not self._connecting.done():
            await cancel_and_wait(self._connecting)
        if self.connection is not None:
            with contextlib.suppress(Exception):  # closing a connection that is already gone
                await self.connection.close()


def amqp_priority(name: str) -> int:
    if name not in PRIORITIES:
        raise KilnError(f"priority {name!r} is not one of {', '.join(PRIORITIES)}")
    return PRIORITIES[name]
