"""The wire between server workers and the engine host (``kiln serve --workers N --shared-engines``).

One Unix stream socket per remote engine instance, blocking on both ends. A frame is a 12-byte
header (magic, length of the JSON meta, length of the payload), the meta as UTF-8 JSON, then the
payload bytes. Input tensors do not travel in frames: the worker writes them into a shared memory
region (a ``memfd``) whose file descriptor crosses the socket once, with SCM_RIGHTS, on the first
frame that uses it; the meta then names offsets in it. Outputs, which are small (logits,
embeddings, heatmaps), travel as the payload.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.errors import KilnError

_HEADER = struct.Struct("!4sII")
_MAGIC = b"KLN1"
MAX_META_BYTES = 1 << 20
ALIGN = 64  # tensor offsets in a region: cache-line aligned


class LinkClosedError(KilnError):
    """The other end of an engine link went away."""


@dataclass
class Frame:
    meta: dict[str, Any]
    payload: bytearray
    fds: list[int]


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        got = sock.recv_into(view)
        if got == 0:
            raise LinkClosedError("the engine link closed")
        view = view[got:]


def send_frame(sock: socket.socket, meta: dict[str, Any], payload: list[bytes | bytearray | memoryview] | None = None,
               fds: list[int] | None = None) -> None:
    body = json.dumps(meta, separators=(",", ":")).encode()
    parts = payload or []
    size = sum(memoryview(p).nbytes for p in parts)
    head = _HEADER.pack(_MAGIC, len(body), size) + body
    try:
        if fds:
            socket.send_fds(sock, [head], fds)
        else:
            sock.sendall(head)
        for part in parts:
            sock.sendall(part)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise LinkClosedError(f"the engine link closed: {exc}") from exc


def recv_frame(sock: socket.socket) -> Frame:
    """Reads one frame; descriptors sent with it (SCM_RIGHTS) come back open, owned by the caller."""
    try:
        head, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 4)
    except TimeoutError:
        raise
    except OSError as exc:
        raise LinkClosedError(f"the engine link closed: {exc}") from exc
    if not head:
        raise LinkClosedError("the engine link closed")
    buffer = bytearray(_HEADER.size)
    buffer[: len(head)] = head
    try:
        if len(head) < _HEADER.size:
            _recv_exactly(sock, memoryview(buffer)[len(head):])
        magic, meta_size, payload_size = _HEADER.unpack(buffer)
        if magic != _MAGIC or meta_size > MAX_META_BYTES:
            raise LinkClosedError("the engine link sent a malformed frame")
        body = bytearray(meta_size)
        _recv_exactly(sock, memoryview(body))
        payload = bytearray(payload_size)
        _recv_exactly(sock, memoryview(payload))
        meta = json.loads(body)
        if not isinstance(meta, dict):
            raise LinkClosedError("the engine link sent a malformed frame")
    except BaseException as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, ValueError):  # not JSON
            raise LinkClosedError("the engine link sent a malformed frame") from exc
        raise
    return Frame(meta, payload, list(fds))


def layout(arrays: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], int]:
    """Where each array goes in a region or payload: [{name, dtype, shape, offset}], total bytes."""
    return layout_of({name: (array.dtype, array.shape) for name, array in arrays.items()})


def layout_of(specs: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> tuple[list[dict[str, Any]], int]:
    """``layout`` for arrays given by dtype and shape."""
    entries = []
    offset = 0
    for name, (dtype, shape) in specs.items():
        entries.append({"name": name, "dtype": dtype.str, "shape": list(shape), "offset": offset})
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        offset += -(-nbytes // ALIGN) * ALIGN
    return entries, offset


def views(buffer: Any, entries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Arrays over ``buffer`` as ``layout`` placed them (no copies)."""
    out = {}
    for entry in entries:
        dtype = np.dtype(entry["dtype"])
        if dtype.hasobject:
            raise KilnError(f"tensor {entry['name']!r}: object dtypes cannot cross the engine link")
        shape = tuple(int(d) for d in entry["shape"])
        out[entry["name"]] = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=int(entry["offset"]))
    return out


class Region:
    """A shared memory region (anonymous ``memfd``): the worker writes inputs, the host reads them."""

    def __init__(self, size: int) -> None:
        self.size = max(ALIGN, size)
        self.fd = os.memfd_create("kiln-engine-link", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.map = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise

    @classmethod
    def attach(cls, fd: int, size: int) -> mmap.mmap:
        """The host's view of a region it received; the descriptor is closed (the mapping stays)."""
        try:
            return mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)
