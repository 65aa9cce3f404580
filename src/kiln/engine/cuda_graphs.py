"""Small tensor functions replayed from CUDA graphs: one capture per input shape, then one launch per call.

Image statistics on a GPU (a photo's quality metrics, a reference image's features and saliency)
are tens to hundreds of tiny kernels; launched one by one from Python, their launch cost is far
more than their GPU time (3–4 ms against well under 1 ms on the H200 host measured in
docs/benchmarks/gpu.md). ``GraphedFunction`` captures such a function once per input shape and
static arguments and replays the graph afterwards.

The function must be capturable: no host synchronisation (``.item()``, ``.cpu()``, boolean
indexing, ``bincount`` without a fixed size) and no tensors made from host data inside it (make
constants on the first, eager call and reuse them). Captures are serialised process-wide on a
private stream (CUDA allows one capture at a time per process); a shape whose capture fails runs
eagerly from then on, and every other shape keeps its graph. On a CPU the function runs eagerly.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
_CAPTURE_LOCK = threading.Lock()
_CONSTANTS: dict[tuple[str, Any, Any], Any] = {}


def device_constant(name: str, values: Any, like: Any) -> Any:
    """A constant tensor with ``like``'s dtype and device, made once (no host copy inside a graph capture)."""
    import numpy as np
    import torch

    key = (name, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


class GraphedFunction:
    """``fn(tensor, *static) -> tensor``; on CUDA tensors replayed from a graph per (shape, dtype, static)."""

    def __init__(self, fn: Callable[..., Any], max_graphs: int = 16, warmup: int = 2) -> None:
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: OrderedDict[tuple[Any, ...], tuple[Any, Any, Any, threading.Lock, Any]] = OrderedDict()
        self.failed: set[tuple[Any, ...]] = set()  # shapes whose capture failed: eager
        self.captures = 0
        self._lock = threading.Lock()

    def __call__(self, x: Any, *static: Any) -> Any:
        """The function's result (a new tensor on ``x``'s device, not shared with later calls)."""
        if x.device.type != "cuda":
            return self.fn(x, *static)
        import torch

        key = (tuple(x.shape), x.dtype, x.device, static)
        entry = self._cached(key)
        if entry is None:
            if key in self.failed:
                return self.fn(x, *static)
            with _CAPTURE_LOCK:  # one capture at a time in the process; a second caller finds it done
                entry = self._cached(key)
                if entry is None:
                    entry = self._capture(key, x, static)
            if entry is None:
                return self.fn(x, *static)
        graph, static_in, static_out, replay_lock, done = entry
        with replay_lock:  # the buffers are shared by every call of this shape, from any thread and stream
            stream = torch.cuda.current_stream(x.device)
            stream.wait_event(done)  # the previous caller's clone has read the output (it may be on another stream)
            static_in.copy_(x)
            graph.replay()
            result = static_out.clone()
            done.record(stream)
            return result

    def _cached(self, key: tuple[Any, ...]) -> tuple[Any, Any, Any, threading.Lock, Any] | None:
        with self._lock:
            entry = self.graphs.get(key)
            if entry is not None:
                self.graphs.move_to_end(key)
            return entry

    def _capture(self, key: tuple[Any, ...], x: Any, static: tuple[Any, ...]) -> tuple[Any, Any, Any, threading.Lock, Any] | None:
        import torch

        static_in = x.detach().clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # eager runs: cuFFT plans, cuDNN choices, the function's constants
                self.fn(static_in, *static)  # an error here is the function's own: it propagates
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads (decoders, engines) keep launching work while this one captures
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                static_out = self.fn(static_in, *static)
        except Exception as exc:  # a capture can fail on ops and drivers not tried; this shape stays eager
            log.warning("CUDA graph capture of %s for %s failed (%s); that shape runs eagerly",
                        getattr(self.fn, "__name__", "a function"), key[0], str(exc)[:200])
            self.failed.add(key)
            return None
        entry = (graph, static_in, static_out, threading.Lock(), torch.cuda.Event())
        with self._lock:
            self.captures += 1
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        return entry
