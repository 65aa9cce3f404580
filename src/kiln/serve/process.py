"""``kiln serve``: HTTP (uvicorn) and gRPC (grpc.aio) in one process, on one event loop.

Shutdown on SIGINT/SIGTERM is graceful: uvicorn stops accepting and finishes open HTTP
requests, then the app's lifespan stops gRPC (with a grace period), shuts the app plugins
down and drains every batcher queue, finishing in-flight batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError
from kiln.heap import freeze_heap

if TYPE_CHECKING:
    from kiln.security.access import AccessControl
    from kiln.serve.context import AppPlugin
    from kiln.serve.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    repo: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    apps: list[str | AppPlugin] = field(default_factory=list)  # names, or plugin objects (embedders, tests)
    models: list[str] | None = None
    strict_readiness: bool = False
    access_log: bool = True
    log_level: str = "info"
    static_dir: Path | None = None
    broker: str | None = None  # amqp:// URL: gateway mode (kiln.scale.gateway)
    db: str | None = None
    queue_prefix: str = "kiln"
    grpc_grace_s: float = 10.0
    max_grpc_message_bytes: int = 64 << 20
    auth: str = "auto"  # API keys: auto (required unless bound to loopback) | on | off
    key_cache_ttl_s: float = 5.0  # a revoked key stops working within this time
    rate_per_s: float = 50.0  # default per-key rate limit (a key's own limit replaces it; 0: none)
    max_inflight: int | None = 128  # HTTP requests in progress before new ones get 503 (None: unbounded)
    freeze_heap: bool = False  # gc.freeze once started (the CLI's own process; embedders keep their heap as is)
    worker: int | None = None  # index under ``kiln serve --workers N`` (serve/workers.py): ports shared by SO_REUSEPORT
    grpc_worker_port: int | None = None  # first per-worker gRPC port: worker i also listens on it + i (round_robin clients)
    shared_engines: bool = False  # ``--workers N --shared-engines``: one engine host process runs every worker's engines
    engine_host: str | None = None  # the engine host's socket (set by the supervisor for its workers)
    max_loop_lag_s: float | None = 0.05  # event-loop lateness past which new HTTP requests get 503 (None: never)
    loop: str = "asyncio"  # event loop of the CLI entry point: asyncio | uvloop (see run())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # Access records are already JSON objects: print them as they are.
    access = logging.getLogger("kiln.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_control(options: ServeOptions) -> AccessControl:
    """API keys are required when asked for, and by default whenever the server is reachable from other machines."""
    from kiln.config import get_settings
    from kiln.security.access import AccessControl

    if options.auth not in ("auto", "on", "off"):
        raise KilnError(f"--auth {options.auth!r} is not auto, on or off")
    loopback = _is_loopback(options.host)
    required = options.auth == "on" or (options.auth == "auto" and not loopback)
    if not loopback:
        log.warning("binding %s: the server is reachable from other machines", options.host)
        if not required:
            log.warning("--auth off on %s: anyone who can reach the server can use it", options.host)
    if required:
        log.info("API keys required (create one with: kiln keys create NAME --scopes ...)")
    return AccessControl.for_server(get_settings(), required=required, cache_ttl_s=options.key_cache_ttl_s,
                                    default_rate_per_s=options.rate_per_s)


async def freeze_heap_when_started(state: ServerState, poll_s: float = 0.2) -> None:
    """Once start-up is over, moves every object alive then (modules, models, apps: torch's among
    them when an app imports it) out of the garbage collector's reach with ``gc.freeze``.

    Without it each full collection walks that whole heap: about 0.3 s on a loaded 2-core machine,
    every request in flight waiting on it, which is what set the server's p99 under load. Objects
    made afterwards are collected as before (``kiln.heap``).
    """
    while not (state.started or state.startup_error):
        await asyncio.sleep(poll_s)
    freeze_heap()


async def serve(options: ServeOptions, *, on_started: Callable[[Any], None] | None = None) -> None:
    """Runs the server until SIGINT/SIGTERM (or until ``server.should_exit`` is set on the uvicorn
    server handed to ``on_started``, which embedders and tests use to stop it)."""
    import uvicorn

    from kiln.serve.app import create_app, server_state
    from kiln.serve.oip_grpc import create_grpc_server
    from kiln.serve.workers import grpc_address

    if not options.repo.is_dir():
        raise KilnError(f"model repository {options.repo} is not a directory", hint="pass --repo DIR")
    access = access_control(options)
    state = server_state(options.repo, apps=options.apps, models=options.models, strict_readiness=options.strict_readiness,
                         engine_host=options.engine_host)
    if options.broker:
        from kiln.scale.gateway import enable_gateway

        gateway = enable_gateway(state, broker_url=options.broker, db_url=options.db or state.settings.database_url(),
                                 queue_prefix=options.queue_prefix)
        await gateway.start()
    elif options.db:
        from kiln.serve.store import open_store

        state.context.state["store"] = open_store(options.db)
    app = create_app(state, access_log=options.access_log, static_dir=options.static_dir, access=access,
                     max_inflight=options.max_inflight, max_loop_lag_s=options.max_loop_lag_s)
    servers: list[Any] = []  # gRPC: the (shared) port's server, and this worker's own port's
    own_port = None  # this worker's own gRPC port beside the shared one, for clients that balance calls (round_robin)
    if options.grpc_port is not None:
        from kiln.security.access import GrpcAccessInterceptor

        addresses = [(grpc_address(options.host, options.grpc_port), options.worker is not None, "--grpc-port")]
        if options.worker is not None and options.grpc_worker_port is not None:
            # its own server: the shared one's SO_REUSEPORT would let another server join the port
            own_port = options.grpc_worker_port + options.worker
            addresses.append((grpc_address(options.host, own_port), False, "--grpc-worker-ports"))
        for address, share_port, port_option in addresses:
            servers.append(create_grpc_server(
                state, address, max_message_bytes=options.max_grpc_message_bytes,
                interceptors=(GrpcAccessInterceptor(access),) if access.required else (),
                worker_pid=os.getpid() if options.worker is not None else None,
                share_port=share_port, port_option=port_option,
            ))
            await servers[-1].start()

        async def stop_grpc() -> None:
            await asyncio.gather(*(server.stop(grace=options.grpc_grace_s) for server in servers))

        state.before_shutdown.append(stop_grpc)
    asgi_app: Any = app
    sockets = None
    if options.worker is not None:
        from kiln.serve.workers import WorkerHeader, reuse_port_socket

        asgi_app = WorkerHeader(app, os.getpid())
        sockets = [reuse_port_socket(options.host, options.http_port)]
    config = uvicorn.Config(
        asgi_app,
        host=options.host,
        port=options.http_port,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        loop="none",
        lifespan="on",
        access_log=False,  # kiln's own middleware logs each request as JSON with its id
        log_config=None,
        timeout_graceful_shutdown=30,
        limit_concurrency=None,
        backlog=2048,
    )
    http_server = uvicorn.Server(config)
    freezing = None
    if options.freeze_heap:
        freezing = asyncio.get_running_loop().create_task(freeze_heap_when_started(state), name="kiln-freeze-heap")
    if on_started is not None:
        on_started(http_server)
    log.info(
        "kiln serving %s on http://%s:%d%s%s", options.repo, options.host, options.http_port,
        f" and grpc://{options.host}:{options.grpc_port}" if options.grpc_port is not None else "",
        f" (worker {options.worker}, pid {os.getpid()}{'' if own_port is None else f', own gRPC port {own_port}'})"
        if options.worker is not None else "",
    )
    try:
        await http_server.serve(sockets=sockets)
    finally:
        if freezing is not None:
            freezing.cancel()
        for server in servers:
            await server.stop(grace=0)  # already stopped gracefully by the lifespan unless start-up failed
    if not http_server.started:
        raise KilnError(f"could not start HTTP on {options.host}:{options.http_port}", hint="is the port in use? choose another --http-port")


def run(options: ServeOptions) -> None:
    """Blocking entry point for the CLI: asyncio's default loop, or uvloop when asked for and installed.

    asyncio's loop is the default because it accepts every pending connection when the listening
    socket is readable; the libuv under uvloop 0.2x accepts one per loop iteration, so under load new
    connections waited seconds in the kernel's accept queue (measured: the queue at its 2,048 limit
    while the loop itself answered within 90 ms), before admission control could refuse them.
    """
    configure_logging(options.log_level)
    if options.loop not in ("asyncio", "uvloop"):
        raise KilnError(f"--loop {options.loop!r} is not asyncio or uvloop")
    loop_factory = None
    if options.loop == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            raise KilnError("--loop uvloop needs uvloop", hint="pip install uvloop")
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(dataclasses.replace(options, freeze_heap=True)))
