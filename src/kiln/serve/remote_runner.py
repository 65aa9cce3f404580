"""A worker's stand-in for an engine instance that lives in the engine host (``--shared-engines``).

``RemoteRunner.infer`` is what ``Instance`` threads call on a local runner: it writes the batch
into this runner's shared memory region, sends one frame and blocks until the host answers with
the outputs. Each runner has its own socket and region, so a worker runs as many calls to the
host at once as it has remote runners; the host batches them with the other workers' calls.

The frame carries the batch's deadline (the monotonic clock is the same in every process) and
priority, so the host drops what the worker has already answered with a 504. A link that fails or
times out mid-call is closed, never reused (a late answer would be read as the next call's), and
the call fails with 503; the next call opens a new link.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import DeadlineExceededError, KilnError, UnavailableError
from kiln.serve.batcher import current_batch
from kiln.serve.engine_link import LinkClosedError, Region, layout_of, recv_frame, send_frame, views

if TYPE_CHECKING:
    from kiln.serve.model_config import ModelConfig


def raise_remote(meta: dict[str, Any]) -> None:
    message, hint = f"engine host: {meta.get('error', 'unknown error')}", meta.get("hint")
    kind = meta.get("kind")
    if kind == "unavailable":
        raise UnavailableError(message, hint=hint, retry_after_s=float(meta.get("retry_after_s") or 1.0))
    if kind == "deadline":
        raise DeadlineExceededError(message, hint=hint)
    raise KilnError(message, hint=hint)


def host_stages(reported: Any, round_trip_s: float) -> dict[str, float]:
    """The host's stages of one call (its answer's ``stages``, seconds) as the worker reports them: host_queue,
    host_infer and host_link, the round trip less the host's own time (an older host sends none: empty)."""
    if not isinstance(reported, dict):
        return {}
    try:
        host = float(reported["host"])
        return {"host_queue": float(reported.get("queue", 0.0)), "host_infer": float(reported.get("infer", 0.0)),
                "host_link": max(0.0, round_trip_s - host)}
    except (KeyError, TypeError, ValueError):
        return {}


class _Held:
    """The runner's socket and region, closed by a finalizer if the runner is dropped unclosed."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.region: Region | None = None

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.region is not None:
            self.region.close()
            self.region = None


class RemoteRunner:
    """Calls to the engine host for one model version, over one link at a time."""

    def __init__(self, address: str, name: str, version: str, directory: Path, config: ModelConfig,
                 connect_timeout_s: float = 600.0, reply_margin_s: float = 30.0) -> None:
        self.address = address
        self.name, self.version, self.directory, self.config = name, version, Path(directory).resolve(), config
        self.connect_timeout_s = connect_timeout_s
        # a call's answer may take up to the hang limit (then the watchdog replaces the instance) plus this
        self.reply_timeout_s = config.hang_after_s + reply_margin_s
        self.max_batch_size = 0
        self.last_gather_s = 0.0  # how long the last call took to write its inputs into the region
        # the last call's stages in the host (seconds): host_queue and host_infer (its batch's queue and run there),
        # host_link (the round trip less the host's own time: the two hops on the socket and waking each side)
        self.last_stages: dict[str, float] = {}
        self._lock = threading.Lock()
        self._held = _Held()
        self._region_id = 0
        self._sent_region = False
        self._closed = False
        self._finalizer = weakref.finalize(self, self._held.release)
        self._connect()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the first attach of a model makes the host load it (compile, CUDA graphs): minutes at most
            sock.settimeout(self.connect_timeout_s)
            sock.connect(self.address)
            send_frame(sock, {"op": "attach", "name": self.name, "version": self.version,
                              "directory": str(self.directory), "config": self.config.model_dump(mode="json")})
            reply = recv_frame(sock)
        except (OSError, LinkClosedError) as exc:
            sock.close()
            raise UnavailableError(f"cannot reach the engine host at {self.address}: {exc}",
                                   hint="is `kiln serve --shared-engines` still running?") from exc
        if not reply.meta.get("ok"):
            sock.close()
            raise_remote(reply.meta)
        self.max_batch_size = int(reply.meta["max_batch_size"])
        sock.settimeout(self.reply_timeout_s)
        self._held.sock = sock
        self._sent_region = False  # a new link has not seen the region yet

    def _drop_link(self) -> None:
        if self._held.sock is not None:
            self._held.sock.close()
            self._held.sock = None

    def _region_for(self, size: int) -> Region:
        region = self._held.region
        if region is None or region.size < size:
            previous = region.size if region is not None else 0
            if region is not None:
                region.close()
            region = self._held.region = Region(max(size, 2 * previous))
            self._region_id += 1
            self._sent_region = False
        return region

    def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        return self.infer_parts([inputs])

    def infer_parts(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One call of one or several requests' inputs: each part is written straight into its rows
        of the shared region (no joined copy first); then the call is sent and the answer awaited."""
        entries, size = layout_of({
            name: (first.dtype, (sum(part[name].shape[0] for part in parts), *first.shape[1:]))
            for name, first in parts[0].items()
        })
        deadline, priority = current_batch()
        with self._lock:
            if self._closed:
                raise UnavailableError("this engine link was closed", hint="retry: another instance takes the call")
            if self._held.sock is None:
                self._connect()
            sock = self._held.sock
            assert sock is not None
            region = self._region_for(size)
            start = time.perf_counter()  # the writes only, not waiting for the link or (re)connecting
            for name, target in views(region.map, entries).items():
                offset = 0
                for part in parts:
                    rows = part[name].shape[0]
                    np.copyto(target[offset:offset + rows], part[name], casting="no")
                    offset += rows
            self.last_gather_s = time.perf_counter() - start
            meta: dict[str, Any] = {"op": "infer", "region": self._region_id, "region_size": region.size,
                                    "inputs": entries, "priority": priority}
            if deadline is not None:
                meta["timeout_s"] = round(deadline - time.monotonic(), 6)
            try:
                sent = time.perf_counter()
                send_frame(sock, meta, fds=None if self._sent_region else [region.fd])
                self._sent_region = True
                reply = recv_frame(sock)
                round_trip = time.perf_counter() - sent
            except TimeoutError as exc:
                self._drop_link()
                raise UnavailableError(f"the engine host did not answer within {self.reply_timeout_s:g} s",
                                       hint="retry after a short pause") from exc
            except (OSError, LinkClosedError) as exc:
                self._drop_link()
                raise UnavailableError(f"the link to the engine host failed: {exc}", hint="retry after a short pause") from exc
        if not reply.meta.get("ok"):
            raise_remote(reply.meta)
        self.last_stages = host_stages(reply.meta.get("stages"), round_trip)
        return views(reply.payload, reply.meta["outputs"])

    def close(self) -> None:
        """Closes the link (a call blocked on it fails at once) and the region; safe from any thread."""
        self._closed = True
        sock = self._held.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        with self._lock:
            self._finalizer()
