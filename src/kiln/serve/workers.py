"""``kiln serve --workers N``: N full server processes sharing the HTTP and gRPC ports.

Each worker is a whole ``kiln serve`` (own event loop, model repository, batchers, apps) started
with multiprocessing's *spawn*. They listen on the same ports through SO_REUSEPORT, so the kernel
spreads new connections over them (a kept-alive connection stays with its worker), not calls: a
client with few connections loads some workers more than others. With ``--grpc-worker-ports FIRST``
worker i also listens for gRPC on its own port FIRST+i, so that a client can balance calls itself
with gRPC's ``round_robin`` policy over ``ipv4:HOST:FIRST,...`` (the supervisor logs it). The parent only
supervises: SIGINT/SIGTERM are forwarded to every worker as SIGTERM (a second signal as SIGINT,
which forces them, as a second Ctrl-C does in one process); no worker is restarted: when one exits
the others are stopped and the parent exits non-zero, naming the worker in its log.

With ``--shared-engines`` the parent first starts one more process, the engine host
(serve/engine_host.py), which loads every engine once; the workers then send their batches there
through shared memory instead of loading engines themselves (text models still load per worker).
On a GPU that is one CUDA context and one batcher over all workers' requests. The host is stopped
after the workers have drained; if it dies, the workers are stopped too.

Per-process state stays per process: Prometheus ``/metrics``, the in-memory rate limits and caches
describe the worker that answered; answers carry ``X-Kiln-Worker: <pid>`` (HTTP header, gRPC
trailing metadata) so that a client can tell which one it was.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.serve.process import ServeOptions

log = logging.getLogger(__name__)

WORKER_HEADER = "x-kiln-worker"
_EXIT_STARTUP_FAILED = 3


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def grpc_address(host: str, port: int) -> str:
    """host:port as gRPC reads it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def round_robin_target(host: str, first_port: int, workers: int) -> str | None:
    """The gRPC target naming every worker's own port: ``ipv4:HOST:P0,HOST:P1,...`` (``ipv6:`` for an
    IPv6 host); a channel to it with the ``round_robin`` policy deals calls to the workers in turn.
    None where ``host`` is no address a client can dial (a host name, or a wildcard such as 0.0.0.0)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_unspecified:
        return None
    scheme = "ipv6" if address.version == 6 else "ipv4"
    return f"{scheme}:" + ",".join(grpc_address(host, first_port + i) for i in range(workers))


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (uvicorn makes it listen)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise KilnError(f"cannot bind HTTP to {host}:{port}: {exc.strerror}", hint="is the port in use? choose another --http-port") from exc
    sock.set_inheritable(False)
    return sock


def check_ports_free(host: str, ports: list[int]) -> None:
    """Fails when another process already listens on one of ``ports`` (SO_REUSEPORT would let the
    workers join a group of sockets left by another server of the same user)."""
    for port in ports:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise KilnError(f"cannot bind {host}:{port}: {exc.strerror}", hint="is another server running? choose other ports") from exc


class WorkerHeader:
    """ASGI middleware: every HTTP answer says which worker process made it."""

    def __init__(self, app: Any, pid: int) -> None:
        self.app = app
        self.header = (WORKER_HEADER.encode(), str(pid).encode())

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def stop_when_orphaned(parent: int, poll_s: float = 1.0) -> None:
    """A worker whose supervisor died (SIGKILL) stops itself rather than keep the ports."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def worker_main(options: ServeOptions, index: int, parent: int) -> None:
    """A worker process: one full ``kiln serve`` (the spawn target)."""
    from kiln.serve.process import run

    # The terminal's Ctrl-C reaches the whole process group; the parent forwards it as SIGTERM.
    # uvicorn handles both while it serves and re-raises SIGTERM once drained: exit 0 then, and
    # exit at once when stopped before serving (still loading).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_now)
    threading.Thread(target=stop_when_orphaned, args=(parent,), name="kiln-orphan-watch", daemon=True).start()
    try:
        run(replace(options, worker=index))
    except KilnError as exc:
        log.error("kiln worker %d (pid %d) could not start: %s%s", index, os.getpid(), exc,
                  f" ({exc.hint})" if getattr(exc, "hint", None) else "")
        raise SystemExit(_EXIT_STARTUP_FAILED) from None


def start_engine_host(context: Any, log_level: str, timeout_s: float = 120.0,
                      stopping: Callable[[], bool] = lambda: False) -> tuple[multiprocessing.process.BaseProcess, str]:
    """Starts the engine host process; returns it and its socket address once it listens (or
    at once, still starting, when ``stopping`` says a signal came meanwhile)."""
    from kiln.serve.engine_host import host_main

    folder = tempfile.mkdtemp(prefix="kiln-engines-")
    address = os.path.join(folder, "engines.sock")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=host_main, args=(address, sender, log_level, os.getpid()), name="kiln-engine-host")
    process.start()
    sender.close()
    deadline = time.monotonic() + timeout_s
    while not receiver.poll(0.2) and not stopping():
        if process.exitcode is not None or time.monotonic() > deadline:
            if process.exitcode is None:
                process.kill()
            shutil.rmtree(folder, ignore_errors=True)
            raise KilnError(f"the engine host (pid {process.pid}) did not start", hint="see its log above")
    receiver.close()
    return process, address


def _stop_engine_host(process: multiprocessing.process.BaseProcess, address: str, timeout_s: float = 30.0) -> None:
    if process.exitcode is None and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
        process.join(timeout_s)
        if process.exitcode is None:
            process.kill()
            process.join(5)
    shutil.rmtree(os.path.dirname(address), ignore_errors=True)


def supervise(options: ServeOptions, workers: int) -> int:
    """Starts ``workers`` server processes (and the engine host with ``shared_engines``) and waits
    for them; returns the exit code (0: all drained)."""
    from kiln.serve.process import configure_logging

    configure_logging(options.log_level)
    ports = [options.http_port] + ([options.grpc_port] if options.grpc_port is not None else [])
    first_own = options.grpc_worker_port if options.grpc_port is not None else None  # --grpc-worker-ports
    if first_own is not None:
        ports += range(first_own, first_own + workers)
    check_ports_free(options.host, ports)
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    host: multiprocessing.process.BaseProcess | None = None
    signals: list[int] = []

    def forward(signum: int, frame: object) -> None:
        signals.append(signum)
        sent = signal.SIGTERM if len(signals) == 1 else signal.SIGINT  # second signal: force, as in one process
        if len(signals) == 1:
            log.info("%s: stopping %d workers gracefully", signal.Signals(signum).name, len(processes))
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, sent)

    def stop_workers(running: list[multiprocessing.process.BaseProcess]) -> None:
        """After a failure: stop the workers still running (once)."""
        if signals:
            return
        signals.append(signal.SIGTERM)
        for other in running:
            if other.pid is not None:
                os.kill(other.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: list[str] = []
    try:
        if options.shared_engines:
            host, address = start_engine_host(context, options.log_level, stopping=lambda: bool(signals))
            options = replace(options, engine_host=address)
            log.info("kiln engine host started (pid %s): the workers' engines run there", host.pid)
        for index in range(workers):
            if signals:
                break
            started = context.Process(target=worker_main, args=(options, index, os.getpid()), name=f"kiln-worker-{index}")
            started.start()
            processes.append(started)
        log.info("kiln supervising %d workers (pids %s)", len(processes), ", ".join(str(p.pid) for p in processes))
        if first_own is not None:
            target = round_robin_target(options.host, first_own, workers)
            log.info("kiln workers also listen for gRPC on ports %d-%d: to balance calls, not connections, use the target %s "
                     "with the client's lb policy round_robin", first_own, first_own + workers - 1,
                     target or f"ipv4:ADDRESS:{first_own},...,ADDRESS:{first_own + workers - 1} (ADDRESS: this machine's IP address)")
        running = list(processes)
        while running:
            wait([p.sentinel for p in running] + ([host.sentinel] if host is not None and host.exitcode is None else []), timeout=1.0)
            if host is not None and host.exitcode is not None and not signals:
                failed.append(f"the engine host (pid {host.pid}) exited with status {host.exitcode}")
                log.error("kiln engine host (pid %s) exited with status %s; stopping the workers", host.pid, host.exitcode)
                stop_workers(running)
            for process in [p for p in running if p.exitcode is not None]:
                running.remove(process)
                index = processes.index(process)
                code = process.exitcode
                if code == 0 or (signals and code is not None and code in (-signal.SIGTERM, -signal.SIGINT)):
                    log.info("kiln worker %d (pid %s) exited", index, process.pid)
                    continue
                reason = "failed at start-up" if code == _EXIT_STARTUP_FAILED else f"exited with status {code}"
                failed.append(f"worker {index} (pid {process.pid}) {reason}")
                log.error("kiln worker %d (pid %s) %s; %s", index, process.pid, reason,
                          "stopping the other workers" if running else "no worker left")
                if running:
                    stop_workers(running)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if host is not None:
            _stop_engine_host(host, options.engine_host or "")
    if failed:
        log.error("kiln serve stopped: %s", "; ".join(failed))
        return 1
    return 0
