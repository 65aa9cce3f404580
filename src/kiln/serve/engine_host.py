"""The engine host: one process that owns the engines of every server worker (``--shared-engines``).

Without it, ``kiln serve --workers N`` loads every engine N times; on a GPU that is N CUDA contexts,
which the GPU time-slices (no two contexts' kernels overlap without MPS), and N batchers that each
see a quarter of the load and so run small, padded batches. With it, the workers keep the network
side (HTTP, gRPC, apps, per-request checks) and send their batches to this process, which runs one
``ServedModel`` per model version, batching the calls of all workers together on one CUDA context.

Each connection is one remote engine instance of one worker (``remote_runner.RemoteRunner``), served
by its own thread: read a frame, put the inputs (views of the worker's shared memory region) into the
model's batch queue with a ``link_replies.LinkReply``, and read the next frame; the instance thread
that runs the batch sends each call's answer (``_answer``). The host's event loop only loads and closes models. A model is loaded by the first
connection that attaches to it and closed when the last one leaves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kiln.errors import DeadlineExceededError, KilnError, UnavailableError
from kiln.heap import freeze_heap
from kiln.serve.batcher import Pending
from kiln.serve.engine_link import LinkClosedError, Region, layout, recv_frame, send_frame, views
from kiln.serve.link_replies import DeadlineWatch, LinkReply
from kiln.serve.model import ServedModel
from kiln.serve.model_config import ModelConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
SEND_TIMEOUT_S = 5  # an answer a link's worker does not take within this shuts the link


def error_meta(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, UnavailableError):
        return {"ok": False, "kind": "unavailable", "error": exc.message, "hint": exc.hint, "retry_after_s": exc.retry_after_s}
    if isinstance(exc, KilnError):
        kind = "deadline" if isinstance(exc, DeadlineExceededError) else "error"
        return {"ok": False, "kind": kind, "error": exc.message, "hint": exc.hint}
    return {"ok": False, "kind": "error", "error": f"{type(exc).__name__}: {exc}", "hint": None}


@dataclass
class HostedModel:
    key: str
    served: ServedModel
    users: int = 0


class EngineHost:
    """Serves engine calls on a Unix socket at ``address`` until ``stop`` is set."""

    def __init__(self, address: str, *, freeze_heap: bool = False) -> None:
        """``freeze_heap``: after each model loads, move the heap out of the garbage collector's
        reach (``kiln.heap``; the host process's own, not an embedder's)."""
        self.address = address
        self.freeze_heap = freeze_heap
        self._models: dict[str, HostedModel] = {}
        self._loading: dict[str, asyncio.Task[HostedModel]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._deadlines = DeadlineWatch()

    @property
    def models(self) -> dict[str, HostedModel]:
        return dict(self._models)

    async def serve(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None, drain_s: float = 30.0) -> None:
        """Serves until ``stop``; then takes no new links and lets the workers' links finish (they
        close theirs as the workers drain) for up to ``drain_s`` before cutting the rest."""
        self._loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)
        listener.bind(self.address)
        os.chmod(self.address, 0o600)
        listener.listen(1024)
        accepting = threading.Thread(target=self._accept, args=(listener,), name="kiln-engine-host-accept", daemon=True)
        accepting.start()
        self._deadlines.start()
        log.info("engine host listening on %s (pid %d)", self.address, os.getpid())
        if on_ready is not None:
            on_ready()

        def stop_accepting() -> None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the other thread
            listener.close()

        try:
            await stop.wait()
            stop_accepting()
            deadline = self._loop.time() + drain_s
            while self._connections and self._loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            stop_accepting()  # closing twice is harmless; this covers a cancelled wait
            with self._lock:
                for sock in list(self._connections):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            for hosted in list(self._models.values()):
                await hosted.served.close()
            self._models.clear()
            self._deadlines.stop()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    # --- threads ---------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            # answers are sent from instance threads: a worker that stops reading must not hold one for long
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0))
            with self._lock:
                self._connections.add(sock)
            threading.Thread(target=self._connection, args=(sock,), name="kiln-engine-link", daemon=True).start()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _connection(self, sock: socket.socket) -> None:
        hosted: HostedModel | None = None
        regions: dict[int, mmap.mmap] = {}
        try:
            frame = recv_frame(sock)
            for fd in frame.fds:
                os.close(fd)
            if frame.meta.get("op") != "attach":
                send_frame(sock, {"ok": False, "kind": "error", "error": "the first frame must attach a model"})
                return
            try:
                hosted = self._call(self._attach(frame.meta))
            except Exception as exc:  # a failed load answers the worker; the host serves on
                send_frame(sock, error_meta(exc))
                return
            send_frame(sock, {"ok": True, "max_batch_size": hosted.served.max_batch_size})
            while True:
                frame = recv_frame(sock)
                self._serve_call(sock, hosted.served, frame.meta, frame.fds, regions)
        except LinkClosedError:
            pass
        except Exception:
            log.exception("engine link failed")
        finally:
            with self._lock:
                self._connections.discard(sock)
            sock.close()
            # not closed here: a call still queued or running reads its inputs from the mapping, and numpy views
            # hold no buffer export that would stop close() from unmapping it under them (a crash); the
            # mapping closes when its last view goes
            regions.clear()
            if hosted is not None and self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):  # the host is stopping
                    self._call(self._detach(hosted))

    def _serve_call(self, sock: socket.socket, served: ServedModel, meta: dict[str, Any], fds: list[int],
                    regions: dict[int, mmap.mmap]) -> None:
        """Queues one call and returns: the thread that runs its batch sends the answer (``_answer``)."""
        started = time.perf_counter()
        try:
            region_id = int(meta.get("region", 0))
            if fds:
                regions.clear()  # a larger region replaces the link's one (left to close with its last view)
                first, fds = fds[0], fds[1:]
                regions[region_id] = Region.attach(first, int(meta["region_size"]))
            if meta.get("op") != "infer" or region_id not in regions:
                raise KilnError("the engine link sent a call without its shared memory region")
            inputs = views(regions[region_id], meta["inputs"])
            # the worker has checked the request against the model; the host only runs it, within
            # what is left of the batch's deadline
            timeout = min(float(meta.get("timeout_s", served.config.timeout_s)), served.config.timeout_s)
            self._submit(served, inputs, int(meta.get("priority", 0)), timeout,
                         LinkReply(lambda request, outcome: self._answer(sock, started, request, outcome)))
        except Exception as exc:  # errors go back to the worker, which answers its client
            send_frame(sock, error_meta(exc))
        finally:
            for extra in fds:
                os.close(extra)

    @staticmethod
    def _answer(sock: socket.socket, started: float, request: Pending | None,
                outcome: dict[str, np.ndarray] | BaseException) -> None:
        """On the thread that completed the call (its batch's instance, or the deadline watch): the answer frame,
        with the call's stages here (its queue and batch run, and its whole time from frame read to answer).
        Outputs that cannot be packed answer with their error; a link that takes no answer within
        ``SEND_TIMEOUT_S`` (a stalled worker) is shut, so that its reader thread ends it."""
        try:
            if isinstance(outcome, BaseException):
                send_frame(sock, error_meta(outcome))
                return
            try:
                entries, size = layout(outcome)
                payload = bytearray(size)
                for entry, target in zip(entries, views(payload, entries).values(), strict=True):
                    target[...] = outcome[entry["name"]]
            except Exception as exc:
                log.exception("engine host: a call's outputs could not be packed")
                send_frame(sock, error_meta(exc))
                return
            stages = {}
            if request is not None and request.finished:
                stages = {"queue": round(request.started - request.arrival, 6),
                          "infer": round(request.finished - request.started, 6)}
            stages["host"] = round(time.perf_counter() - started, 6)
            send_frame(sock, {"ok": True, "outputs": entries, "stages": stages}, [payload])
        except (OSError, LinkClosedError):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _submit(self, served: ServedModel, inputs: dict[str, Any], priority: int, timeout_s: float,
                reply: LinkReply) -> None:
        """On the link's thread: straight into the model's batch queue (no hand-off to the event loop); the
        deadline watch fails it with 504 if no batch has answered it by its deadline."""
        batcher = served.batcher
        if not served.ready or batcher is None:
            raise UnavailableError(f"model {served.name!r} version {served.version} is not ready in the engine host")
        items = next(iter(inputs.values())).shape[0]
        if not 1 <= items <= served.max_batch_size:  # the batcher would never dispatch it
            raise KilnError(f"model {served.name!r}: batch {items} is outside 1..max_batch_size {served.max_batch_size}")
        request = batcher.submit_nowait(inputs, items, reply, priority=priority, timeout_s=timeout_s)
        self._deadlines.watch(request.deadline, batcher, reply)

    # --- on the event loop -----------------------------------------------------------------------

    async def _attach(self, meta: dict[str, Any]) -> HostedModel:
        config = ModelConfig.model_validate(meta["config"])
        key = json.dumps([meta["directory"], meta["config"]], sort_keys=True)
        hosted = self._models.get(key)
        if hosted is None:
            task = self._loading.get(key)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._load(key, str(meta["name"]), str(meta["version"]),
                                                                         Path(meta["directory"]), config))
                self._loading[key] = task
            hosted = await asyncio.shield(task)
        hosted.users += 1
        return hosted

    async def _load(self, key: str, name: str, version: str, directory: Path, config: ModelConfig) -> HostedModel:
        try:
            served = ServedModel(name, version, directory, config)
            runners = await asyncio.to_thread(served.load)
            served.start(runners, None)
            hosted = HostedModel(key, served)
            self._models[key] = hosted
            if self.freeze_heap:  # torch, the compiled model and its graphs: walked by every full collection otherwise
                freeze_heap()  # (also collects the cycles of models closed since the last load)
            log.info("engine host: model %s version %s ready (%d instance(s), max batch %d)",
                     name, version, config.instances, served.max_batch_size)
            return hosted
        finally:
            self._loading.pop(key, None)

    async def _detach(self, hosted: HostedModel) -> None:
        hosted.users -= 1
        if hosted.users <= 0 and self._models.get(hosted.key) is hosted:
            del self._models[hosted.key]
            await hosted.served.close()
            log.info("engine host: model %s version %s closed (no worker uses it)", hosted.served.name, hosted.served.version)


def host_main(address: str, ready: Any, log_level: str, parent: int | None = None) -> None:
    """The engine host process (multiprocessing spawn target); SIGTERM stops it (after the links
    drain), and so does its supervisor's death."""
    from kiln.serve.process import configure_logging
    from kiln.serve.workers import stop_when_orphaned

    configure_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops it after the workers drained
    if parent is not None:
        threading.Thread(target=stop_when_orphaned, args=(parent,), name="kiln-orphan-watch", daemon=True).start()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await EngineHost(address, freeze_heap=True).serve(stop, on_ready=lambda: ready.send(True))

    asyncio.run(main())
