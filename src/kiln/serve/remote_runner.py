"""A worker's stand-in for an engine instance that lives in the engine host (``--shared-engines``).

``RemoteRunner.infer`` is what ``Instance`` threads call on a local runner: it writes the batch
into this runner's shared memory region, sends one frame and blocks until the host answers with
the outputs. Each runner has its own socket and region, so a worker runs as many calls to the
host at once as it has remote runners; the host batches them with the other workers' calls.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import DeadlineExceededError, KilnError, UnavailableError
from kiln.serve.engine_link import LinkClosedError, Region, layout, recv_frame, send_frame, views

if TYPE_CHECKING:
    from kiln.serve.model_config import ModelConfig

_ERRORS: dict[str, type[KilnError]] = {"unavailable": UnavailableError, "deadline": DeadlineExceededError}


def raise_remote(meta: dict[str, Any]) -> None:
    kind = _ERRORS.get(str(meta.get("kind")), KilnError)
    raise kind(f"engine host: {meta.get('error', 'unknown error')}", hint=meta.get("hint"))


class RemoteRunner:
    """One connection to the engine host for one model version."""

    def __init__(self, address: str, name: str, version: str, directory: Path, config: ModelConfig,
                 connect_timeout_s: float = 600.0) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._region: Region | None = None
        self._region_id = 0
        self._sent_region = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the first attach of a model makes the host load it (compile, CUDA graphs): minutes at most
            self._sock.settimeout(connect_timeout_s)
            self._sock.connect(address)
            send_frame(self._sock, {"op": "attach", "name": name, "version": version,
                                    "directory": str(Path(directory).resolve()), "config": config.model_dump(mode="json")})
            reply = recv_frame(self._sock)
        except OSError as exc:
            self._sock.close()
            raise KilnError(f"cannot reach the engine host at {address}: {exc}",
                            hint="is `kiln serve --shared-engines` still running?") from exc
        except LinkClosedError:
            self._sock.close()
            raise
        if not reply.meta.get("ok"):
            self._sock.close()
            raise_remote(reply.meta)
        self.max_batch_size = int(reply.meta["max_batch_size"])
        self._sock.settimeout(config.hang_after_s + 30.0)

    def _region_for(self, size: int) -> Region:
        if self._region is None or self._region.size < size:
            if self._region is not None:
                self._region.close()
            self._region = Region(max(size, 2 * (self._region.size if self._region else 0)))
            self._region_id += 1
            self._sent_region = False
        return self._region

    def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        entries, size = layout(inputs)
        with self._lock:
            region = self._region_for(size)
            for entry, target in zip(entries, views(region.map, entries).values(), strict=True):
                np.copyto(target, inputs[entry["name"]], casting="no")
            meta = {"op": "infer", "region": self._region_id, "region_size": region.size, "inputs": entries}
            try:
                send_frame(self._sock, meta, fds=None if self._sent_region else [region.fd])
                self._sent_region = True
                reply = recv_frame(self._sock)
            except TimeoutError as exc:
                raise KilnError(f"the engine host did not answer within {self._sock.gettimeout():g} s") from exc
            except OSError as exc:
                raise KilnError(f"the engine link failed: {exc}") from exc
        if not reply.meta.get("ok"):
            raise_remote(reply.meta)
        return views(reply.payload, reply.meta["outputs"])

    def close(self) -> None:
        with self._lock:
            self._sock.close()
            if self._region is not None:
                self._region.close()
                self._region = None
